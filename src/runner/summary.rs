//! The run's one-line summary, the note of its row in task_timing.tsv.
//!
//! Rules: at most [`SUMMARY_MAX_CHARS`] characters on one line. It starts with how the run
//! ended (exit status and the last output line, the signal, the timeout, the stop, or the
//! reason a sink gave for `blocked`), then notes in a fixed order: stray descendants, the
//! sinks' own notes, truncation, a failed log write, an escaped descendant.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::RunStatus;
use super::log::LogSummary;
use super::stop::Ending;

const SUMMARY_MAX_CHARS: usize = 300;
/// Room for the last output line or the blocked reason inside the summary, so the notes
/// after it (truncation, dropped lines) still fit.
const SUMMARY_DETAIL_CHARS: usize = 160;

/// The limits a run was held to.
pub(super) struct Limits {
    pub(super) timeout: Duration,
    pub(super) kill_grace: Duration,
    pub(super) log_cap: u64,
}

/// What the output said, for the summary.
pub(super) struct Said<'a> {
    /// The start of the last non-blank output line.
    pub(super) last_line: Option<&'a str>,
    /// The first sink's reason for `blocked`.
    pub(super) blocked: Option<&'a str>,
    /// The sinks' notes, in sink order.
    pub(super) notes: Vec<String>,
}

/// The summary, and its notes alone (each after `; `), for a caller that words how the run
/// ended itself.
pub(super) fn summary(
    end: &Ending,
    status: RunStatus,
    said: &Said<'_>,
    log: &LogSummary,
    limits: &Limits,
) -> (String, String) {
    let stop_note = || {
        if end.killed_after_grace {
            format!(
                "group killed after {} grace",
                humantime::format_duration(limits.kill_grace)
            )
        } else {
            "group terminated".to_owned()
        }
    };
    let head = match status {
        RunStatus::Ok => "exit 0".to_owned(),
        RunStatus::Failed => {
            let code = end.exit.and_then(|s| s.code());
            let signal = end.exit.and_then(|s| s.signal());
            let mut s = match (&end.wait_error, code, signal) {
                (Some(error), _, _) => format!("could not wait for the child: {error}"),
                (None, Some(code), _) => format!("exit {code}"),
                (None, None, Some(sig)) => format!("killed by {}", signal_name(sig)),
                (None, None, None) => "ended without a status".to_owned(),
            };
            if let Some(line) = said.last_line {
                s.push_str(": ");
                s.push_str(&clip(line, SUMMARY_DETAIL_CHARS));
            }
            s
        }
        RunStatus::Timeout => format!(
            "timed out after {}; {}",
            humantime::format_duration(limits.timeout),
            stop_note()
        ),
        RunStatus::Interrupted => format!("interrupted; {}", stop_note()),
        RunStatus::Blocked => match said.blocked {
            Some(reason) if !reason.is_empty() => {
                format!("blocked: {}", clip(reason, SUMMARY_DETAIL_CHARS))
            }
            _ => "blocked (no reason given)".to_owned(),
        },
    };
    let mut notes = String::new();
    if end.strays {
        notes.push_str("; stray descendants terminated");
    }
    for note in &said.notes {
        notes.push_str("; ");
        notes.push_str(note);
    }
    if log.truncated {
        notes.push_str(&format!("; output truncated at {} bytes", limits.log_cap));
    }
    if let Some(error) = &log.error {
        notes.push_str(&format!("; log write failed: {error}"));
    }
    if end.drain_cut {
        notes.push_str("; output still open after the group was gone (escaped descendant)");
    }
    (
        clip(&format!("{head}{notes}"), SUMMARY_MAX_CHARS),
        clip(&notes, SUMMARY_MAX_CHARS),
    )
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// One line of at most `max` characters: control characters become spaces.
fn clip(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        return flat.to_owned();
    }
    let mut clipped: String = flat.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{fixture, run_ok, spec};
    use tokio_util::sync::CancellationToken;

    #[test]
    fn clip_makes_one_short_line() {
        assert_eq!(clip("a\tb\nc", 300), "a b c");
        let long = "é".repeat(400);
        let clipped = clip(&long, 300);
        assert_eq!(clipped.chars().count(), 300);
        assert!(clipped.ends_with('…'));
    }

    #[tokio::test]
    async fn failure_summary_names_exit_code_and_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &[&fixture("exit-with.sh"), "3"]);
        let log_path = s.log_path.clone();
        let outcome = run_ok(s, CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.summary, "exit 3: error: the build failed");
        let log = std::fs::read_to_string(log_path).unwrap();
        assert!(log.contains("some progress\n") && log.contains("error: the build failed\n"));

        let s = spec(dir.path(), &[&fixture("exit-with.sh"), "signal", "KILL"]);
        let outcome = run_ok(s, CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.exit_code, None);
        assert_eq!(outcome.signal, Some(Signal::SIGKILL as i32));
        assert_eq!(
            outcome.summary,
            "killed by SIGKILL: error: the build failed"
        );
    }
}
