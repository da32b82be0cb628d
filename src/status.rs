//! `status`: what an instance is doing, derived from its files alone.
//!
//! Per schedule: the cron, the next fire, the last cycle, the failure streak, whether a cycle
//! holds its lock now and whether it is escalated; then TODO progress, memory use, rows and
//! bad lines of task_timing.tsv, and whether a service runs on the directory.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Problem};
use crate::cycle::{MEMORY_FILE, TIMING_FILE, TODO_FILE};
use crate::lock::LockFile;
use crate::memory::MemoryDoc;
use crate::timing::{Row, Status, TimingFile};
use crate::todo::Todo;

#[derive(Debug, Serialize)]
pub struct Report {
    pub dir: String,
    pub service: Service,
    pub config_problems: Vec<String>,
    pub schedules: Vec<ScheduleStatus>,
    pub todo: TodoStatus,
    pub memory: MemoryStatus,
    pub timing: TimingStatus,
}

#[derive(Debug, Serialize)]
pub struct Service {
    pub running: bool,
    pub pid: Option<String>,
    /// The result of the running service's last reload.
    pub last_reload: Option<crate::state::ReloadResult>,
}

#[derive(Debug, Serialize)]
pub struct ScheduleStatus {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_fire: Option<DateTime<Utc>>,
    pub next_fire_local: Option<String>,
    pub running: Option<String>,
    pub last_cycle: Option<LastCycle>,
    pub failure_streak: u32,
    pub max_failures: u32,
    /// Paused after `max_failures` failed cycles, until its entry changes or `resume`.
    pub escalated: bool,
}

#[derive(Debug, Serialize)]
pub struct LastCycle {
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct TodoStatus {
    pub done: usize,
    pub total: usize,
    pub next_open: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MemoryStatus {
    pub lines: usize,
    pub max_lines: usize,
    pub entries: usize,
}

#[derive(Debug, Serialize)]
pub struct TimingStatus {
    pub rows: usize,
    pub bad_lines: Vec<String>,
}

/// Consecutive failed, timed-out or blocked cycle rows at the end of a schedule's history.
/// `ok` and `escalated` rows end a streak; `skipped` and `interrupted` rows neither count nor end it.
pub fn failure_streak<'a>(cycle_rows: impl DoubleEndedIterator<Item = &'a Row>) -> u32 {
    let mut streak = 0;
    for row in cycle_rows.rev() {
        match row.status {
            Status::Failed | Status::Timeout | Status::Blocked => streak += 1,
            Status::Ok | Status::Escalated => break,
            Status::Skipped | Status::Interrupted => {}
        }
    }
    streak
}

pub fn report(dir: &Path, now: DateTime<Utc>) -> Report {
    let dir = &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (config, problems): (Option<Config>, Vec<Problem>) = match Config::load(dir) {
        Ok(config) => (Some(config), Vec::new()),
        Err(problems) => (None, problems.0),
    };
    let log = TimingFile::new(dir.join(TIMING_FILE)).read();
    let (rows, bad_lines) = match log {
        Ok(log) => (
            log.rows,
            log.bad_lines
                .iter()
                .map(|b| format!("{TIMING_FILE}:{}: {}", b.line, b.reason))
                .collect(),
        ),
        Err(err) => (Vec::new(), vec![format!("{TIMING_FILE}: {err}")]),
    };
    let mut by_schedule: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in rows.iter().filter(|r| r.mode == "cycle") {
        by_schedule
            .entry(row.schedule.as_str())
            .or_default()
            .push(row);
    }
    let schedules = config
        .as_ref()
        .map(|config| {
            config
                .schedules
                .iter()
                .map(|s| {
                    let history = by_schedule
                        .get(s.id.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let next = s.cron.next_after(now, s.timezone);
                    let running = LockFile::schedule(dir, &s.id)
                        .ok()
                        .and_then(|mut l| l.probe());
                    ScheduleStatus {
                        id: s.id.clone(),
                        cron: s.cron.expr().to_string(),
                        timezone: s.timezone.name().to_string(),
                        enabled: s.enabled,
                        next_fire: next,
                        next_fire_local: next.map(|t| {
                            t.with_timezone(&s.timezone)
                                .format("%Y-%m-%d %H:%M:%S %Z")
                                .to_string()
                        }),
                        running,
                        last_cycle: history.last().map(|r| LastCycle {
                            status: r.status.to_string(),
                            started_at: r.started_at,
                            duration_ms: r.duration_ms,
                            note: r.note.clone(),
                        }),
                        failure_streak: failure_streak(history.iter().copied()),
                        max_failures: s.max_failures,
                        escalated: crate::state::escalation(dir, &s.id)
                            .is_some_and(|e| e.fingerprint == s.fingerprint),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let todo = Todo::load(&dir.join(TODO_FILE)).unwrap_or(Todo { items: Vec::new() });
    let (done, total) = todo.progress();
    let memory_text = std::fs::read_to_string(dir.join(MEMORY_FILE)).unwrap_or_default();
    let doc = MemoryDoc::parse(&memory_text);
    let service_pid = LockFile::service(dir).ok().and_then(|mut l| l.probe());
    Report {
        dir: dir.display().to_string(),
        service: Service {
            running: service_pid.is_some(),
            last_reload: service_pid
                .as_ref()
                .and_then(|_| crate::state::read_service(dir))
                .and_then(|s| s.reload),
            pid: service_pid,
        },
        config_problems: problems.iter().map(ToString::to_string).collect(),
        schedules,
        todo: TodoStatus {
            done,
            total,
            next_open: todo
                .open_items()
                .next()
                .map(|i| format!("{}. {} (TODO.md:{})", i.number, i.text, i.line)),
        },
        memory: MemoryStatus {
            lines: doc.line_count(),
            max_lines: config.as_ref().map_or(300, |c| c.memory.max_lines),
            entries: doc.entry_count(),
        },
        timing: TimingStatus {
            rows: rows.len(),
            bad_lines,
        },
    }
}

/// The plain-text form of a report.
pub fn render(report: &Report, now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "instance  {}", report.dir);
    let _ = match &report.service.pid {
        Some(pid) => writeln!(out, "service   running (pid {pid})"),
        None => writeln!(out, "service   not running"),
    };
    if let Some(reload) = &report.service.last_reload {
        let when = reload.at.format("%Y-%m-%d %H:%M:%S UTC");
        if reload.ok {
            let _ = writeln!(out, "reload    ok at {when} ({})", reload.trigger);
        } else {
            let _ = writeln!(
                out,
                "reload    REJECTED at {when} ({}); the last good configuration runs:",
                reload.trigger
            );
            for p in &reload.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
    }
    if !report.config_problems.is_empty() {
        let _ = writeln!(
            out,
            "config    INVALID ({} problems):",
            report.config_problems.len()
        );
        for p in &report.config_problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    let _ = writeln!(out);
    for s in &report.schedules {
        let state = if s.escalated {
            format!(
                "ESCALATED: paused until its entry changes or `resume {}`",
                s.id
            )
        } else if !s.enabled {
            "disabled".to_string()
        } else if let Some(pid) = &s.running {
            format!("running (pid {pid})")
        } else {
            "idle".to_string()
        };
        let _ = writeln!(
            out,
            "{}  [{}]  cron \"{}\" {}",
            s.id, state, s.cron, s.timezone
        );
        if let (Some(next), Some(local)) = (s.next_fire, &s.next_fire_local) {
            let secs = (next - now).num_seconds().max(0);
            let _ = writeln!(
                out,
                "  next      {local} (in {})",
                crate::duration::short(std::time::Duration::from_secs(secs as u64))
            );
        }
        match &s.last_cycle {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  last      {} at {} in {}: {}",
                    c.status,
                    c.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    crate::duration::short(std::time::Duration::from_millis(c.duration_ms)),
                    c.note
                );
            }
            None => {
                let _ = writeln!(out, "  last      never ran");
            }
        }
        let _ = writeln!(
            out,
            "  failures  {} in a row (escalates at {})",
            s.failure_streak, s.max_failures
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "todo      {}/{} done",
        report.todo.done, report.todo.total
    );
    if let Some(next) = &report.todo.next_open {
        let _ = writeln!(out, "  next     {next}");
    }
    let _ = writeln!(
        out,
        "memory    {}/{} lines, {} entries",
        report.memory.lines, report.memory.max_lines, report.memory.entries
    );
    let _ = writeln!(out, "timing    {} rows", report.timing.rows);
    if !report.timing.bad_lines.is_empty() {
        let _ = writeln!(
            out,
            "  {} bad lines (skipped):",
            report.timing.bad_lines.len()
        );
        for b in report.timing.bad_lines.iter().take(10) {
            let _ = writeln!(out, "  {b}");
        }
    }
    out
}
