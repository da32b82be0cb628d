//! task_timing.tsv read for a client: the rows that match a filter, and the file's last lines
//! as they are (the MCP `timing_rows` tool and the `loop://task_timing.tsv` resource).
//!
//! Rules: rows come from [`TimingFile::read`], the reader every command uses (shared lock,
//! bad lines skipped and counted); a filter keeps the newest `limit` matching rows, in file
//! order. The tail is read backwards from the end, so a file of a million rows costs what its
//! last lines cost.

use std::io::{Read, Seek, SeekFrom};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::exit::Error;
use crate::instance::{self, Instance};
use crate::timing::{Row, Status, TimingFile};

/// Rows returned when a filter names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// The most rows one call returns.
pub const MAX_LIMIT: usize = 10_000;

/// Which rows to return; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub schedule: Option<String>,
    /// A mode slug, or `cycle` for the cycle rows.
    pub mode: Option<String>,
    pub status: Option<Status>,
    /// Rows that started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// The newest N matching rows (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// One row, its 13 columns by name (SPEC §4).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowView {
    pub scheduled_at: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub priority: String,
    pub schedule: String,
    pub cycle: String,
    pub mode: String,
    pub attempt: u32,
    pub status: String,
    pub exit_code: Option<i32>,
    pub cost_usd: Option<f64>,
    pub note: String,
}

impl From<&Row> for RowView {
    fn from(row: &Row) -> RowView {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        RowView {
            scheduled_at: row.scheduled_at.map(time),
            started_at: time(row.started_at),
            finished_at: time(row.finished_at),
            duration_ms: row.duration_ms,
            priority: row.priority.to_string(),
            schedule: row.schedule.clone(),
            cycle: row.cycle.clone(),
            mode: row.mode.clone(),
            attempt: row.attempt,
            status: row.status.to_string(),
            exit_code: row.exit_code,
            cost_usd: row.cost_usd,
            note: row.note.clone(),
        }
    }
}

/// What a filter found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rows {
    pub rows: Vec<RowView>,
    /// Rows that matched; more than `rows.len()` when the limit cut the oldest.
    pub matched: usize,
    /// Rows in the file.
    pub total: usize,
    /// Lines the reader skipped (torn, foreign), as `task_timing.tsv:LINE: reason`.
    pub bad_lines: Vec<String>,
}

pub fn rows(inst: &Instance, filter: &RowFilter) -> Result<Rows, Error> {
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::Invalid(format!(
            "limit {limit} is out of range (expected 1 to {MAX_LIMIT})"
        )));
    }
    let log = TimingFile::new(inst.timing())
        .read()
        .map_err(Error::failed)?;
    let matching: Vec<&Row> = log
        .rows
        .iter()
        .filter(|r| filter.schedule.as_ref().is_none_or(|s| &r.schedule == s))
        .filter(|r| filter.mode.as_ref().is_none_or(|m| &r.mode == m))
        .filter(|r| filter.status.is_none_or(|s| r.status == s))
        .filter(|r| filter.since.is_none_or(|t| r.started_at >= t))
        .collect();
    let skip = matching.len().saturating_sub(limit);
    Ok(Rows {
        rows: matching[skip..].iter().map(|r| RowView::from(*r)).collect(),
        matched: matching.len(),
        total: log.rows.len(),
        bad_lines: log
            .bad_lines
            .iter()
            .map(|b| format!("{}:{}: {}", instance::TIMING, b.line, b.reason))
            .collect(),
    })
}

/// The header line and the last `rows` complete lines of the file, as written (a torn last
/// line is left out). An absent file is empty text.
pub fn tail(inst: &Instance, rows: usize) -> Result<String, Error> {
    let path = inst.timing();
    let cannot =
        |err: std::io::Error| Error::Failed(format!("cannot read {}: {err}", path.display()));
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(err) => return Err(cannot(err)),
    };
    let len = file.metadata().map_err(cannot)?.len();
    let mut header = Vec::new();
    (&mut file)
        .take(4_096)
        .read_to_end(&mut header)
        .map_err(cannot)?;
    let Some(header_end) = memchr::memchr(b'\n', &header).map(|i| i + 1) else {
        return Ok(String::new());
    };
    header.truncate(header_end);
    // Read backwards in growing chunks until a chunk holds more than `rows` complete lines
    // or reaches the header. No crate reads a file's last lines
    // without reading the whole file, which is what this avoids.
    let mut chunk = 64 * 1_024u64;
    let body = loop {
        let start = len.saturating_sub(chunk).max(header_end as u64);
        file.seek(SeekFrom::Start(start)).map_err(cannot)?;
        let mut bytes = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut bytes).map_err(cannot)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        let newlines = memchr::memchr_iter(b'\n', &bytes).count();
        // Below the header, the chunk's first line may be cut: it is only used when more
        // lines than wanted were read, and then it is among those dropped.
        if newlines > rows || start == header_end as u64 {
            let drop = newlines.saturating_sub(rows);
            let from = match drop {
                0 => 0,
                n => memchr::memchr_iter(b'\n', &bytes)
                    .nth(n - 1)
                    .map_or(bytes.len(), |i| i + 1),
            };
            break bytes.split_off(from);
        }
        chunk *= 4;
    };
    header.extend_from_slice(&body);
    Ok(String::from_utf8_lossy(&header).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance_with_rows(n: usize) -> (tempfile::TempDir, Instance) {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let file = TimingFile::new(inst.timing());
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let rows: Vec<Row> = (0..n)
            .map(|i| Row {
                scheduled_at: None,
                started_at: t + chrono::TimeDelta::seconds(i as i64),
                finished_at: t + chrono::TimeDelta::seconds(i as i64 + 1),
                duration_ms: 1_000,
                priority: crate::timing::Priority::Schedule,
                schedule: if i % 2 == 0 { "a" } else { "b" }.into(),
                cycle: format!("c{i}"),
                mode: if i % 3 == 0 { "cycle" } else { "m" }.into(),
                attempt: 1,
                status: if i % 5 == 0 {
                    Status::Failed
                } else {
                    Status::Ok
                },
                exit_code: Some(0),
                cost_usd: None,
                note: format!("row {i}"),
            })
            .collect();
        file.ensure_header().unwrap();
        file.append_all(&rows).unwrap();
        (dir, inst)
    }

    #[test]
    fn filters_keep_the_newest_matching_rows_in_file_order() {
        let (_dir, inst) = instance_with_rows(30);
        let all = rows(&inst, &RowFilter::default()).unwrap();
        assert_eq!((all.rows.len(), all.matched, all.total), (30, 30, 30));
        let filter = RowFilter {
            schedule: Some("a".into()),
            status: Some(Status::Failed),
            limit: Some(2),
            ..RowFilter::default()
        };
        let found = rows(&inst, &filter).unwrap();
        // Failed rows of schedule a: i = 0, 10, 20 (even and a multiple of 5).
        assert_eq!(found.matched, 3);
        let notes: Vec<&str> = found.rows.iter().map(|r| r.note.as_str()).collect();
        assert_eq!(notes, ["row 10", "row 20"]);
        let since = RowFilter {
            mode: Some("cycle".into()),
            since: Some(
                DateTime::parse_from_rfc3339("2026-01-01T00:00:20Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            ..RowFilter::default()
        };
        let notes: Vec<String> = rows(&inst, &since)
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.note)
            .collect();
        assert_eq!(notes, ["row 21", "row 24", "row 27"]);
        let err = rows(
            &inst,
            &RowFilter {
                limit: Some(0),
                ..RowFilter::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected 1 to"), "{err}");
    }

    #[test]
    fn the_tail_is_the_header_and_the_last_complete_lines() {
        for n in [0, 1, 5, 199, 200, 201, 3_000] {
            let (_dir, inst) = instance_with_rows(n);
            let text = std::fs::read_to_string(inst.timing()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let expected: Vec<&str> = std::iter::once(lines[0])
                .chain(lines[1..].iter().skip(n.saturating_sub(200)).copied())
                .collect();
            let tail = tail(&inst, 200).unwrap();
            assert_eq!(tail.lines().collect::<Vec<_>>(), expected, "n = {n}");
            assert!(tail.ends_with('\n'));
        }
        // A torn last line is left out.
        let (_dir, inst) = instance_with_rows(3);
        let mut text = std::fs::read_to_string(inst.timing()).unwrap();
        text.push_str("2026-01-01T00:00:00.000Z\ttorn");
        std::fs::write(inst.timing(), &text).unwrap();
        let tail = tail(&inst, 2).unwrap();
        assert_eq!(tail.lines().count(), 3);
        assert!(!tail.contains("torn"));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(tail_of(empty.path()), "");
    }

    fn tail_of(dir: &std::path::Path) -> String {
        tail(&Instance::new(dir), 200).unwrap()
    }
}
