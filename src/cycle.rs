//! One fire of a schedule, run through its modes (SPEC §3–§5).
//!
//! Rules: modes run in order; a failed, timed-out or blocked mode whose `on_failure` is
//! `stop` skips the rest except `always` modes; every mode attempt writes a row as soon as it
//! ends (so a crash keeps what was done) and adds a System Updates entry plus the `MEMORY`
//! lines it printed; the cycle ends with one `cycle` row, a prune of the memory file when over
//! its limit, and the last HANDOFF saved for the schedule's next cycle. The caller holds the
//! schedule's lock; this module only runs.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::MemorySettings;
use crate::duration::short;
use crate::instance::Instance;
use crate::memory::{MemoryLimits, Section};
use crate::mode::{IfMissing, Mode, OnFailure, PromptKind};
use crate::prompt::{self, Handoff, PromptParts};
use crate::protocol::{AgentResultReader, ProtocolReader};
use crate::recorder::Recorder;
use crate::runner::{self, LineSink, PromptDelivery, RunSpec, RunStatus};
use crate::schedule::Schedule;
use crate::timing::{Priority, Row, Status, sanitize_note};
use crate::todo::{Todo, TodoItem};

/// A manual run of a TODO item may take at most this long, all modes together.
pub const TODO_CAP: Duration = Duration::from_secs(3_600);

/// What to run: owned, so a cycle can run on its own task in the service.
#[derive(Debug, Clone)]
pub struct CycleSpec {
    pub inst: Instance,
    pub schedule: Schedule,
    /// The schedule's modes, in pipeline order.
    pub modes: Vec<Mode>,
    pub memory: MemorySettings,
    /// The cron instant that fired this cycle; `None` for a manual run.
    pub scheduled_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    /// A TODO item run with `run-cycle --todo N`: its text replaces the schedule's task.
    pub todo_item: Option<TodoItem>,
    /// When the service dispatched the fire: the cycle row's `started_at`, so fire lateness
    /// is read off the file even when the cycle waited for a free slot. `None`: now.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// Said first in the cycle row's note (e.g. the jitter applied).
    pub note: Option<String>,
    /// The cycle id, when it was chosen before the cycle (a cluster claim carries it, so a
    /// survivor can name the cycle); `None`: the run folder's name.
    pub cycle: Option<String>,
    /// Which run of its instant this is, the cycle row's `attempt`: 1, or 2 when a cluster
    /// node runs again an instant whose first run was interrupted (SPEC §11).
    pub attempt: u32,
}

/// What a cycle reports as it goes, for progress output.
#[derive(Debug, Clone, Copy)]
pub enum CycleEvent<'a> {
    /// A mode attempt starts (its program was found).
    ModeStarted {
        cycle: &'a str,
        mode: &'a str,
        attempt: u32,
    },
    /// A mode attempt ended, or a mode was skipped.
    ModeFinished(&'a ModeReport),
}

/// What one mode did, for progress output.
#[derive(Debug, Clone)]
pub struct ModeReport {
    pub mode: String,
    pub attempt: u32,
    pub status: Status,
    pub duration: Duration,
    pub note: String,
}

/// The end of a cycle.
#[derive(Debug, Clone)]
pub struct CycleOutcome {
    pub cycle: String,
    pub status: Status,
    /// Whether any mode's final attempt failed, timed out or was blocked (even with
    /// `on_failure = "continue"`): `run-cycle` exits 1 then.
    pub any_failed: bool,
    /// Whether the cycle counts toward the schedule's failure streak (see
    /// [`crate::timing::Row::counts_as_failure`]).
    pub counts_as_failure: bool,
    pub duration: Duration,
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] crate::recorder::RecordError),
}

/// Runs one cycle. `progress` is called when a mode attempt starts and after it ends.
pub async fn run(
    spec: CycleSpec,
    recorder: &Recorder,
    cancel: CancellationToken,
    mut progress: impl FnMut(CycleEvent<'_>),
) -> Result<CycleOutcome, CycleError> {
    let started = spec.dispatched_at.unwrap_or_else(Utc::now);
    // Absolute, so LOOP_DIR and the files it names mean the same from any working directory.
    let inst = spec.inst.canonical();
    let dir = inst.root().to_path_buf();
    let created = match &spec.cycle {
        Some(id) => crate::runs::create_named(&inst, id).map(|(_, path)| (id.clone(), path)),
        None => crate::runs::create(&inst, &spec.schedule.id, started),
    };
    let (cycle, run_dir) = created.map_err(|source| CycleError::Io {
        path: inst.runs_dir(),
        source,
    })?;
    let limits = MemoryLimits {
        max_lines: spec.memory.max_lines,
        target_lines: spec.memory.target_lines,
    };
    let todo = Todo::load(&inst.todo()).unwrap_or(Todo { items: Vec::new() });
    // A handoff that cannot be read is said in the cycle row: the plan it held is lost.
    let mut cycle_notes: Vec<String> = Vec::new();
    let previous = match crate::state::load_handoff(&inst, &spec.schedule.id) {
        Ok(previous) => previous,
        Err(err) => {
            tracing::warn!(schedule = %spec.schedule.id, error = %err, "the previous cycle's handoff is unreadable");
            cycle_notes.push(format!("previous handoff unreadable: {err}"));
            None
        }
    };
    let task = match &spec.todo_item {
        Some(item) => format!(
            "{} (TODO.md item {}, line {}{})",
            item.text,
            item.number,
            item.line,
            if item.headings.is_empty() {
                String::new()
            } else {
                format!(", under {}", item.headings.join(" > "))
            }
        ),
        None => spec.schedule.task.clone(),
    };
    let deadline =
        (spec.priority == Priority::Todo).then(|| tokio::time::Instant::now() + TODO_CAP);

    let mut handoffs: Vec<Handoff> = Vec::new();
    // System Updates entries of this cycle, written together before its cycle row.
    let mut updates: Vec<(Section, String)> = Vec::new();
    let mut stopped_by: Option<(String, Status)> = None;
    let mut interrupted = false;
    let mut any_failed = false;
    let mut counts = StatusCounts::default();
    // The sum of the costs the modes reported; none reported, none known.
    let mut cycle_cost: Option<f64> = None;

    for mode in &spec.modes {
        if interrupted {
            break;
        }
        if let Some((stopper, status)) = &stopped_by
            && !mode.always
        {
            let now = Utc::now();
            let note = format!("skipped: {stopper} ended {status}");
            let row = row(
                &spec,
                &cycle,
                &mode.slug,
                1,
                Status::Skipped,
                now,
                now,
                None,
                &note,
            );
            recorder.rows(vec![row]).await?;
            counts.add(Status::Skipped);
            progress(CycleEvent::ModeFinished(&ModeReport {
                mode: mode.slug.clone(),
                attempt: 1,
                status: Status::Skipped,
                duration: Duration::ZERO,
                note,
            }));
            continue;
        }
        let mut final_status = Status::Ok;
        for attempt in 1..=mode.retries + 1 {
            let started_at = Utc::now();
            let Some(argv) = resolve_command(mode, &spec.schedule.cwd) else {
                let programs: Vec<&str> = mode.commands.iter().map(|c| c[0].as_str()).collect();
                let (status, note) = match mode.if_missing {
                    IfMissing::Skip => (
                        Status::Skipped,
                        format!("not installed: {}", programs.join(", ")),
                    ),
                    IfMissing::Fail => (
                        Status::Failed,
                        format!("program not found on PATH: {}", programs.join(", ")),
                    ),
                };
                let row = row(
                    &spec, &cycle, &mode.slug, attempt, status, started_at, started_at, None, &note,
                );
                recorder.rows(vec![row]).await?;
                updates.push((
                    Section::SystemUpdates,
                    system_update(
                        &spec.schedule.id,
                        &mode.slug,
                        started_at,
                        status,
                        Duration::ZERO,
                        &note,
                    ),
                ));
                progress(CycleEvent::ModeFinished(&ModeReport {
                    mode: mode.slug.clone(),
                    attempt,
                    status,
                    duration: Duration::ZERO,
                    note,
                }));
                final_status = status;
                break;
            };
            let mut timeout = mode
                .timeout
                .map_or(spec.schedule.timeout, |t| t.min(spec.schedule.timeout));
            if let Some(deadline) = deadline {
                timeout =
                    timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            }
            let suffix = if attempt > 1 {
                format!(".attempt{attempt}")
            } else {
                String::new()
            };
            let prompt_file = run_dir.join(format!("{}{suffix}.prompt.md", mode.slug));
            let memory_text = std::fs::read_to_string(inst.memory()).unwrap_or_default();
            let open: Vec<&TodoItem> = todo.open_items().collect();
            let prompt_text = prompt::compose(&PromptParts {
                task: &task,
                schedule: &spec.schedule.id,
                cycle: &cycle,
                mode: &mode.slug,
                mode_name: &mode.name,
                attempt,
                priority: &spec.priority.to_string(),
                instructions: &mode.instructions,
                open_items: &open,
                memory: &memory_text,
                earlier: &handoffs,
                previous_cycle: previous.as_ref(),
            });
            let mut env: Vec<(String, String)> = spec
                .schedule
                .env
                .iter()
                .chain(&mode.env)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            env.extend([
                ("LOOP_CYCLE_ID".to_string(), cycle.clone()),
                ("LOOP_SCHEDULE_ID".to_string(), spec.schedule.id.clone()),
                ("LOOP_MODE".to_string(), mode.slug.clone()),
                ("LOOP_ATTEMPT".to_string(), attempt.to_string()),
                ("LOOP_DIR".to_string(), dir.display().to_string()),
                (
                    "LOOP_MEMORY_FILE".to_string(),
                    inst.memory().display().to_string(),
                ),
                (
                    "LOOP_TODO_FILE".to_string(),
                    inst.todo().display().to_string(),
                ),
                ("LOOP_PRIORITY".to_string(), spec.priority.to_string()),
            ]);
            let writes_file =
                mode.prompt == PromptKind::File || argv.iter().any(|a| a == "{prompt_file}");
            if writes_file {
                env.push((
                    "LOOP_PROMPT_FILE".to_string(),
                    prompt_file.display().to_string(),
                ));
            }
            tracing::info!(schedule = %spec.schedule.id, cycle = %cycle, mode = %mode.slug, attempt, program = %argv[0], timeout = %short(timeout), "mode started");
            progress(CycleEvent::ModeStarted {
                cycle: &cycle,
                mode: &mode.slug,
                attempt,
            });
            let run_spec = RunSpec {
                argv,
                cwd: spec.schedule.cwd.clone(),
                env,
                prompt: match mode.prompt {
                    PromptKind::Stdin => PromptDelivery::Stdin,
                    PromptKind::File => PromptDelivery::File,
                    PromptKind::None => PromptDelivery::None,
                },
                prompt_text,
                prompt_file,
                timeout,
                kill_grace: mode.kill_grace,
                log_path: run_dir.join(format!("{}{suffix}.log", mode.slug)),
                log_cap: runner::LOG_CAP,
                record: Some((
                    inst.pids_dir(),
                    crate::runner::record::Label {
                        schedule: spec.schedule.id.clone(),
                        cycle: cycle.clone(),
                        mode: mode.slug.clone(),
                        attempt,
                        scheduled_at: spec.scheduled_at,
                        priority: spec.priority.to_string(),
                    },
                )),
            };
            let mut protocol = ProtocolReader::default();
            let mut agent_result = AgentResultReader::default();
            let sinks: &mut [&mut dyn LineSink] = &mut [&mut protocol, &mut agent_result];
            let (status, note, exit_code, finished_at, memory, handoff, cost_usd) =
                match runner::run(run_spec, sinks, cancel.clone()).await {
                    Ok(outcome) => {
                        let status = match outcome.status {
                            RunStatus::Ok => Status::Ok,
                            RunStatus::Failed => Status::Failed,
                            RunStatus::Timeout => Status::Timeout,
                            RunStatus::Blocked => Status::Blocked,
                            RunStatus::Interrupted => Status::Interrupted,
                        };
                        // The handoff says more about a run than its exit status does.
                        let note = match protocol.handoff.last() {
                            Some(h) if status == Status::Ok => {
                                format!("{}; HANDOFF: {h}", outcome.summary)
                            }
                            _ => outcome.summary,
                        };
                        (
                            status,
                            note,
                            outcome.exit_code,
                            outcome.finished_at,
                            protocol.memory,
                            protocol.handoff,
                            agent_result.cost_usd,
                        )
                    }
                    Err(err) => (
                        Status::Failed,
                        err.to_string(),
                        None,
                        Utc::now(),
                        Vec::new(),
                        Vec::new(),
                        None,
                    ),
                };
            let duration = (finished_at - started_at).to_std().unwrap_or_default();
            let mut row = row(
                &spec,
                &cycle,
                &mode.slug,
                attempt,
                status,
                started_at,
                finished_at,
                exit_code,
                &note,
            );
            row.cost_usd = cost_usd;
            if let Some(cost) = cost_usd {
                *cycle_cost.get_or_insert(0.0) += cost;
            }
            // The mode's own MEMORY lines are committed before its row (the recorder keeps
            // that order), so a row on disk means its entries are too. The System Updates
            // entry, derived from the row, joins the cycle's others in one write at the end.
            let entries: Vec<(Section, String)> = memory
                .into_iter()
                .map(|(section, text)| match section.parse::<Section>() {
                    Ok(section) => (section, text),
                    Err(_) => (Section::SystemUpdates, format!("[{section}] {text}")),
                })
                .collect();
            if !entries.is_empty() {
                recorder.memory_detached(entries, limits);
            }
            recorder.rows(vec![row]).await?;
            updates.push((
                Section::SystemUpdates,
                system_update(
                    &spec.schedule.id,
                    &mode.slug,
                    started_at,
                    status,
                    duration,
                    &note,
                ),
            ));
            for text in handoff {
                handoffs.push(Handoff {
                    mode: mode.slug.clone(),
                    cycle: cycle.clone(),
                    text,
                });
            }
            tracing::info!(schedule = %spec.schedule.id, cycle = %cycle, mode = %mode.slug, attempt, status = %status, duration = %short(duration), "mode finished");
            progress(CycleEvent::ModeFinished(&ModeReport {
                mode: mode.slug.clone(),
                attempt,
                status,
                duration,
                note,
            }));
            final_status = status;
            let retryable = matches!(status, Status::Failed | Status::Timeout);
            if !retryable || cancel.is_cancelled() {
                break;
            }
        }
        counts.add(final_status);
        if final_status == Status::Interrupted {
            interrupted = true;
        } else if final_status.counts_as_failure() {
            any_failed = true;
            if mode.on_failure == OnFailure::Stop && stopped_by.is_none() {
                stopped_by = Some((mode.slug.clone(), final_status));
            }
        }
    }

    let finished = Utc::now();
    let status = if interrupted {
        Status::Interrupted
    } else {
        stopped_by.as_ref().map_or(Status::Ok, |(_, s)| *s)
    };
    if let Some(last) = handoffs.last()
        && let Err(err) = crate::state::save_handoff(&inst, &spec.schedule.id, last)
    {
        tracing::warn!(schedule = %spec.schedule.id, error = %err, "handoff not saved");
        cycle_notes.push(format!("handoff not saved: {err}"));
    }
    let mut note = spec
        .note
        .as_ref()
        .map_or(String::new(), |n| format!("{n}; "));
    note.push_str(&counts.describe());
    if let Some((mode, s)) = &stopped_by {
        note.push_str(&format!("; stopped by {mode} ({s})"));
    }
    for extra in &cycle_notes {
        note.push_str("; ");
        note.push_str(extra);
    }
    let mut cycle_row = row(
        &spec,
        &cycle,
        "cycle",
        spec.attempt.max(1),
        status,
        started,
        finished,
        None,
        &note,
    );
    cycle_row.cost_usd = cycle_cost;
    let counts_as_failure = cycle_row.counts_as_failure();
    if !updates.is_empty() {
        recorder.memory_detached(std::mem::take(&mut updates), limits);
    }
    recorder.rows(vec![cycle_row]).await?;
    crate::runs::finish(&inst, &run_dir);
    let duration = (finished - started).to_std().unwrap_or_default();
    tracing::info!(schedule = %spec.schedule.id, cycle = %cycle, status = %status, duration = %short(duration), "cycle finished");
    Ok(CycleOutcome {
        cycle,
        status,
        any_failed,
        counts_as_failure,
        duration,
        note,
    })
}

/// The row of a fire that did not run (overlap `skip`, a fire the service never started, an
/// escalation): one cycle row, started at `dispatched_at`.
pub fn cycle_row(
    schedule: &Schedule,
    scheduled_at: Option<DateTime<Utc>>,
    dispatched_at: DateTime<Utc>,
    status: Status,
    note: &str,
) -> Row {
    let now = Utc::now();
    Row {
        scheduled_at,
        started_at: dispatched_at,
        finished_at: now,
        duration_ms: (now - dispatched_at).num_milliseconds().max(0) as u64,
        priority: Priority::Schedule,
        schedule: schedule.id.clone(),
        // Not a cycle that ran, so no run folder gives it an id. Its own: the instant (each
        // fires once), or for an escalation the moment, and the status. Stamped by the
        // dispatch moment alone, a skipped queued fire and the escalation that dropped it
        // shared an id (the soak's one doubled cycle row).
        cycle: format!(
            "{}-{}~{}",
            cycle_stamp(scheduled_at.unwrap_or(dispatched_at)),
            schedule.id,
            status
        ),
        mode: "cycle".to_string(),
        attempt: 1,
        status,
        exit_code: None,
        cost_usd: None,
        note: sanitize_note(note),
    }
}

/// The argv of the first of the mode's commands whose program is installed (see
/// [`crate::program`]). `{prompt_file}` stays in place: the runner replaces it.
pub fn resolve_command(mode: &Mode, cwd: &std::path::Path) -> Option<Vec<String>> {
    mode.commands
        .iter()
        .find_map(|argv| crate::program::resolve_argv(argv, cwd))
}

#[allow(clippy::too_many_arguments)]
fn row(
    spec: &CycleSpec,
    cycle: &str,
    mode: &str,
    attempt: u32,
    status: Status,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    exit_code: Option<i32>,
    note: &str,
) -> Row {
    Row {
        scheduled_at: spec.scheduled_at,
        started_at,
        finished_at,
        duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        priority: spec.priority,
        schedule: spec.schedule.id.clone(),
        cycle: cycle.to_string(),
        mode: mode.to_string(),
        attempt,
        status,
        exit_code,
        cost_usd: None,
        note: sanitize_note(note),
    }
}

fn system_update(
    schedule: &str,
    mode: &str,
    at: DateTime<Utc>,
    status: Status,
    duration: Duration,
    note: &str,
) -> String {
    format!(
        "{} [{schedule}/{mode}] {status} in {}: {note}",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        short(duration)
    )
}

fn cycle_stamp(at: DateTime<Utc>) -> String {
    crate::runs::stamp(at)
}

#[derive(Default)]
struct StatusCounts(Vec<(Status, usize)>);

impl StatusCounts {
    fn add(&mut self, status: Status) {
        match self.0.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.0.push((status, 1)),
        }
    }

    fn describe(&self) -> String {
        let total: usize = self.0.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = self.0.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!("{total} modes: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_and_the_queued_fire_it_drops_do_not_share_a_cycle_id() {
        use crate::schedule::ScheduleFields;
        let fields: ScheduleFields =
            serde_json::from_str(r#"{"id": "s307", "task": "t", "overlap": "queue"}"#).unwrap();
        let schedule = Schedule::resolve(
            fields,
            &ScheduleFields::default(),
            crate::zone::Zone::utc(),
            std::path::Path::new("inst"),
        );
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let now = at("2026-11-21T13:50:43.697Z");
        // One dispatch moment: the queued instant dropped by the escalation, the escalation,
        // and two instants of one late wake skipped together.
        let rows = [
            cycle_row(
                &schedule,
                Some(at("2026-11-21T13:50:15Z")),
                now,
                Status::Skipped,
                "x",
            ),
            cycle_row(&schedule, None, now, Status::Escalated, "x"),
            cycle_row(
                &schedule,
                Some(at("2026-11-21T13:50:41Z")),
                now,
                Status::Skipped,
                "x",
            ),
            cycle_row(
                &schedule,
                Some(at("2026-11-21T13:50:42Z")),
                now,
                Status::Skipped,
                "x",
            ),
        ];
        let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.cycle.as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "{rows:?}");
        assert_eq!(rows[0].cycle, "20261121T135015.000Z-s307~skipped");
        assert_eq!(rows[1].cycle, "20261121T135043.697Z-s307~escalated");
    }
}
