//! `status`: what an instance is doing, derived from its files alone (the CLI renders it).
//!
//! Per schedule: the cron, the next fire, the last cycle, the failure streak, whether a cycle
//! holds its lock now and whether it is escalated, today's cost against its budget and any
//! rate-limit or budget pause with its end; then the instance's cost and budget, TODO
//! progress, memory use, rows and bad lines of task_timing.tsv, and whether a service runs on
//! the directory (in a cluster, with its link to the database). Costs and pauses follow the
//! rules of [`crate::limits`], from the same rows and pause files the service and
//! `run-cycle` read.
//!
//! `status --cluster` ([`cluster`]) asks the cluster's database instead: its nodes, what
//! runs where, and per schedule the node of its last cycle (SPEC §11).

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
    /// The running service's link to its cluster's database (a cluster node only).
    pub cluster: Option<crate::state::ClusterLink>,
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
    let service_state = service_pid
        .as_ref()
        .and_then(|_| crate::state::read_service(inst));
    Report {
        dir: inst.root().display().to_string(),
        service: Service {
            running: service_pid.is_some(),
            last_reload: service_state.as_ref().and_then(|s| s.reload.clone()),
            cluster: service_state.and_then(|s| s.cluster),
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

/// `status --cluster`: what the cluster's database says (SPEC §11).
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// The database, its password never shown.
    pub url: String,
    /// This instance's node name.
    pub node: String,
    /// The database's clock, which leases and heartbeats are measured on.
    pub db_now: DateTime<Utc>,
    pub nodes: Vec<ClusterNode>,
    /// The schedules hash of more than half the live nodes, if any.
    pub majority_hash: Option<String>,
    pub schedules: Vec<ClusterSchedule>,
}

#[derive(Debug, Serialize)]
pub struct ClusterNode {
    pub name: String,
    pub instance_id: String,
    pub version: String,
    pub schedules_hash: String,
    /// Live, and its schedules hash is not the live majority's.
    pub hash_differs: bool,
    pub started_at: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
    pub heartbeat_age_ms: u64,
    pub running_cycles: u32,
    pub stopped_at: Option<DateTime<Utc>>,
    pub live: bool,
}

#[derive(Debug, Serialize)]
pub struct ClusterSchedule {
    pub id: String,
    /// Whether this instance's schedules.json has it.
    pub configured: bool,
    /// The latest claim of the schedule: the node of its last cycle.
    pub last: Option<ClusterClaim>,
    /// Claims running now (the lease still live, or `expired` waiting for a survivor).
    pub running: Vec<ClusterClaim>,
    pub escalated: Option<ClusterEscalation>,
    pub paused_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct ClusterClaim {
    pub scheduled_at: DateTime<Utc>,
    pub attempt: u32,
    pub node: String,
    /// `running`, `done` or `interrupted`.
    pub state: String,
    /// The cycle's status once it ended.
    pub status: Option<String>,
    /// A running claim whose lease ran out, not yet taken over.
    pub expired: bool,
}

#[derive(Debug, Serialize)]
pub struct ClusterEscalation {
    pub node: String,
    pub failures: u32,
    pub at: DateTime<Utc>,
    /// Whether it applies to this instance's entry (an escalation of another entry does not).
    pub applies: bool,
}

/// Reads the cluster's state from its database. Fails when schedules.json has no `cluster`
/// section or the database does not answer.
pub fn cluster(inst: &Instance) -> Result<ClusterReport, crate::exit::Error> {
    use crate::exit::Error;
    let config = Config::load(inst.root())?;
    let section = config.cluster.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "status --cluster: {} has no \"cluster\" section",
            instance::SCHEDULES
        ))
    })?;
    let (url, node) = section
        .resolve(|key| std::env::var(key).ok())
        .map_err(|err| Error::Invalid(format!("status --cluster: {err}")))?;
    let lease = section.lease.0;
    let runtime = crate::service::single_thread_runtime().map_err(Error::failed)?;
    let status = runtime
        .block_on(async {
            let db = crate::cluster::Db::connect(&url, lease).await?;
            tokio::time::timeout(lease, db.status())
                .await
                .unwrap_or(Err(crate::cluster::DbError::Timeout(lease)))
        })
        .map_err(|err| Error::Failed(format!("status --cluster: {err}")))?;
    let mut ids: Vec<String> = config.schedules.iter().map(|s| s.id.clone()).collect();
    for id in status
        .last_cycles
        .iter()
        .map(|c| &c.key.schedule)
        .chain(status.escalations.iter().map(|e| &e.schedule))
    {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let schedules = ids
        .into_iter()
        .map(|id| {
            let entry = config.schedule(&id);
            ClusterSchedule {
                configured: entry.is_some(),
                last: status
                    .last_cycles
                    .iter()
                    .find(|c| c.key.schedule == id)
                    .map(|c| ClusterClaim {
                        scheduled_at: c.key.scheduled_at,
                        attempt: c.key.attempt,
                        node: c.node.clone(),
                        state: c.state.clone(),
                        status: c.status.clone(),
                        expired: false,
                    }),
                running: status
                    .running
                    .iter()
                    .filter(|c| c.key.schedule == id)
                    .map(|c| ClusterClaim {
                        scheduled_at: c.key.scheduled_at,
                        attempt: c.key.attempt,
                        node: c.node.clone(),
                        state: "running".into(),
                        status: None,
                        expired: c.expired,
                    })
                    .collect(),
                escalated: status
                    .escalations
                    .iter()
                    .find(|e| e.schedule == id)
                    .map(|e| ClusterEscalation {
                        node: e.node.clone(),
                        failures: e.failures,
                        at: e.escalated_at,
                        applies: entry.is_some_and(|s| s.fingerprint == e.fingerprint),
                    }),
                paused_until: status
                    .pauses
                    .iter()
                    .find(|p| p.schedule == id && p.until > status.db_now)
                    .map(|p| p.until),
                id,
            }
        })
        .collect();
    Ok(ClusterReport {
        url: url.redacted(),
        node,
        db_now: status.db_now,
        nodes: status
            .nodes
            .into_iter()
            .map(|n| ClusterNode {
                name: n.name,
                instance_id: n.instance_id,
                version: n.version,
                schedules_hash: n.schedules_hash,
                hash_differs: n.hash_differs,
                started_at: n.started_at,
                heartbeat: n.heartbeat,
                heartbeat_age_ms: n.heartbeat_age.as_millis() as u64,
                running_cycles: n.running_cycles,
                stopped_at: n.stopped_at,
                live: n.live,
            })
            .collect(),
        majority_hash: status.majority_hash,
        schedules,
    })
}
