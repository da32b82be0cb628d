//! `run-cycle`: one cycle now, of one schedule or of every enabled one, or of a TODO item.
//!
//! Rules (SPEC §4, §7): schedules run one after the other in file order, each under its
//! schedule lock (the one `serve` takes), so a busy schedule is reported and the others still
//! run. A todo run (`--todo N`) is priority `todo`, capped at [`crate::cycle::TODO_CAP`], and
//! gives way to the schedule fires of a running service: it is stopped [`PREEMPT_LEAD`] before
//! the next fire of any enabled schedule, looking again every [`PREEMPT_RECHECK`] for a service
//! started since or an edit of schedules.json. Leftover process groups of a supervisor that
//! died are reaped first. The caller owns cancellation (signals for the CLI, a client's
//! cancellation for MCP): a cancelled run stops its running mode, rows `interrupted`.
//! A schedule paused by a rate limit or over its budget (SPEC §8, [`crate::limits`]) is not
//! run: one `skipped` cycle row says why and until when, unless the request ignores limits.

use std::path::Path;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, CycleEvent, CycleOutcome, CycleSpec, ModeReport};
use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::leftover::Reaped;
use crate::lock::{LockError, LockFile};
use crate::mode::{OnFailure, PromptKind};
use crate::schedule::{Overlap, Schedule};
use crate::timing::{Priority, Status};
use crate::todo::{Todo, TodoItem};

/// How long before a schedule fire a todo run is stopped.
pub const PREEMPT_LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// How often a todo run looks again for a service and at schedules.json.
pub const PREEMPT_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only this schedule (default: every enabled schedule; with `todo`, the first).
    pub schedule: Option<String>,
    /// TODO.md item N through the schedule's modes, as priority `todo`.
    pub todo: Option<usize>,
    /// Run even when the schedule is paused by a rate limit or over its budget
    /// (`--ignore-limits`); modes still see what is left of the budget.
    pub ignore_limits: bool,
}

/// What happens, as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A process group left by a supervisor that died was terminated.
    Reaped(&'a Reaped),
    CycleStarted {
        schedule: &'a str,
        modes: usize,
    },
    ModeStarted {
        schedule: &'a str,
        cycle: &'a str,
        mode: &'a str,
        attempt: u32,
    },
    ModeFinished {
        schedule: &'a str,
        report: &'a ModeReport,
    },
    CycleFinished {
        schedule: &'a str,
        outcome: &'a CycleOutcome,
    },
    /// The schedule's cycle runs elsewhere; it was not run.
    Busy {
        schedule: &'a str,
        pid: &'a str,
    },
    /// A todo run is stopped for a schedule's fire.
    Preempted {
        schedule: &'a str,
        at: DateTime<Utc>,
    },
    /// The schedule is paused or over budget: not run, a `skipped` row written.
    Held {
        schedule: &'a str,
        note: &'a str,
    },
}

/// How one schedule's turn ended.
#[derive(Debug, Clone)]
pub enum ScheduleRun {
    Ran(CycleOutcome),
    Busy {
        pid: String,
    },
    /// Paused by a rate limit or over budget: a `skipped` cycle row with this note.
    Held {
        note: String,
        until: DateTime<Utc>,
    },
    /// The cycle could not record its rows.
    Failed(String),
}

/// What a `run-cycle` did, schedule by schedule.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub runs: Vec<(String, ScheduleRun)>,
    /// Cancelled before every schedule had its turn.
    pub cancelled: bool,
}

impl Outcome {
    /// 0 all ok, 1 a mode failed, 75 a schedule was busy, or paused or over budget (try
    /// again later, as EX_TEMPFAIL says), 130 interrupted (SPEC §7).
    pub fn exit_code(&self) -> Code {
        let mut code = Code::OK;
        for (_, run) in &self.runs {
            match run {
                ScheduleRun::Ran(outcome) if outcome.status == Status::Interrupted => {
                    return Code::INTERRUPTED;
                }
                ScheduleRun::Ran(outcome) if outcome.any_failed && code == Code::OK => {
                    code = Code::FAILED;
                }
                ScheduleRun::Ran(_) => {}
                ScheduleRun::Busy { .. } | ScheduleRun::Held { .. } => code = Code::BUSY,
                ScheduleRun::Failed(_) if code == Code::OK => code = Code::FAILED,
                ScheduleRun::Failed(_) => {}
            }
        }
        if self.cancelled && code == Code::OK {
            Code::INTERRUPTED
        } else {
            code
        }
    }
}

/// What a dry run shows for one schedule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub schedule: String,
    pub cwd: String,
    pub modes: Vec<PlannedMode>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedMode {
    pub slug: String,
    /// The resolved argv; `None` when no command's program is installed.
    pub argv: Option<Vec<String>>,
    /// The programs looked for, when none is installed.
    pub missing: Vec<String>,
    pub prompt: PromptKind,
    /// How its output is read (`None`: by its exit status alone).
    pub output: Option<crate::agent::OutputFormat>,
    pub timeout: std::time::Duration,
    pub on_failure: OnFailure,
    pub always: bool,
}

/// The schedules a request names, with the TODO item it runs.
fn select(
    inst: &Instance,
    config: &Config,
    request: &Request,
) -> Result<(Vec<Schedule>, Option<TodoItem>), Error> {
    let todo_item = match request.todo {
        None => None,
        Some(n) => {
            let todo = Todo::load(&inst.todo()).map_err(|err| Error::Invalid(err.to_string()))?;
            match todo.item(n) {
                Some(item) if !item.done => Some(item.clone()),
                Some(item) => {
                    return Err(Error::Invalid(format!(
                        "TODO.md:{}: item {n} is already done: {}",
                        item.line, item.text
                    )));
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "TODO.md has no item {n} (it has {}; see `loop-orchestrator todo`)",
                        todo.items.len()
                    )));
                }
            }
        }
    };
    let schedules: Vec<Schedule> = match &request.schedule {
        Some(id) => vec![super::find_schedule(config, id)?.clone()],
        None => {
            let enabled = config.schedules.iter().filter(|s| s.enabled).cloned();
            if todo_item.is_some() {
                enabled.take(1).collect()
            } else {
                enabled.collect()
            }
        }
    };
    if schedules.is_empty() {
        return Err(Error::Invalid(
            "schedules.json has no enabled schedule to run (name one with --schedule)".into(),
        ));
    }
    Ok((schedules, todo_item))
}

/// What `run` would do, without running or writing anything.
pub fn plan(inst: &Instance, request: &Request) -> Result<Vec<Plan>, Error> {
    let config = Config::load(inst.root())?;
    let (schedules, _) = select(inst, &config, request)?;
    Ok(schedules
        .iter()
        .map(|s| Plan {
            schedule: s.id.clone(),
            cwd: s.cwd.display().to_string(),
            modes: s
                .modes
                .iter()
                .map(|slug| {
                    let mode = &config.modes[slug];
                    let resolved = cycle::resolve_command(mode, &s.cwd);
                    let invocation = resolved
                        .as_ref()
                        .map(|(written, _)| mode.invocation(written));
                    PlannedMode {
                        slug: slug.clone(),
                        missing: if resolved.is_none() {
                            mode.commands.iter().map(|c| c[0].clone()).collect()
                        } else {
                            Vec::new()
                        },
                        argv: resolved.map(|(_, argv)| argv),
                        prompt: invocation.as_ref().map_or(mode.prompt, |i| i.prompt),
                        output: invocation.map_or(mode.output, |i| i.output),
                        timeout: mode.timeout.map_or(s.timeout, |t| t.min(s.timeout)),
                        on_failure: mode.on_failure,
                        always: mode.always,
                    }
                })
                .collect(),
        })
        .collect())
}

/// Runs the request's cycles, one after the other. `Err` only when nothing could run
/// (invalid input, a lock file that cannot be opened); every cycle that ran is in the outcome.
pub async fn run(
    inst: &Instance,
    request: &Request,
    cancel: CancellationToken,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Outcome, Error> {
    let config = Config::load(inst.root())?;
    let (schedules, todo_item) = select(inst, &config, request)?;
    let budget = crate::limits::InstanceBudget::of(&config);
    let recorder = crate::recorder::Recorder::inline_for_instance(inst);
    let _registration = crate::leftover::register(inst);
    for reaped in crate::leftover::reap(inst, &recorder) {
        progress(Progress::Reaped(&reaped));
    }
    // SPEC §4: a todo run gives way to schedule fires. Fires happen only in a running
    // service, so the run ends at the next instant of any enabled schedule while one serves.
    let preempt_at = todo_item
        .as_ref()
        .and_then(|_| next_fire_while_serving(inst, &config));
    let (preempted_tx, mut preempted_rx) = tokio::sync::mpsc::unbounded_channel();
    let preempter = todo_item.is_some().then(|| {
        tokio::spawn(give_way_to_fires(
            inst.clone(),
            preempt_at.clone(),
            cancel.clone(),
            preempted_tx,
        ))
    });
    let mut outcome = Outcome {
        runs: Vec::new(),
        cancelled: false,
    };
    for schedule in schedules {
        if cancel.is_cancelled() {
            break;
        }
        let mut lock = LockFile::schedule(inst, &schedule.id).map_err(Error::failed)?;
        let guard = match lock.try_cycle(schedule.overlap == Overlap::Parallel) {
            Ok(guard) => guard,
            Err(LockError::Held { pid, .. }) => {
                progress(Progress::Busy {
                    schedule: &schedule.id,
                    pid: &pid,
                });
                outcome
                    .runs
                    .push((schedule.id.clone(), ScheduleRun::Busy { pid }));
                continue;
            }
            Err(err) => return Err(Error::failed(err)),
        };
        let gate = crate::limits::on_disk(inst, &schedule, &budget, Utc::now());
        if let Some(hold) = gate.hold.as_ref().filter(|_| !request.ignore_limits) {
            let note = hold.note();
            tracing::info!(schedule = %schedule.id, "skipped: {note}");
            let row = cycle::cycle_row(&schedule, None, Utc::now(), Status::Skipped, &note);
            recorder.rows(vec![row]).await.map_err(Error::failed)?;
            progress(Progress::Held {
                schedule: &schedule.id,
                note: &note,
            });
            outcome.runs.push((
                schedule.id.clone(),
                ScheduleRun::Held {
                    until: hold.until(),
                    note,
                },
            ));
            continue;
        }
        let allowance = gate.allowance.map(|a| crate::limits::Allowance {
            enforced: !request.ignore_limits,
            ..a
        });
        progress(Progress::CycleStarted {
            schedule: &schedule.id,
            modes: schedule.modes.len(),
        });
        let modes = schedule
            .modes
            .iter()
            .map(|m| config.modes[m].clone())
            .collect();
        let spec = CycleSpec {
            inst: inst.clone(),
            schedule: schedule.clone(),
            modes,
            memory: config.memory,
            scheduled_at: None,
            priority: if todo_item.is_some() {
                Priority::Todo
            } else {
                Priority::Schedule
            },
            todo_item: todo_item.clone(),
            dispatched_at: None,
            note: preempt_at.as_ref().map(|(id, at)| {
                format!(
                    "a todo run: gives way to the fire of {id} at {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }),
            allowance,
            cycle: None,
            attempt: 1,
        };
        let id = schedule.id.as_str();
        let result = cycle::run(spec, &recorder, cancel.clone(), |event| {
            while let Ok((schedule, at)) = preempted_rx.try_recv() {
                progress(Progress::Preempted {
                    schedule: &schedule,
                    at,
                });
            }
            match event {
                CycleEvent::ModeStarted {
                    cycle,
                    mode,
                    attempt,
                } => progress(Progress::ModeStarted {
                    schedule: id,
                    cycle,
                    mode,
                    attempt,
                }),
                CycleEvent::ModeFinished(report) => progress(Progress::ModeFinished {
                    schedule: id,
                    report,
                }),
            }
        })
        .await;
        drop(guard);
        while let Ok((schedule, at)) = preempted_rx.try_recv() {
            progress(Progress::Preempted {
                schedule: &schedule,
                at,
            });
        }
        let run = match result {
            Ok(cycle_outcome) => {
                progress(Progress::CycleFinished {
                    schedule: id,
                    outcome: &cycle_outcome,
                });
                ScheduleRun::Ran(cycle_outcome)
            }
            Err(err) => ScheduleRun::Failed(err.to_string()),
        };
        outcome.runs.push((schedule.id.clone(), run));
    }
    if let Some(preempter) = preempter {
        preempter.abort();
    }
    recorder.flush().await;
    outcome.cancelled = cancel.is_cancelled();
    Ok(outcome)
}

/// Cancels a todo run a little ahead of the next schedule fire of a running service, so
/// that a mode that ends on SIGTERM has let go of the schedule's lock when the service
/// takes it. Every [`PREEMPT_RECHECK`] it looks again: a service started since, or an edit
/// of schedules.json (read again when its size, time or inode changed; a file that does not
/// validate leaves the last instant), can bring the fire closer.
async fn give_way_to_fires(
    inst: Instance,
    mut next: Option<(String, DateTime<Utc>)>,
    cancel: CancellationToken,
    preempted: tokio::sync::mpsc::UnboundedSender<(String, DateTime<Utc>)>,
) {
    let schedules = inst.schedules();
    let stamp = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    };
    let mut seen = stamp(&schedules);
    let mut config: Option<Config> = None;
    loop {
        let now = Utc::now();
        if let Some((id, at)) = &next
            && now >= *at - PREEMPT_LEAD
        {
            tracing::warn!(schedule = %id, at = %at, "preempted: stopping the todo run for the schedule's fire");
            let _ = preempted.send((id.clone(), *at));
            cancel.cancel();
            return;
        }
        let nap = next
            .as_ref()
            .and_then(|(_, at)| (*at - PREEMPT_LEAD - now).to_std().ok())
            .map_or(PREEMPT_RECHECK, |until| until.min(PREEMPT_RECHECK));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = cancel.cancelled() => return,
        }
        let current = stamp(&schedules);
        if current != seen || config.is_none() {
            seen = current;
            match Config::load(inst.root()) {
                Ok(fresh) => config = Some(fresh),
                Err(_) if config.is_some() => {}
                Err(_) => continue,
            }
        }
        if let Some(config) = &config {
            next = next_fire_while_serving(&inst, config);
        }
    }
}

/// The next instant of any enabled schedule, and whose, when a service holds the instance.
fn next_fire_while_serving(inst: &Instance, config: &Config) -> Option<(String, DateTime<Utc>)> {
    LockFile::service(inst).ok()?.probe()?;
    let now = Utc::now();
    config
        .schedules
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| Some((s.cron.next_after(now, &s.timezone)?, s.id.clone())))
        .min()
        .map(|(at, id)| (id, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(status: Status, any_failed: bool) -> ScheduleRun {
        ScheduleRun::Ran(CycleOutcome {
            cycle: "c".into(),
            status,
            any_failed,
            counts_as_failure: any_failed,
            duration: std::time::Duration::ZERO,
            note: String::new(),
            cost_usd: None,
            paused_until: None,
        })
    }

    #[test]
    fn exit_codes_follow_the_worst_turn() {
        let outcome = |runs: Vec<ScheduleRun>, cancelled| Outcome {
            runs: runs.into_iter().map(|r| ("s".to_string(), r)).collect(),
            cancelled,
        };
        assert_eq!(
            outcome(vec![ran(Status::Ok, false)], false).exit_code(),
            Code::OK
        );
        assert_eq!(
            outcome(vec![ran(Status::Ok, true), ran(Status::Ok, false)], false).exit_code(),
            Code::FAILED
        );
        let busy = ScheduleRun::Busy { pid: "1".into() };
        assert_eq!(
            outcome(vec![ran(Status::Failed, true), busy], false).exit_code(),
            Code::BUSY
        );
        assert_eq!(
            outcome(
                vec![ran(Status::Ok, true), ran(Status::Interrupted, false)],
                false
            )
            .exit_code(),
            Code::INTERRUPTED
        );
        assert_eq!(outcome(vec![], true).exit_code(), Code::INTERRUPTED);
    }
}
