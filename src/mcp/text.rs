//! What the tools return beside the CLI's own renderings ([`crate::render`]): the text
//! and wire shapes of results the CLI does not print, and the parsing of the arguments that
//! need more than serde (a status word, a `since`).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rmcp::model::{CallToolResult, ContentBlock};

use super::args::TimingRowsArgs;
use crate::app;
use crate::app::run_cycle::{Outcome, Progress, ScheduleRun};
use crate::duration::short;
use crate::exit::Error;
use crate::timing::Status;
use crate::todo::Todo;

pub fn schedules(list: &[app::schedules::ScheduleInfo]) -> String {
    let mut out = String::new();
    for s in list {
        let _ = writeln!(
            out,
            "{}{}  \"{}\" {}  modes: {}",
            s.id,
            if s.enabled { "" } else { " (disabled)" },
            s.cron,
            s.timezone,
            s.modes.join(" → ")
        );
        let _ = writeln!(out, "  task: {}", s.task);
    }
    if list.is_empty() {
        out.push_str("no schedules\n");
    }
    out
}

/// One mode attempt that ended, as a `run_cycle` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeDone {
    pub schedule: String,
    pub mode: String,
    pub attempt: u32,
    pub status: String,
    pub duration_ms: u64,
    pub note: String,
}

impl ModeDone {
    /// The mode that just finished, if `progress` says one did.
    pub fn of(progress: &Progress<'_>) -> Option<ModeDone> {
        match progress {
            Progress::ModeFinished { schedule, report } => Some(ModeDone {
                schedule: schedule.to_string(),
                mode: report.mode.clone(),
                attempt: report.attempt,
                status: report.status.to_string(),
                duration_ms: report.duration.as_millis() as u64,
                note: report.note.clone(),
            }),
            _ => None,
        }
    }

    /// The progress message: `main-loop/validation ok in 1.2s: 42 tests passed`.
    pub fn line(&self) -> String {
        let attempt = if self.attempt > 1 {
            format!(" (attempt {})", self.attempt)
        } else {
            String::new()
        };
        format!(
            "{}/{} {} in {}{attempt}: {}",
            self.schedule,
            self.mode,
            self.status,
            short(std::time::Duration::from_millis(self.duration_ms)),
            self.note
        )
    }
}

/// A `run_cycle`'s result: a turn per schedule with its modes. A busy schedule makes the
/// result a tool error naming the pid that holds it; failed modes do not (the cycle ran and
/// says how it went, as `run-cycle` prints it and exits 1).
pub fn run_result(outcome: &Outcome, modes: Vec<ModeDone>) -> CallToolResult {
    let mut text = String::new();
    let mut runs = Vec::new();
    let mut busy = false;
    for (schedule, run) in &outcome.runs {
        let own: Vec<&ModeDone> = modes.iter().filter(|m| &m.schedule == schedule).collect();
        let value = match run {
            ScheduleRun::Ran(cycle) => {
                let _ = writeln!(
                    text,
                    "{schedule}: cycle {} {} in {} ({})",
                    cycle.cycle,
                    cycle.status,
                    short(cycle.duration),
                    cycle.note
                );
                for m in &own {
                    let _ = writeln!(text, "  {}", m.line());
                }
                serde_json::json!({
                    "schedule": schedule,
                    "ran": true,
                    "cycle": cycle.cycle,
                    "status": cycle.status.as_str(),
                    "duration_ms": cycle.duration.as_millis() as u64,
                    "note": cycle.note,
                    "modes": own,
                })
            }
            ScheduleRun::Busy { pid } => {
                busy = true;
                let _ = writeln!(
                    text,
                    "{schedule}: a cycle of this schedule is already running (pid {pid})"
                );
                serde_json::json!({ "schedule": schedule, "ran": false, "busy": true, "pid": pid })
            }
            ScheduleRun::Held { note, until } => {
                let _ = writeln!(text, "{schedule}: skipped: {note}");
                serde_json::json!({
                    "schedule": schedule,
                    "ran": false,
                    "held": true,
                    "note": note,
                    "until": until,
                })
            }
            ScheduleRun::Failed(why) => {
                let _ = writeln!(
                    text,
                    "{schedule}: the cycle's rows could not be written: {why}"
                );
                serde_json::json!({ "schedule": schedule, "ran": false, "error": why })
            }
        };
        runs.push(value);
    }
    if outcome.cancelled {
        text.push_str("cancelled: the running mode was stopped, its rows say `interrupted`\n");
    }
    let code = outcome.exit_code();
    let mut result = if busy {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(serde_json::json!({
        "runs": runs,
        "cancelled": outcome.cancelled,
        "exit_code": code.0,
    }));
    result
}

/// The filter a `timing_rows` call asks for.
pub fn row_filter(
    args: TimingRowsArgs,
    now: DateTime<Utc>,
) -> Result<app::timing::RowFilter, Error> {
    let status = args
        .status
        .map(|s| s.parse::<Status>())
        .transpose()
        .map_err(|err| Error::Invalid(err.to_string()))?;
    let since = args.since.map(|s| parse_since(&s, now)).transpose()?;
    Ok(app::timing::RowFilter {
        schedule: args.schedule,
        mode: args.mode,
        status,
        since,
        limit: args.limit.map(|n| n as usize),
    })
}

/// `since`, as `report --since` reads it: a duration back from `now` (`90m`, `2h`, `7d`), a
/// date (UTC midnight) or an RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    since(text).map(|s| s.resolve(now))
}

/// A `since` argument as the report takes it.
pub fn since(text: &str) -> Result<crate::report::Since, Error> {
    text.parse().map_err(|_| {
        Error::Invalid(format!(
            "since {text:?}: expected {}",
            crate::report::SINCE_FORMS
        ))
    })
}

pub fn rows(rows: &app::timing::Rows) -> String {
    let mut out = String::new();
    for r in &rows.rows {
        let _ = writeln!(
            out,
            "{}  {:<14} {:<15} {:<11} {:>8}  {}",
            r.started_at,
            r.schedule,
            r.mode,
            r.status,
            short(std::time::Duration::from_millis(r.duration_ms)),
            r.note
        );
    }
    let _ = writeln!(
        out,
        "{} of {} matching rows ({} in the file)",
        rows.rows.len(),
        rows.matched,
        rows.total
    );
    for bad in rows.bad_lines.iter().take(10) {
        let _ = writeln!(out, "skipped {bad}");
    }
    out
}

/// TODO.md's items as the wire carries them.
pub fn todo(todo: &Todo) -> serde_json::Value {
    let (done, total) = todo.progress();
    let items: Vec<serde_json::Value> = todo
        .items
        .iter()
        .map(|i| {
            serde_json::json!({
                "number": i.number,
                "done": i.done,
                "text": i.text,
                "headings": i.headings,
                "line": i.line,
            })
        })
        .collect();
    serde_json::json!({ "items": items, "done": done, "total": total })
}

pub fn entries(entries: &app::memory_section::SectionEntries) -> String {
    let mut out = format!("## {}\n", entries.section);
    for e in &entries.entries {
        let _ = writeln!(out, "- {}  (line {})", e.text, e.line);
    }
    let _ = write!(out, "{} entries", entries.entries.len());
    out
}

pub fn enabled(edited: &app::enable::Enabled) -> String {
    let word = if edited.enabled {
        "enabled"
    } else {
        "disabled"
    };
    match (&edited.changed, &edited.service_pid) {
        (false, _) => format!(
            "{}: already {word}; schedules.json unchanged",
            edited.schedule
        ),
        (true, Some(pid)) => format!(
            "{}: {word}; the service (pid {pid}) reloads schedules.json",
            edited.schedule
        ),
        (true, None) => format!(
            "{}: {word} in schedules.json; no service runs on this directory",
            edited.schedule
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).unwrap().to_rfc3339();
        assert_eq!(at("2h"), "2026-11-21T10:00:00+00:00");
        assert_eq!(at("7d"), "2026-11-14T12:00:00+00:00");
        assert_eq!(at("2026-11-20"), "2026-11-20T00:00:00+00:00");
        assert_eq!(at("2026-11-21T11:30:00+01:00"), "2026-11-21T10:30:00+00:00");
        let err = parse_since("yesterday", now).unwrap_err();
        assert!(err.to_string().contains("expected a duration"), "{err}");
        // So far back that it is before any row: every row is after it.
        assert!(parse_since("99999999999d", now).unwrap() < now);
    }
}
