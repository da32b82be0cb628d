//! One fire of a schedule, run through its modes (SPEC §3–§5).
//!
//! Rules: modes run in order; a failed, timed-out or blocked mode whose `on_failure` is
//! `stop` skips the rest except `always` modes; every mode attempt writes a row as soon as it
//! ends (so a crash keeps what was done) and adds a System Updates entry plus the `MEMORY`
//! lines it printed; the cycle ends with one `cycle` row, a prune of the memory file when over
//! its limit, and the last HANDOFF saved for the schedule's next cycle. The caller holds the
//! schedule's lock and has checked the schedule's pause and budgets; this module only runs.
//!
//! Agents (SPEC §8): a run of an agent mode is judged by what the agent says (`judge` below):
//! its own error fails the run even on exit 0, with its text first in the note; its tokens
//! go in the note and its cost in the row. A rate-limited run (note `rate limited …`) is
//! followed, within the same attempt, by the mode's `fallback` argvs in order, a row each;
//! when every one is limited the mode fails as rate limited (no retry), the cycle row's note
//! starts `rate limited until …` (so it does not count toward `max_failures`), and the
//! schedule's pause is saved. An agent mode whose budget is spent is `skipped`, so a day's
//! cost passes its budget by one run at most.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentReport, OutputFormat, Reader, Verdict};
use crate::config::MemorySettings;
use crate::duration::short;
use crate::instance::Instance;
use crate::limits::{Allowance, dollars};
use crate::memory::{MemoryLimits, Section};
use crate::mode::{IfMissing, Mode, OnFailure, PromptKind};
use crate::prompt::{self, Handoff, PromptParts};
use crate::protocol::ProtocolReader;
use crate::recorder::Recorder;
use crate::runner::{self, LineSink, RunOutcome, RunSpec, RunStatus};
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
    /// What the day's budgets leave when the cycle starts (SPEC §8); `None`: no budget.
    /// Agent modes see it less what the cycle has spent as `LOOP_BUDGET_LEFT_USD`, and are
    /// skipped once it is spent.
    pub allowance: Option<Allowance>,
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
    /// The sum of its runs' costs (the cycle row's `cost_usd`).
    pub cost_usd: Option<f64>,
    /// Set when a mode's every argv was rate limited: the schedule pauses until then (the
    /// pause is saved for other processes too).
    pub paused_until: Option<DateTime<Utc>>,
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
    let created = match &spec.cycle {
        Some(id) => crate::runs::create_named(&inst, id).map(|(_, path)| (id.clone(), path)),
        None => crate::runs::create(&inst, &spec.schedule.id, started),
    };
    let (cycle, run_dir) = created.map_err(|source| CycleError::Io {
        path: inst.runs_dir(),
        source,
    })?;
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
    let mut cx = Running {
        spec: &spec,
        recorder,
        cancel: &cancel,
        inst: &inst,
        cycle: &cycle,
        run_dir: &run_dir,
        memory_limits: MemoryLimits {
            max_lines: spec.memory.max_lines,
            target_lines: spec.memory.target_lines,
        },
        task: &task,
        todo: &todo,
        previous: previous.as_ref(),
        deadline: (spec.priority == Priority::Todo).then(|| tokio::time::Instant::now() + TODO_CAP),
        handoffs: Vec::new(),
        updates: Vec::new(),
        cost: None,
        paused_until: None,
        limited_modes: Vec::new(),
    };

    // (mode, its status, whether it was rate limited)
    let mut stopped_by: Option<(String, Status, bool)> = None;
    let mut interrupted = false;
    let mut any_failed = false;
    let mut counts = StatusCounts::default();
    for mode in &spec.modes {
        if interrupted {
            break;
        }
        if let Some((stopper, status, _)) = &stopped_by
            && !mode.always
        {
            let note = format!("skipped: {stopper} ended {status}");
            let now = Utc::now();
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
        let end = cx.run_mode(mode, &mut progress).await?;
        counts.add(end.status);
        if end.status == Status::Interrupted {
            interrupted = true;
        } else if end.status.counts_as_failure() {
            any_failed = true;
            if mode.on_failure == OnFailure::Stop && stopped_by.is_none() {
                stopped_by = Some((mode.slug.clone(), end.status, end.limited.is_some()));
            }
        }
    }

    let finished = Utc::now();
    let status = if interrupted {
        Status::Interrupted
    } else {
        stopped_by.as_ref().map_or(Status::Ok, |(_, s, _)| *s)
    };
    if let Some(last) = cx.handoffs.last()
        && let Err(err) = crate::state::save_handoff(&inst, &spec.schedule.id, last)
    {
        tracing::warn!(schedule = %spec.schedule.id, error = %err, "handoff not saved");
        cycle_notes.push(format!("handoff not saved: {err}"));
    }
    let paused = cx.paused_until.map(|until| {
        (
            until,
            format!(
                "rate limited until {}: every argv of {} was limited",
                rfc3339(until),
                cx.limited_modes.join(", ")
            ),
        )
    });
    if let Some((until, text)) = &paused {
        let pause = crate::state::Pause {
            until: *until,
            at: finished,
            cycle: cycle.clone(),
            note: text.clone(),
        };
        tracing::warn!(schedule = %spec.schedule.id, cycle = %cycle, until = %until, "rate limited: the schedule pauses");
        if let Err(err) = crate::state::save_pause(&inst, &spec.schedule.id, &pause) {
            tracing::error!(schedule = %spec.schedule.id, error = %err, "pause not saved");
            cycle_notes.push(format!("pause not saved: {err}"));
        }
    }
    // A cycle stopped by a rate limit says so first: the rule of max_failures reads it there.
    let limited_stop = stopped_by.as_ref().is_some_and(|(_, _, limited)| *limited);
    let mut note = String::new();
    if let (true, Some((_, text))) = (limited_stop, &paused) {
        note.push_str(text);
        note.push_str("; ");
    }
    if let Some(n) = &spec.note {
        note.push_str(n);
        note.push_str("; ");
    }
    note.push_str(&counts.describe());
    if let Some((mode, s, _)) = &stopped_by {
        note.push_str(&format!("; stopped by {mode} ({s})"));
    }
    if let (false, Some((_, text))) = (limited_stop, &paused) {
        note.push_str("; ");
        note.push_str(text);
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
    cycle_row.cost_usd = cx.cost;
    let counts_as_failure = cycle_row.counts_as_failure();
    if !cx.updates.is_empty() {
        recorder.memory_detached(std::mem::take(&mut cx.updates), cx.memory_limits);
    }
    let cost_usd = cx.cost;
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
        cost_usd,
        paused_until: paused.map(|(until, _)| until),
    })
}

/// How a mode ended: the status of its last run, and the pause its rate limit asks for when
/// every argv it tried was limited.
#[derive(Debug, Clone, Copy)]
struct ModeEnd {
    status: Status,
    limited: Option<DateTime<Utc>>,
}

/// A cycle as it runs: what every mode run needs, and what the runs leave for the later ones.
struct Running<'a> {
    spec: &'a CycleSpec,
    recorder: &'a Recorder,
    cancel: &'a CancellationToken,
    inst: &'a Instance,
    cycle: &'a str,
    run_dir: &'a Path,
    memory_limits: MemoryLimits,
    task: &'a str,
    todo: &'a Todo,
    previous: Option<&'a Handoff>,
    /// The end of a todo run's time.
    deadline: Option<tokio::time::Instant>,
    handoffs: Vec<Handoff>,
    /// System Updates entries of this cycle, written together before its cycle row.
    updates: Vec<(Section, String)>,
    /// The sum of the costs the runs reported; none reported, none known.
    cost: Option<f64>,
    /// The earliest end of the pauses the cycle's rate-limited modes ask for.
    paused_until: Option<DateTime<Utc>>,
    limited_modes: Vec<String>,
}

impl Running<'_> {
    /// One mode: its attempts (`retries`), each followed by the mode's `fallback` argvs, in
    /// order, while the agent is rate limited.
    async fn run_mode<P: FnMut(CycleEvent<'_>)>(
        &mut self,
        mode: &Mode,
        progress: &mut P,
    ) -> Result<ModeEnd, CycleError> {
        let cwd = &self.spec.schedule.cwd;
        let mut attempt = 0;
        let mut end = ModeEnd {
            status: Status::Ok,
            limited: None,
        };
        for _ in 0..=mode.retries {
            attempt += 1;
            let Some((written, argv)) = resolve_command(mode, cwd) else {
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
                self.not_run(mode, attempt, status, &note, progress).await?;
                return Ok(ModeEnd {
                    status,
                    limited: None,
                });
            };
            end = self
                .run_argv(mode, written, argv, attempt, None, progress)
                .await?;
            if let Some(first) = end.limited {
                let mut pause = first;
                let total = mode.fallback.len();
                for (i, fallback) in mode.fallback.iter().enumerate() {
                    attempt += 1;
                    let label = format!("fallback {} of {total}", i + 1);
                    let Some(argv) = crate::program::resolve_argv(fallback, cwd) else {
                        let note = format!("{label} not installed: {}", fallback[0]);
                        self.not_run(mode, attempt, Status::Skipped, &note, progress)
                            .await?;
                        continue;
                    };
                    end = self
                        .run_argv(mode, fallback, argv, attempt, Some(&label), progress)
                        .await?;
                    match end.limited {
                        Some(until) => pause = pause.min(until),
                        None => break,
                    }
                }
                if end.limited.is_some() || end.status == Status::Skipped {
                    // Every argv tried was limited (a fallback not installed changes nothing).
                    end = ModeEnd {
                        status: Status::Failed,
                        limited: Some(pause),
                    };
                }
            }
            let retryable =
                matches!(end.status, Status::Failed | Status::Timeout) && end.limited.is_none();
            if !retryable || self.cancel.is_cancelled() {
                break;
            }
        }
        if let Some(until) = end.limited {
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.min(until)));
            self.limited_modes.push(mode.slug.clone());
        }
        Ok(end)
    }

    /// What is left of the day's budget for this run: the allowance the cycle started with,
    /// less what its runs have cost so far.
    fn budget_left(&self) -> Option<f64> {
        self.spec
            .allowance
            .map(|a| (a.left_usd - self.cost.unwrap_or(0.0)).max(0.0))
    }

    /// A mode attempt that did not run (its program is not installed, its budget is spent):
    /// its row and System Updates entry.
    async fn not_run<P: FnMut(CycleEvent<'_>)>(
        &mut self,
        mode: &Mode,
        attempt: u32,
        status: Status,
        note: &str,
        progress: &mut P,
    ) -> Result<(), CycleError> {
        let at = Utc::now();
        let row = row(
            self.spec, self.cycle, &mode.slug, attempt, status, at, at, None, note,
        );
        self.recorder.rows(vec![row]).await?;
        self.updates.push((
            Section::SystemUpdates,
            system_update(
                &self.spec.schedule.id,
                &mode.slug,
                at,
                status,
                Duration::ZERO,
                note,
            ),
        ));
        progress(CycleEvent::ModeFinished(&ModeReport {
            mode: mode.slug.clone(),
            attempt,
            status,
            duration: Duration::ZERO,
            note: note.to_string(),
        }));
        Ok(())
    }

    /// One child: `written` is the argv as the mode file gives it (it names the preset),
    /// `argv` the same with its program resolved. Writes the run's row, memory entries and
    /// handoffs.
    async fn run_argv<P: FnMut(CycleEvent<'_>)>(
        &mut self,
        mode: &Mode,
        written: &[String],
        argv: Vec<String>,
        attempt: u32,
        fallback: Option<&str>,
        progress: &mut P,
    ) -> Result<ModeEnd, CycleError> {
        let spec = self.spec;
        let left = self.budget_left();
        if let Some(allowance) = spec.allowance.filter(|a| a.enforced)
            && mode.is_agent()
            && left.is_some_and(|left| left <= 0.0)
        {
            let note = format!(
                "budget spent until {}: nothing left of today's budget",
                rfc3339(allowance.until)
            );
            self.not_run(mode, attempt, Status::Skipped, &note, progress)
                .await?;
            return Ok(ModeEnd {
                status: Status::Skipped,
                limited: None,
            });
        }
        let invocation = mode.invocation(written);
        let started_at = Utc::now();
        let mut timeout = mode
            .timeout
            .map_or(spec.schedule.timeout, |t| t.min(spec.schedule.timeout));
        if let Some(deadline) = self.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        let suffix = if attempt > 1 {
            format!(".attempt{attempt}")
        } else {
            String::new()
        };
        let prompt_file = self
            .run_dir
            .join(format!("{}{suffix}.prompt.md", mode.slug));
        let memory_text = std::fs::read_to_string(self.inst.memory()).unwrap_or_default();
        let open: Vec<&TodoItem> = self.todo.open_items().collect();
        let prompt_text = prompt::compose(&PromptParts {
            task: self.task,
            schedule: &spec.schedule.id,
            cycle: self.cycle,
            mode: &mode.slug,
            mode_name: &mode.name,
            attempt,
            priority: &spec.priority.to_string(),
            instructions: &mode.instructions,
            open_items: &open,
            memory: &memory_text,
            earlier: &self.handoffs,
            previous_cycle: self.previous,
        });
        // The preset's environment first: the schedule's and the mode's own win.
        let mut env: Vec<(String, String)> = invocation.env.clone();
        env.extend(
            spec.schedule
                .env
                .iter()
                .chain(&mode.env)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend([
            ("LOOP_CYCLE_ID".to_string(), self.cycle.to_string()),
            ("LOOP_SCHEDULE_ID".to_string(), spec.schedule.id.clone()),
            ("LOOP_MODE".to_string(), mode.slug.clone()),
            ("LOOP_ATTEMPT".to_string(), attempt.to_string()),
            (
                "LOOP_DIR".to_string(),
                self.inst.root().display().to_string(),
            ),
            (
                "LOOP_MEMORY_FILE".to_string(),
                self.inst.memory().display().to_string(),
            ),
            (
                "LOOP_TODO_FILE".to_string(),
                self.inst.todo().display().to_string(),
            ),
            ("LOOP_PRIORITY".to_string(), spec.priority.to_string()),
        ]);
        if let Some(left) = left {
            env.push(("LOOP_BUDGET_LEFT_USD".to_string(), dollars(left)));
        }
        let writes_file =
            invocation.prompt == PromptKind::File || argv.iter().any(|a| a == "{prompt_file}");
        if writes_file {
            env.push((
                "LOOP_PROMPT_FILE".to_string(),
                prompt_file.display().to_string(),
            ));
        }
        tracing::info!(schedule = %spec.schedule.id, cycle = %self.cycle, mode = %mode.slug, attempt, program = %argv[0], timeout = %short(timeout), "mode started");
        progress(CycleEvent::ModeStarted {
            cycle: self.cycle,
            mode: &mode.slug,
            attempt,
        });
        let run_spec = RunSpec {
            argv,
            cwd: spec.schedule.cwd.clone(),
            env,
            prompt: invocation.prompt,
            prompt_text,
            prompt_file,
            timeout,
            kill_grace: mode.kill_grace,
            log_path: self.run_dir.join(format!("{}{suffix}.log", mode.slug)),
            log_cap: runner::LOG_CAP,
            record: Some((
                self.inst.pids_dir(),
                crate::runner::record::Label {
                    schedule: spec.schedule.id.clone(),
                    cycle: self.cycle.to_string(),
                    mode: mode.slug.clone(),
                    attempt,
                    scheduled_at: spec.scheduled_at,
                    priority: spec.priority.to_string(),
                },
            )),
        };
        let mut protocol = ProtocolReader::default();
        let mut reader = invocation
            .output
            .map(|format| Reader::new(format, mode.price));
        let mut sinks: Vec<&mut dyn LineSink> = vec![&mut protocol];
        if let Some(reader) = reader.as_mut() {
            sinks.push(reader);
        }
        let result = runner::run(run_spec, &mut sinks, self.cancel.clone()).await;
        drop(sinks);
        let (judged, exit_code, finished_at) = match result {
            Ok(outcome) => {
                let report = reader.map(|r| r.finish(outcome.exit_code, Utc::now()));
                if let Some(report) = &report
                    && report.format != OutputFormat::Text
                {
                    protocol.read_text(&report.answer);
                }
                let judged = judge(
                    &outcome,
                    report.as_ref(),
                    protocol.blocked.as_deref(),
                    mode.expect_output,
                    fallback,
                    spec.schedule.rate_limit_pause,
                );
                (judged, outcome.exit_code, outcome.finished_at)
            }
            Err(err) => (
                Judged {
                    status: Status::Failed,
                    note: match fallback {
                        Some(label) => format!("{label}: {err}"),
                        None => err.to_string(),
                    },
                    cost: None,
                    limited: None,
                },
                None,
                Utc::now(),
            ),
        };
        let Judged {
            status,
            mut note,
            cost,
            limited,
        } = judged;
        // The handoff says more about a run than its exit status does.
        if status == Status::Ok
            && let Some(handoff) = protocol.handoff.last()
        {
            note.push_str(&format!("; HANDOFF: {handoff}"));
        }
        let duration = (finished_at - started_at).to_std().unwrap_or_default();
        let mut row = row(
            spec,
            self.cycle,
            &mode.slug,
            attempt,
            status,
            started_at,
            finished_at,
            exit_code,
            &note,
        );
        row.cost_usd = cost;
        if let Some(cost) = cost {
            *self.cost.get_or_insert(0.0) += cost;
        }
        // The mode's own MEMORY lines are committed before its row (the recorder keeps
        // that order), so a row on disk means its entries are too. The System Updates
        // entry, derived from the row, joins the cycle's others in one write at the end.
        let entries: Vec<(Section, String)> = std::mem::take(&mut protocol.memory)
            .into_iter()
            .map(|(section, text)| match section.parse::<Section>() {
                Ok(section) => (section, text),
                Err(_) => (Section::SystemUpdates, format!("[{section}] {text}")),
            })
            .collect();
        if !entries.is_empty() {
            self.recorder.memory_detached(entries, self.memory_limits);
        }
        self.recorder.rows(vec![row]).await?;
        self.updates.push((
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
        for text in std::mem::take(&mut protocol.handoff) {
            self.handoffs.push(Handoff {
                mode: mode.slug.clone(),
                cycle: self.cycle.to_string(),
                text,
            });
        }
        tracing::info!(schedule = %spec.schedule.id, cycle = %self.cycle, mode = %mode.slug, attempt, status = %status, duration = %short(duration), "mode finished");
        progress(CycleEvent::ModeFinished(&ModeReport {
            mode: mode.slug.clone(),
            attempt,
            status,
            duration,
            note,
        }));
        Ok(ModeEnd { status, limited })
    }
}

/// A run's status and note, from the runner's outcome and, for an agent, what it said.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    status: Status,
    note: String,
    cost: Option<f64>,
    /// A rate limit: when the schedule may try again (the agent's reset, else
    /// `rate_limit_pause` after the run).
    limited: Option<DateTime<Utc>>,
}

/// Judges one run (SPEC §8). A timeout, a stop or a `BLOCKED` line wins; then what the agent
/// said: its own error (even on exit 0) or rate limit fails the run with its text first in
/// the note, and `expect_output` makes silence a failure. Without an agent report the exit
/// status decides, as for any command. `blocked` is the first BLOCKED reason, from stdout or
/// from the agent's answer.
fn judge(
    outcome: &RunOutcome,
    report: Option<&AgentReport>,
    blocked: Option<&str>,
    expect_output: bool,
    fallback: Option<&str>,
    rate_limit_pause: Duration,
) -> Judged {
    let ran = match outcome.status {
        RunStatus::Ok => Status::Ok,
        RunStatus::Failed => Status::Failed,
        RunStatus::Timeout => Status::Timeout,
        RunStatus::Blocked => Status::Blocked,
        RunStatus::Interrupted => Status::Interrupted,
    };
    let mut limited = None;
    let (status, headline) = match (ran, report) {
        (Status::Timeout | Status::Interrupted | Status::Blocked, _) => (ran, None),
        (_, _) if blocked.is_some() => (
            Status::Blocked,
            Some(match blocked {
                Some(reason) if !reason.is_empty() => format!("blocked: {reason}"),
                _ => "blocked (no reason given)".to_string(),
            }),
        ),
        (Status::Ok, None) if expect_output && outcome.output_bytes == 0 => {
            (Status::Failed, Some("no output".to_string()))
        }
        (_, None) => (ran, None),
        (_, Some(report)) => match &report.verdict {
            Verdict::Ok => (ran, None),
            Verdict::Failed { error } => (Status::Failed, Some(error.clone())),
            Verdict::RateLimited { until, .. } => {
                let end = outcome.finished_at
                    + TimeDelta::from_std(rate_limit_pause).unwrap_or(TimeDelta::minutes(15));
                limited = Some(until.filter(|u| *u > outcome.finished_at).unwrap_or(end));
                (Status::Failed, Some(report.headline()))
            }
            Verdict::NoOutput if expect_output => (Status::Failed, Some("no output".to_string())),
            Verdict::NoOutput => (ran, None),
        },
    };
    let mut parts: Vec<String> = Vec::new();
    match headline {
        Some(headline) => {
            // The reader words a bad exit status itself when the agent said nothing clearer.
            let said_exit =
                headline.starts_with("exit status ") || headline.starts_with("ended by a signal");
            parts.push(headline);
            parts.extend(fallback.map(str::to_string));
            let ending = match (outcome.exit_code, outcome.signal) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(signal)) => format!(
                    "killed by {}",
                    nix::sys::signal::Signal::try_from(signal)
                        .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
                ),
                (None, None) => "ended without a status".to_string(),
            };
            if !said_exit {
                parts.push(format!("{ending}{}", outcome.summary_notes));
            } else if let Some(notes) = outcome.summary_notes.strip_prefix("; ") {
                parts.push(notes.to_string());
            }
        }
        None => {
            parts.extend(fallback.map(str::to_string));
            parts.push(outcome.summary.clone());
            // A run ended by its timeout or a stop still says what the agent last reported:
            // codex without a network retries for ever, and only its last error says why.
            if matches!(status, Status::Timeout | Status::Interrupted) {
                let said = report.and_then(|r| match &r.verdict {
                    Verdict::Failed { error }
                        if !error.starts_with("ended by a signal")
                            && !error.starts_with("exit status ") =>
                    {
                        // The timeout or the stop already says how it ended.
                        let error = error.strip_suffix("; ended by a signal").unwrap_or(error);
                        Some(format!("last reported: {error}"))
                    }
                    Verdict::RateLimited { .. } => Some(format!("last reported: {}", r.headline())),
                    _ => None,
                });
                parts.extend(said);
            }
        }
    }
    if let Some(report) = report.filter(|r| !r.note.is_empty()) {
        parts.push(report.note.clone());
    }
    Judged {
        status,
        note: parts.join("; "),
        cost: report.and_then(|r| r.cost_usd),
        limited,
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
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

/// The first of the mode's commands whose program is installed (see [`crate::program`]):
/// as written (it names the preset, see [`Mode::invocation`]) and with its program resolved.
/// `{prompt_file}` stays in place: the runner replaces it.
pub fn resolve_command<'m>(
    mode: &'m Mode,
    cwd: &std::path::Path,
) -> Option<(&'m [String], Vec<String>)> {
    mode.commands.iter().find_map(|argv| {
        crate::program::resolve_argv(argv, cwd).map(|resolved| (argv.as_slice(), resolved))
    })
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

    fn outcome(status: RunStatus, exit_code: Option<i32>, output_bytes: u64) -> RunOutcome {
        let at = "2026-12-02T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        RunOutcome {
            status,
            exit_code,
            signal: None,
            started_at: at,
            finished_at: at,
            duration: Duration::ZERO,
            log_bytes: output_bytes,
            output_bytes,
            truncated: false,
            summary: match exit_code {
                Some(code) => format!("exit {code}: {{\"type\":\"result\"}}"),
                None => "timed out after 1s; group terminated".into(),
            },
            summary_notes: String::new(),
        }
    }

    fn report(verdict: Verdict) -> AgentReport {
        AgentReport {
            verdict,
            answer: String::new(),
            tokens: None,
            cost_usd: Some(0.5),
            note: "tokens in/out/cached 10/2/0".into(),
            format: OutputFormat::ClaudeJson,
        }
    }

    const PAUSE: Duration = Duration::from_secs(900);

    /// The judgement of a run ended by its timeout, after the agent said `said`.
    fn timed_out(said: &AgentReport) -> Judged {
        judge(
            &outcome(RunStatus::Timeout, None, 10),
            Some(said),
            None,
            false,
            None,
            PAUSE,
        )
    }

    #[test]
    fn an_agent_error_fails_the_run_even_on_exit_0_with_its_text_first() {
        let failed = report(Verdict::Failed {
            error: "Not logged in".into(),
        });
        let judged = judge(
            &outcome(RunStatus::Ok, Some(0), 10),
            Some(&failed),
            None,
            false,
            None,
            PAUSE,
        );
        assert_eq!(judged.status, Status::Failed);
        assert_eq!(
            judged.note,
            "Not logged in; exit 0; tokens in/out/cached 10/2/0"
        );
        assert_eq!(judged.cost, Some(0.5));
        // A timeout says more than what the agent printed before it.
        let judged = timed_out(&failed);
        assert_eq!(judged.status, Status::Timeout);
        // ... and the agent's last error follows it (codex retrying for ever without a
        // network says why only there).
        assert_eq!(
            judged.note,
            "timed out after 1s; group terminated; last reported: Not logged in; tokens in/out/cached 10/2/0"
        );
        // The reader's own "ended by a signal" is not repeated.
        let retrying = report(Verdict::Failed {
            error: "codex ended with no turn outcome after: Reconnecting... waiting for network; ended by a signal".into(),
        });
        let judged = timed_out(&retrying);
        assert_eq!(
            judged.note,
            "timed out after 1s; group terminated; last reported: codex ended with no turn outcome after: Reconnecting... waiting for network; tokens in/out/cached 10/2/0"
        );
        // A reader that saw nothing but the signal adds nothing.
        let signal_only = report(Verdict::Failed {
            error: "ended by a signal".into(),
        });
        let judged = timed_out(&signal_only);
        assert_eq!(
            judged.note,
            "timed out after 1s; group terminated; tokens in/out/cached 10/2/0"
        );
    }

    #[test]
    fn a_rate_limit_without_a_reset_pauses_for_rate_limit_pause() {
        let limited = report(Verdict::RateLimited {
            until: None,
            message: "usage limit".into(),
        });
        let run = outcome(RunStatus::Failed, Some(1), 10);
        let judged = judge(
            &run,
            Some(&limited),
            None,
            false,
            Some("fallback 1 of 2"),
            PAUSE,
        );
        assert_eq!(judged.status, Status::Failed);
        assert_eq!(
            judged.note,
            "rate limited: usage limit; fallback 1 of 2; exit 1; tokens in/out/cached 10/2/0"
        );
        assert_eq!(
            judged.limited,
            Some(run.finished_at + TimeDelta::minutes(15))
        );
    }

    #[test]
    fn silence_fails_only_where_output_is_expected() {
        let silent = report(Verdict::NoOutput);
        let run = outcome(RunStatus::Ok, Some(0), 0);
        let judged = judge(&run, Some(&silent), None, true, None, PAUSE);
        assert_eq!(
            (judged.status, judged.note.as_str()),
            (
                Status::Failed,
                "no output; exit 0; tokens in/out/cached 10/2/0"
            )
        );
        assert_eq!(
            judge(&run, Some(&silent), None, false, None, PAUSE).status,
            Status::Ok
        );
        // A command that is no agent: nothing on stdout or stderr.
        let judged = judge(&run, None, None, true, None, PAUSE);
        assert_eq!(
            (judged.status, judged.note.as_str()),
            (Status::Failed, "no output; exit 0")
        );
        assert_eq!(
            judge(&run, None, None, false, None, PAUSE).status,
            Status::Ok
        );
    }

    #[test]
    fn blocked_in_the_answer_blocks_the_run() {
        let ok = report(Verdict::Ok);
        let judged = judge(
            &outcome(RunStatus::Ok, Some(0), 10),
            Some(&ok),
            Some("need a review"),
            false,
            None,
            PAUSE,
        );
        assert_eq!(judged.status, Status::Blocked);
        assert!(judged.note.starts_with("blocked: need a review; exit 0"));
    }

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
