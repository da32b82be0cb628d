//! A run's log: stdout and stderr interleaved as they arrive, capped at `log_cap` bytes, then
//! one marker with the exact count of what was discarded (SPEC §3).
//!
//! Rules: a full log never slows or blocks the child (the output is still read, and still
//! goes to the line sinks); a failing write (full disk) never fails the run, it is noted in
//! the summary and the rest of the output is discarded.

use std::io;
use std::path::Path;

/// The log file while the child runs.
///
/// Written with blocking calls on the async task, not through `tokio::fs`: a write lands in
/// the page cache in microseconds, while `tokio::fs` hands every chunk to a blocking-pool
/// thread and back (a thread start and two wake-ups per mode; figure 5 in BENCHMARKS.md).
/// The cap bounds what one run can write.
pub(super) struct CappedLog {
    file: Option<std::fs::File>,
    cap: u64,
    kept: u64,
    discarded: u64,
    error: Option<io::Error>,
}

/// The log once the run is over.
pub(super) struct LogSummary {
    /// Size of the file, marker included.
    pub(super) bytes: u64,
    /// Bytes of output, kept or not.
    pub(super) output_bytes: u64,
    pub(super) truncated: bool,
    pub(super) error: Option<io::Error>,
}

impl CappedLog {
    /// Creates (truncates) the log, with its parent directories.
    pub(super) fn create(path: &Path, cap: u64) -> io::Result<CappedLog> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(CappedLog {
            file: Some(file),
            cap,
            kept: 0,
            discarded: 0,
            error: None,
        })
    }

    pub(super) fn write(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.kept);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
        self.discarded += (chunk.len() - keep) as u64;
        if keep == 0 {
            return;
        }
        self.kept += keep as u64;
        if let Some(file) = &mut self.file
            && let Err(error) = std::io::Write::write_all(file, &chunk[..keep])
        {
            // A full disk must not fail the run; keep reading, stop writing.
            tracing::warn!(%error, "cannot write the run log; output is discarded from here");
            self.file = None;
            self.error = Some(error);
        }
    }

    pub(super) fn finish(mut self) -> LogSummary {
        let mut bytes = self.kept;
        if let Some(mut file) = self.file.take() {
            let mut result = Ok(());
            if self.discarded > 0 {
                let marker = truncation_marker(self.cap, self.discarded);
                result = std::io::Write::write_all(&mut file, marker.as_bytes());
                bytes += marker.len() as u64;
            }
            if let Err(error) = result {
                tracing::warn!(%error, "cannot finish the run log");
                self.error.get_or_insert(error);
            }
        }
        LogSummary {
            bytes,
            output_bytes: self.kept + self.discarded,
            truncated: self.discarded > 0,
            error: self.error,
        }
    }
}

/// The line appended to a log whose output went over the cap.
pub fn truncation_marker(cap: u64, discarded: u64) -> String {
    format!(
        "\n[loop-orchestrator: output truncated at {cap} bytes; {discarded} more bytes discarded]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{fixture, run_ok, spec};
    use crate::runner::{LOG_CAP, RunStatus};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn flood_is_capped_with_one_marker_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &[&fixture("flood.sh"), "50"]);
        let log_path = s.log_path.clone();
        let outcome = run_ok(s, CancellationToken::new()).await;

        let total = 50 * 1024 * 1024 + "flood starting\n".len() as u64;
        let marker = truncation_marker(LOG_CAP, total - LOG_CAP);
        assert!(marker.contains("output truncated at 8388608 bytes"));
        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert!(outcome.truncated);
        assert_eq!(outcome.output_bytes, total);
        let size = std::fs::metadata(&log_path).unwrap().len();
        assert!(size <= LOG_CAP + marker.len() as u64, "log is {size} bytes");
        assert_eq!(outcome.log_bytes, size);
        let log = std::fs::read(&log_path).unwrap();
        assert!(
            log.ends_with(marker.as_bytes()),
            "marker missing at the end"
        );
        let text = String::from_utf8_lossy(&log);
        assert_eq!(text.matches("[loop-orchestrator:").count(), 1);
        assert!(
            outcome
                .summary
                .contains("output truncated at 8388608 bytes")
        );
    }

    #[test]
    fn the_log_keeps_exactly_the_cap_then_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/run.log");
        let mut log = CappedLog::create(&path, 10).unwrap();
        log.write(b"hello ");
        log.write(b"world");
        log.write(b"!!");
        let summary = log.finish();
        let marker = truncation_marker(10, 3);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [b"hello worl".as_slice(), marker.as_bytes()].concat()
        );
        assert!(summary.truncated);
        assert_eq!(summary.output_bytes, 13);
        assert_eq!(summary.bytes, 10 + marker.len() as u64);

        // Exactly the cap is not over it: no marker.
        let path = dir.path().join("full.log");
        let mut log = CappedLog::create(&path, 10).unwrap();
        log.write(b"0123456789");
        let summary = log.finish();
        assert!(!summary.truncated);
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
        assert_eq!(summary.bytes, 10);
    }
}
