//! `status`: what an instance is doing, derived from its files alone (the CLI renders it).
//!
//! Per schedule: the cron, the next fire, the last cycle, the failure streak, whether a cycle
//! holds its lock now and whether it is escalated, today's cost against its budget and any
//! rate-limit or budget pause with its end; then the instance's cost and budget, TODO
//! progress, memory use, rows and bad lines of task_timing.tsv, and whether a service runs on
//! the directory. Costs and pauses follow the rules of [`crate::limits`], from the same rows
//! and pause files the service and `run-cycle` read.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Problem};
use crate::instance::{self, Instance};
use crate::limits::{Hold, InstanceBudget, Ledger};
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
    /// The whole instance's cost today, against `max_cost_usd_per_day` at the top of
    /// schedules.json (`None` when it does not validate).
    pub budget: Option<Spending>,
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
    /// Today's cost in the schedule's time zone, against its budget.
    pub spending: Spending,
    /// Why its fires are skipped now (a rate-limit pause, a budget spent), until when.
    pub hold: Option<HoldStatus>,
}

/// A day's cost against a budget (SPEC §8).
#[derive(Debug, Serialize)]
pub struct Spending {
    pub cost_today_usd: f64,
    pub max_cost_usd_per_day: Option<f64>,
    /// The zone whose day it is.
    pub timezone: String,
    pub day_ends_at: DateTime<Utc>,
}

impl Spending {
    fn of(ledger: &Ledger) -> Spending {
        Spending {
            cost_today_usd: ledger.usd,
            max_cost_usd_per_day: ledger.max_usd_per_day,
            timezone: ledger.zone.name().to_string(),
            day_ends_at: ledger.day_end,
        }
    }
}

/// A pause of a schedule's fires.
#[derive(Debug, Serialize)]
pub struct HoldStatus {
    /// `rate_limited` or `budget_spent`.
    pub reason: &'static str,
    pub until: DateTime<Utc>,
    /// The note its skipped rows get.
    pub note: String,
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
    let recent = crate::limits::recent_costs(&rows, now);
    let instance = config.as_ref().map(|config| {
        let budget = InstanceBudget::of(config);
        let mut ledger = Ledger::new(budget.max_usd_per_day, budget.zone, now);
        ledger.count_rows(recent.values().flatten().copied(), None);
        ledger
    });
    let schedules = config
        .as_ref()
        .zip(instance.as_ref())
        .map(|(config, instance)| {
            config
                .schedules
                .iter()
                .map(|s| {
                    let mut spent = Ledger::new(s.max_cost_usd_per_day, s.timezone.clone(), now);
                    spent.count_rows(
                        recent.get(s.id.as_str()).into_iter().flatten().copied(),
                        Some(&s.id),
                    );
                    let paused = crate::state::pause_of(inst, &s.id).map(|p| p.until);
                    let hold =
                        crate::limits::hold(now, paused, &spent, instance).map(|h| HoldStatus {
                            reason: match h {
                                Hold::RateLimited { .. } => "rate_limited",
                                Hold::BudgetSpent { .. } => "budget_spent",
                            },
                            until: h.until(),
                            note: h.note(),
                        });
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
                        spending: Spending::of(&spent),
                        hold,
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
        budget: instance.as_ref().map(Spending::of),
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
