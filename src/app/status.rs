//! `status`: what an instance is doing, derived from its files alone (the CLI renders it).
//!
//! Per schedule: the cron, the next fire, the last cycle, the failure streak, whether a cycle
//! holds its lock now and whether it is escalated; then TODO progress, memory use, rows and
//! bad lines of task_timing.tsv, and whether a service runs on the directory.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Problem};
use crate::instance::{self, Instance};
use crate::lock::LockFile;
use crate::memory::MemoryDoc;
use crate::timing::{Row, TimingFile, failure_streak};
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

/// What the instance is doing now, from its files alone. Never fails: what cannot be read is
/// said in the report.
pub fn status(inst: &Instance, now: DateTime<Utc>) -> Report {
    let inst = &inst.absolute();
    let (config, problems): (Option<Config>, Vec<Problem>) = match Config::load(inst.root()) {
        Ok(config) => (Some(config), Vec::new()),
        Err(problems) => (None, problems.0),
    };
    const TIMING_FILE: &str = instance::TIMING;
    let log = TimingFile::new(inst.timing()).read();
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
                    let next = s.cron.next_after(now, &s.timezone);
                    let running = LockFile::schedule(inst, &s.id).ok().and_then(|l| l.probe());
                    ScheduleStatus {
                        id: s.id.clone(),
                        cron: s.cron.expr().to_string(),
                        timezone: s.timezone.name().to_string(),
                        enabled: s.enabled,
                        next_fire: next,
                        next_fire_local: next.map(|t| s.timezone.format(t, "%Y-%m-%d %H:%M:%S %Z")),
                        running,
                        last_cycle: history.last().map(|r| LastCycle {
                            status: r.status.to_string(),
                            started_at: r.started_at,
                            duration_ms: r.duration_ms,
                            note: r.note.clone(),
                        }),
                        failure_streak: failure_streak(history.iter().copied()),
                        max_failures: s.max_failures,
                        escalated: crate::state::escalation(inst, &s.id)
                            .is_some_and(|e| e.fingerprint == s.fingerprint),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let todo = Todo::load(&inst.todo()).unwrap_or(Todo { items: Vec::new() });
    let (done, total) = todo.progress();
    let memory_text = std::fs::read_to_string(inst.memory()).unwrap_or_default();
    let doc = MemoryDoc::parse(&memory_text);
    let service_pid = LockFile::service(inst).ok().and_then(|l| l.probe());
    Report {
        dir: inst.root().display().to_string(),
        service: Service {
            running: service_pid.is_some(),
            last_reload: service_pid
                .as_ref()
                .and_then(|_| crate::state::read_service(inst))
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
