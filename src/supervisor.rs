//! The service (`serve`): fires every enabled schedule on its cron instants, reloads on edits
//! and SIGHUP, escalates failing schedules, and stops cleanly.
//!
//! Rules:
//! - One service per directory: the service lock is held for the whole run.
//! - The timer is a deadline timer ([`WallTimer`]): the loop sleeps until the earliest due
//!   instant and nothing else; every due instant is dispatched once. `started_at` of a cycle is
//!   the moment it was dispatched, so lateness is `started_at - scheduled_at`.
//! - A fire while the schedule's previous cycle runs follows `overlap`: `skip` writes a
//!   `skipped` cycle row, `queue` runs once after (further fires meanwhile are skipped),
//!   `parallel` runs alongside. The per-schedule lock is the one `run-cycle` takes, so this holds
//!   across processes too. At most `max_concurrent_cycles` cycles run; the rest wait in due order.
//! - A reload keeps the last good configuration when the new one is invalid; unchanged
//!   schedules keep their next instant, changed ones are rescheduled from now, removed ones stop
//!   firing while their running cycles finish.
//! - After `max_failures` consecutive failed cycles a schedule escalates: an `escalated` row, a
//!   System Updates entry, `on_escalate` run once, and no fires until its entry changes or
//!   `resume ID`.
//! - SIGTERM/SIGINT: no new fires; running cycles get `shutdown_grace`, then their modes are
//!   terminated (TERM, then KILL after `kill_grace`) and recorded `interrupted`. A second
//!   SIGINT stops at once.
//! - Fires that never started (waiting for a slot or their jitter when the service stopped)
//!   get an `interrupted` cycle row, so every dispatched instant has exactly one cycle row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cli::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::{Config, Problems};
use crate::cycle::{self, CycleSpec, TIMING_FILE};
use crate::duration::short;
use crate::lock::{LockError, LockFile, STATE_DIR};
use crate::memory::Section;
use crate::notify::{self, Notifier};
use crate::recorder::Recorder;
use crate::runner::{self, PromptDelivery, RunSpec};
use crate::schedule::{Overlap, Schedule};
use crate::state::{self, Escalation, ReloadResult, ServiceState};
use crate::status::failure_streak;
use crate::timer::{Wake, WallTimer};
use crate::timing::{Priority, Status, TimingFile};
use crate::watch::Watcher;

/// Instants due for longer than this were missed (the clock jumped forward, the machine
/// slept), not merely reached late: the schedule fires once, for the latest of them, as cronie
/// runs a job once after a jump and as `catch_up` does after downtime.
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// A step of the clock back by more than this re-arms elapsed-time schedules.
const CLOCK_STEP_BACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
/// A step back by more than this re-arms every schedule, fixed-time ones too.
const LARGE_STEP_BACK: chrono::TimeDelta = chrono::TimeDelta::hours(3);
/// How long the watcher waits for a burst of file events to end before reloading.
const RELOAD_BATCH: Duration = Duration::from_millis(100);
const ESCALATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often, at most, the loop hands freed memory back (see [`crate::heap`]). Only a turn of
/// the loop trims, so an idle service still wakes for nothing.
const TRIM_EVERY: Duration = Duration::from_secs(60);

pub fn serve(dir: &Path) -> u8 {
    crate::heap::tune();
    let dir = match std::path::absolute(dir) {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("serve: {}: {err}", dir.display());
            return EXIT_INVALID;
        }
    };
    let mut service_lock = match LockFile::service(&dir) {
        Ok(lock) => lock,
        Err(err) => {
            eprintln!("serve: {err}");
            return EXIT_FAILED;
        }
    };
    let _service = match service_lock.try_exclusive() {
        Ok(guard) => guard,
        Err(LockError::Held { pid, .. }) => {
            eprintln!(
                "serve: a service already runs on {} (pid {pid})",
                dir.display()
            );
            return EXIT_INVALID;
        }
        Err(err) => {
            eprintln!("serve: {err}");
            return EXIT_FAILED;
        }
    };
    let config = match Config::load(&dir) {
        Ok(config) => config,
        Err(Problems(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("serve: {} problem(s); nothing started", problems.len());
            return EXIT_INVALID;
        }
    };
    let _registration = crate::leftover::register(&dir);
    for reaped in crate::leftover::reap(&dir) {
        eprintln!("serve: {reaped}");
    }
    // The loop runs on this thread, on a runtime of its own that drives only its timer,
    // signals, watcher and channels; cycles run on the worker runtime. Sharing one runtime,
    // the timer's readiness waited behind the workers' queue of cycle tasks (busy workers
    // look at the I/O driver only every few dozen polls): 160 ms p99 lateness at 1,000
    // schedules a second, against ~1 ms on a thread the cycles cannot delay.
    let workers = crate::cli::runtime();
    let Ok(loop_rt) = crate::cli::single_thread_runtime() else {
        eprintln!("serve: cannot start the scheduler's runtime");
        return EXIT_FAILED;
    };
    let handle = workers.handle().clone();
    let code = loop_rt.block_on(async move {
        match Supervisor::new(dir, config, handle) {
            Ok((supervisor, parts)) => supervisor.run(parts).await,
            Err(err) => {
                eprintln!("serve: {err}");
                EXIT_FAILED
            }
        }
    });
    // Dropping the runtime drops what still runs; the runner's guards kill their groups.
    workers.shutdown_timeout(Duration::from_secs(1));
    code
}

/// `resume ID`: lifts an escalation, and tells a running service to re-read it.
pub fn resume(dir: &Path, id: &str) -> u8 {
    if let Ok(config) = Config::load(dir) {
        if config.schedule(id).is_none() {
            let ids: Vec<&str> = config.schedules.iter().map(|s| s.id.as_str()).collect();
            eprintln!(
                "schedules.json has no schedule {id:?} (expected one of: {})",
                ids.join(", ")
            );
            return EXIT_INVALID;
        }
    }
    if !state::clear_escalation(dir, id) {
        println!("{id}: not escalated; nothing to resume");
        return EXIT_OK;
    }
    let entry = format!(
        "{} [{id}] resumed by `resume`",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    if let Err(err) = cycle::memory_store(dir).add(&[(Section::SystemUpdates, entry)]) {
        eprintln!("warning: memory entry not written: {err}");
    }
    if let Some(pid) = LockFile::service(dir).ok().and_then(|mut l| l.probe()) {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            );
            println!("{id}: resumed; the service (pid {pid}) fires it again from its next instant");
            return EXIT_OK;
        }
    }
    println!("{id}: resumed; no service runs on this directory");
    EXIT_OK
}

/// A schedule as the service tracks it.
struct Entry {
    schedule: Schedule,
    /// The next instant to fire; `None` when disabled, escalated or exhausted.
    next: Option<DateTime<Utc>>,
    /// Cycles dispatched and not yet done (waiting for a slot included).
    running: usize,
    /// An instant waiting for the running cycle to end (`overlap = "queue"`).
    queued: Option<DateTime<Utc>>,
    /// Consecutive failed cycles.
    streak: u32,
    escalated: bool,
    /// Cancelled when the schedule is disabled or removed: its fires still waiting for
    /// their jitter or a slot do not start (a cycle already running finishes).
    withdrawn: CancellationToken,
}

impl Entry {
    fn arm(&mut self, from: DateTime<Utc>) {
        self.next = if self.schedule.enabled && !self.escalated {
            self.schedule.cron.next_after(from, self.schedule.timezone)
        } else {
            None
        };
    }
}

/// A cycle task's report back to the loop.
struct Done {
    id: String,
    status: Option<Status>,
}

/// Sends a [`Done`] when dropped, so a task that panics or is cut short still frees its slot in
/// the loop's books.
struct DoneGuard {
    tx: mpsc::UnboundedSender<Done>,
    id: String,
    status: Option<Status>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Done {
            id: std::mem::take(&mut self.id),
            status: self.status,
        });
    }
}

/// What the loop owns outside the supervisor, so `select!` can borrow them apart from it.
struct Parts {
    done_rx: mpsc::UnboundedReceiver<Done>,
    timer: WallTimer,
}

struct Supervisor {
    dir: PathBuf,
    /// The runtime the cycles run on (the loop has a thread of its own).
    workers: tokio::runtime::Handle,
    recorder: Recorder,
    config: Arc<Config>,
    entries: BTreeMap<String, Entry>,
    slots: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Cancelled at the first stop signal: nothing new starts.
    stopping: CancellationToken,
    /// Cancelled when the grace is over: running modes are terminated.
    cancel: CancellationToken,
    notifier: Notifier,
    started_at: DateTime<Utc>,
    last_reload: Option<ReloadResult>,
    /// The clock at the last turn of the loop, to notice it stepping back.
    last_now: DateTime<Utc>,
    last_trim: std::time::Instant,
}

enum Step {
    Stop(&'static str),
    Reload(String),
    Done(Done),
    Due(std::io::Result<Wake>),
    Watchdog,
}

impl Supervisor {
    fn new(
        dir: PathBuf,
        config: Config,
        workers: tokio::runtime::Handle,
    ) -> std::io::Result<(Supervisor, Parts)> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let now = Utc::now();
        let rows = TimingFile::new(dir.join(TIMING_FILE))
            .read()
            .map(|log| log.rows)
            .unwrap_or_default();
        let mut entries = BTreeMap::new();
        for schedule in &config.schedules {
            let history: Vec<_> = rows
                .iter()
                .filter(|r| r.mode == "cycle" && r.schedule == schedule.id)
                .collect();
            let escalated = match state::escalation(&dir, &schedule.id) {
                Some(e) if e.fingerprint == schedule.fingerprint => true,
                Some(_) => {
                    state::clear_escalation(&dir, &schedule.id);
                    tracing::info!(schedule = %schedule.id, "escalation lifted: the entry changed");
                    false
                }
                None => false,
            };
            let mut entry = Entry {
                schedule: schedule.clone(),
                next: None,
                running: 0,
                queued: None,
                streak: failure_streak(history.iter().copied()),
                escalated,
                withdrawn: CancellationToken::new(),
            };
            entry.arm(now);
            entries.insert(schedule.id.clone(), entry);
        }
        let supervisor = Supervisor {
            recorder: Recorder::for_instance(&dir),
            slots: Arc::new(Semaphore::new(config.max_concurrent_cycles)),
            config: Arc::new(config),
            dir,
            workers,
            entries,
            done_tx,
            stopping: CancellationToken::new(),
            cancel: CancellationToken::new(),
            notifier: Notifier::from_env(),
            started_at: now,
            last_reload: None,
            last_now: now,
            last_trim: std::time::Instant::now(),
        };
        Ok((
            supervisor,
            Parts {
                done_rx,
                timer: WallTimer::new()?,
            },
        ))
    }

    async fn run(mut self, mut parts: Parts) -> u8 {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            eprintln!("serve: cannot install signal handlers");
            return EXIT_FAILED;
        };
        let mut watcher = match Watcher::new(&self.dir, RELOAD_BATCH) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the directory; reload with SIGHUP");
                None
            }
        };
        let watchdog = notify::watchdog_interval();
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3_600)));
        self.write_state();
        tracing::info!(dir = %self.dir.display(), schedules = self.entries.len(), "serving");
        self.catch_up(&rows_of(&self.dir));
        self.notify(self.notifier.ready(&self.status_line()));

        let signal_name = loop {
            let due = self.entries.values().filter_map(|e| e.next).min();
            if let Err(err) = parts.timer.arm(due) {
                tracing::error!(error = %err, "cannot arm the timer");
            }
            let step = tokio::select! {
                _ = term.recv() => Step::Stop("SIGTERM"),
                _ = int.recv() => Step::Stop("SIGINT"),
                _ = hup.recv() => Step::Reload("SIGHUP".into()),
                paths = next_change(&mut watcher) => Step::Reload(describe_paths(&self.dir, &paths)),
                Some(done) = parts.done_rx.recv() => Step::Done(done),
                wake = parts.timer.wait(), if due.is_some() => Step::Due(wake),
                _ = watchdog_tick.tick(), if watchdog.is_some() => Step::Watchdog,
            };
            self.observe_clock();
            let a_cycle_ended = matches!(step, Step::Done(_));
            match step {
                Step::Stop(name) => break name,
                Step::Reload(trigger) => self.reload(&trigger),
                Step::Done(done) => self.on_done(done),
                Step::Due(wake) => {
                    match wake {
                        Ok(Wake::ClockChanged) => {
                            tracing::warn!("the system clock was set; re-reading it")
                        }
                        Err(err) => tracing::error!(error = %err, "timer failed"),
                        Ok(Wake::Due) => {}
                    }
                    self.dispatch_due();
                    if self.notifier.enabled() {
                        self.notify(self.notifier.status(&self.status_line()));
                    }
                }
                Step::Watchdog => self.notify(self.notifier.watchdog()),
            }
            // Also when the last running cycle has ended: an idle service gives back what
            // its busiest moment needed.
            let idle = a_cycle_ended && self.entries.values().all(|e| e.running == 0);
            if idle || self.last_trim.elapsed() >= TRIM_EVERY {
                crate::heap::trim();
                self.last_trim = std::time::Instant::now();
            }
        };
        self.shutdown(signal_name, &mut parts, &mut int).await
    }

    /// Fires every instant that is due now.
    fn dispatch_due(&mut self) {
        let now = Utc::now();
        let due_ids: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due_ids {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let (cron, tz) = (entry.schedule.cron.clone(), entry.schedule.timezone);
            let Some(first) = entry.next else { continue };
            let mut instants = Vec::new();
            if now - first > STALE_AFTER {
                let latest = latest_at_or_before(&cron, tz, now, first).unwrap_or(first);
                tracing::warn!(
                    schedule = %id,
                    first_missed = %first,
                    fired_for = %latest,
                    "instants missed since {first} (the clock jumped forward or the machine slept); firing once, for the latest"
                );
                instants.push(latest);
                entry.next = cron.next_after(now, tz);
            } else {
                let mut at = Some(first);
                while let Some(t) = at.filter(|t| *t <= now) {
                    instants.push(t);
                    at = cron.next_after(t, tz);
                }
                entry.next = at;
            }
            for instant in instants {
                self.fire(&id, instant, now);
            }
        }
    }

    /// Notices a step of the system clock back. Fixed-time schedules wait for the clock to pass
    /// their next instant again (their instants already ran); elapsed-time schedules go on from
    /// the new time, as cronie runs wildcard jobs, so a clock correction never pauses a loop.
    fn observe_clock(&mut self) {
        let now = Utc::now();
        if now + CLOCK_STEP_BACK < self.last_now {
            let back = self.last_now - now;
            let mut rearmed = 0;
            for entry in self.entries.values_mut() {
                // Beyond three hours the clock was wrong, not adjusted (cronie's rule): every
                // schedule starts again from the new time, or a daily job set back by days
                // would stay silent until the clock caught up.
                if entry.next.is_some()
                    && (back > LARGE_STEP_BACK || !entry.schedule.cron.is_fixed_time())
                {
                    entry.arm(now);
                    rearmed += 1;
                }
            }
            tracing::warn!(
                back_ms = back.num_milliseconds(),
                rearmed,
                "the clock stepped back: elapsed-time schedules go on from now, fixed-time ones wait for the clock"
            );
        }
        self.last_now = now;
    }

    /// One fire of a schedule: run, queue or skip it.
    fn fire(&mut self, id: &str, instant: DateTime<Utc>, dispatched_at: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.running > 0 {
            let skip = match (entry.schedule.overlap, entry.queued.is_some()) {
                (Overlap::Skip, _) => Some("overlap skip: the previous cycle still runs"),
                (Overlap::Queue, true) => Some("overlap queue: a cycle is already queued"),
                _ => None,
            };
            if let Some(note) = skip {
                tracing::info!(schedule = %id, scheduled_at = %instant, "skipped: {note}");
                record_row(
                    &self.recorder,
                    &entry.schedule,
                    instant,
                    dispatched_at,
                    Status::Skipped,
                    note,
                );
                return;
            }
            if entry.schedule.overlap == Overlap::Queue {
                tracing::info!(schedule = %id, scheduled_at = %instant, "queued behind the running cycle");
                entry.queued = Some(instant);
                return;
            }
        }
        entry.running += 1;
        let schedule = entry.schedule.clone();
        let modes = schedule
            .modes
            .iter()
            .filter_map(|m| self.config.modes.get(m).cloned())
            .collect();
        let jitter = if schedule.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::random_range(0..=schedule.jitter.as_millis() as u64))
        };
        let spec = CycleSpec {
            dir: self.dir.clone(),
            schedule,
            modes,
            memory: self.config.memory,
            scheduled_at: Some(instant),
            priority: Priority::Schedule,
            todo_item: None,
            dispatched_at: Some(dispatched_at),
            note: (!jitter.is_zero()).then(|| format!("jitter {}", short(jitter))),
        };
        tracing::info!(schedule = %id, scheduled_at = %instant, late_ms = (dispatched_at - instant).num_milliseconds(), "fired");
        let guard = DoneGuard {
            tx: self.done_tx.clone(),
            id: id.to_string(),
            status: None,
        };
        self.workers.spawn(run_fire(
            spec,
            self.recorder.clone(),
            jitter,
            self.slots.clone(),
            Stops {
                stopping: self.stopping.clone(),
                cancel: self.cancel.clone(),
                withdrawn: entry.withdrawn.clone(),
            },
            guard,
        ));
    }

    fn on_done(&mut self, done: Done) {
        let Some(entry) = self.entries.get_mut(&done.id) else {
            return;
        };
        entry.running = entry.running.saturating_sub(1);
        match done.status {
            Some(Status::Failed | Status::Timeout | Status::Blocked) => entry.streak += 1,
            Some(Status::Ok) => entry.streak = 0,
            _ => {}
        }
        if entry.streak >= entry.schedule.max_failures && !entry.escalated {
            self.escalate(&done.id);
        }
        let Some(entry) = self.entries.get_mut(&done.id) else {
            return;
        };
        if let Some(instant) = entry.queued.take() {
            if !entry.escalated && !self.stopping.is_cancelled() {
                self.fire(&done.id, instant, Utc::now());
            }
        }
    }

    fn escalate(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let failures = entry.streak;
        entry.escalated = true;
        entry.next = None;
        if let Some(instant) = entry.queued.take() {
            record_row(
                &self.recorder,
                &entry.schedule,
                instant,
                Utc::now(),
                Status::Skipped,
                "not started: the schedule escalated while it was queued",
            );
        }
        entry.streak = 0;
        let schedule = entry.schedule.clone();
        tracing::warn!(schedule = %id, failures, "escalated: paused until its entry changes or `resume {id}`");
        let marker = Escalation {
            at: Utc::now(),
            failures,
            fingerprint: schedule.fingerprint.clone(),
        };
        if let Err(err) = state::mark_escalated(&self.dir, id, &marker) {
            tracing::error!(schedule = %id, error = %err, "cannot record the escalation");
        }
        let note = format!(
            "{failures} consecutive failed cycles; paused until its entry changes or `resume {id}`"
        );
        let recorder = self.recorder.clone();
        let limits = crate::memory::MemoryLimits {
            max_lines: self.config.memory.max_lines,
            target_lines: self.config.memory.target_lines,
        };
        let (row_schedule, row_note) = (schedule.clone(), note.clone());
        self.workers.spawn(async move {
            let now = Utc::now();
            let row = cycle::cycle_row(&row_schedule, None, now, Status::Escalated, &row_note);
            if let Err(err) = recorder.rows(vec![row]).await {
                tracing::error!(error = %err, "escalated row not written");
            }
            let entry = format!(
                "{} [{}] escalated: {row_note}",
                now.to_rfc3339_opts(SecondsFormat::Secs, true),
                row_schedule.id
            );
            if let Err(err) = recorder
                .memory(vec![(Section::SystemUpdates, entry)], limits)
                .await
            {
                tracing::error!(error = %err, "escalation memory entry not written");
            }
        });
        if let Some(argv) = schedule.on_escalate.clone() {
            self.workers.spawn(run_on_escalate(
                self.dir.clone(),
                schedule,
                argv,
                failures,
                self.cancel.clone(),
            ));
        }
    }

    fn reload(&mut self, trigger: &str) {
        self.notify(self.notifier.reloading());
        let now = Utc::now();
        match Config::load(&self.dir) {
            Ok(config) => {
                let (mut added, mut changed, mut resumed) = (0, 0, 0);
                let mut next_entries = BTreeMap::new();
                for schedule in &config.schedules {
                    match self.entries.remove(&schedule.id) {
                        Some(mut entry) if entry.schedule.fingerprint == schedule.fingerprint => {
                            entry.schedule = schedule.clone();
                            if entry.escalated
                                && state::escalation(&self.dir, &schedule.id).is_none()
                            {
                                entry.escalated = false;
                                entry.arm(now);
                                resumed += 1;
                                tracing::info!(schedule = %schedule.id, "resumed");
                            }
                            next_entries.insert(schedule.id.clone(), entry);
                        }
                        Some(mut entry) => {
                            if entry.escalated {
                                state::clear_escalation(&self.dir, &schedule.id);
                                entry.escalated = false;
                                entry.streak = 0;
                                tracing::info!(schedule = %schedule.id, "escalation lifted: the entry changed");
                            }
                            entry.schedule = schedule.clone();
                            entry.arm(now);
                            changed += 1;
                            if !schedule.enabled {
                                withdraw(&self.recorder, &mut entry, now, "disabled");
                            }
                            tracing::info!(schedule = %schedule.id, next = ?entry.next, "rescheduled");
                            next_entries.insert(schedule.id.clone(), entry);
                        }
                        None => {
                            let escalated = state::escalation(&self.dir, &schedule.id)
                                .is_some_and(|e| e.fingerprint == schedule.fingerprint);
                            let mut entry = Entry {
                                schedule: schedule.clone(),
                                next: None,
                                running: 0,
                                queued: None,
                                streak: 0,
                                escalated,
                                withdrawn: CancellationToken::new(),
                            };
                            entry.arm(now);
                            added += 1;
                            tracing::info!(schedule = %schedule.id, next = ?entry.next, "added");
                            next_entries.insert(schedule.id.clone(), entry);
                        }
                    }
                }
                for (id, entry) in &mut self.entries {
                    tracing::info!(schedule = %id, "removed: no more fires; a running cycle finishes");
                    withdraw(&self.recorder, entry, now, "removed");
                }
                let removed = self.entries.len();
                self.entries = next_entries;
                if config.max_concurrent_cycles != self.config.max_concurrent_cycles {
                    // Running cycles keep their permits of the old pool; new fires use the new one.
                    self.slots = Arc::new(Semaphore::new(config.max_concurrent_cycles));
                }
                self.config = Arc::new(config);
                tracing::info!(
                    trigger,
                    added,
                    changed,
                    removed,
                    resumed,
                    schedules = self.entries.len(),
                    "reloaded"
                );
                self.last_reload = Some(ReloadResult {
                    at: now,
                    trigger: trigger.to_string(),
                    ok: true,
                    problems: Vec::new(),
                });
            }
            Err(Problems(problems)) => {
                for p in &problems {
                    tracing::error!(trigger, "{p}");
                }
                tracing::error!(
                    trigger,
                    problems = problems.len(),
                    "reload rejected; the last good configuration keeps running"
                );
                self.last_reload = Some(ReloadResult {
                    at: now,
                    trigger: trigger.to_string(),
                    ok: false,
                    problems: problems.iter().map(ToString::to_string).collect(),
                });
            }
        }
        self.write_state();
        self.notify(self.notifier.ready(&self.status_line()));
    }

    /// `catch_up = true`: the last instant missed while the service was down runs once.
    fn catch_up(&mut self, rows: &[crate::timing::Row]) {
        let now = Utc::now();
        let ids: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.schedule.catch_up && e.next.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let entry = &self.entries[&id];
            let last = rows
                .iter()
                .filter(|r| r.schedule == id && r.mode == "cycle")
                .filter_map(|r| r.scheduled_at)
                .max();
            let Some(last) = last else { continue };
            let missed = entry
                .schedule
                .cron
                .next_after(last, entry.schedule.timezone)
                .filter(|t| *t <= now)
                .and_then(|first| {
                    latest_at_or_before(&entry.schedule.cron, entry.schedule.timezone, now, first)
                });
            if let Some(instant) = missed {
                tracing::info!(schedule = %id, scheduled_at = %instant, "catch-up: firing the instant missed while the service was down");
                self.fire(&id, instant, now);
            }
        }
    }

    async fn shutdown(
        mut self,
        signal_name: &str,
        parts: &mut Parts,
        int: &mut tokio::signal::unix::Signal,
    ) -> u8 {
        self.stopping.cancel();
        self.notify(self.notifier.stopping());
        let grace = self.config.shutdown_grace;
        tracing::info!(signal = signal_name, running = self.running(), grace = %short(grace), "stopping: no new fires");
        let now = Utc::now();
        for entry in self.entries.values_mut() {
            if let Some(instant) = entry.queued.take() {
                record_row(
                    &self.recorder,
                    &entry.schedule,
                    instant,
                    now,
                    Status::Interrupted,
                    "not started: the service stopped while it was queued",
                );
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut forced = false;
        while self.running() > 0 {
            tokio::select! {
                Some(done) = parts.done_rx.recv() => self.count_done(done),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = int.recv() => { forced = true; break; }
            }
        }
        if self.running() > 0 {
            tracing::warn!(
                running = self.running(),
                "grace over: terminating the running modes"
            );
            self.cancel.cancel();
            let longest_grace = self
                .config
                .modes
                .values()
                .map(|m| m.kill_grace)
                .max()
                .unwrap_or_default();
            let deadline = tokio::time::Instant::now() + longest_grace + Duration::from_secs(5);
            while !forced && self.running() > 0 {
                tokio::select! {
                    Some(done) = parts.done_rx.recv() => self.count_done(done),
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = int.recv() => forced = true,
                }
            }
        }
        if forced {
            self.cancel.cancel();
            let killed = crate::leftover::kill_own(&self.dir);
            tracing::warn!(
                running = self.running(),
                killed,
                "second SIGINT: killed every running mode at once"
            );
            // The runners see their groups die and write the rows; that takes moments.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while self.running() > 0 {
                tokio::select! {
                    Some(done) = parts.done_rx.recv() => self.count_done(done),
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        self.recorder.flush().await;
        tracing::info!(left = self.running(), "stopped");
        EXIT_OK
    }

    fn count_done(&mut self, done: Done) {
        if let Some(entry) = self.entries.get_mut(&done.id) {
            entry.running = entry.running.saturating_sub(1);
        }
    }

    fn running(&self) -> usize {
        self.entries.values().map(|e| e.running).sum()
    }

    fn status_line(&self) -> String {
        let armed = self.entries.values().filter(|e| e.next.is_some()).count();
        let next = self
            .entries
            .iter()
            .filter_map(|(id, e)| e.next.map(|t| (t, id)))
            .min();
        let mut line = format!("{} schedules ({armed} armed)", self.entries.len());
        if let Some((at, id)) = next {
            line.push_str(&format!(
                "; next {id} at {}",
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        if matches!(&self.last_reload, Some(r) if !r.ok) {
            line.push_str("; last reload rejected (see `status`)");
        }
        line
    }

    fn write_state(&self) {
        let state = ServiceState {
            pid: std::process::id(),
            started_at: self.started_at,
            reload: self.last_reload.clone(),
        };
        if let Err(err) = state::write_service(&self.dir, &state) {
            tracing::warn!(error = %err, "cannot write the service state");
        }
    }

    fn notify(&self, result: std::io::Result<()>) {
        match result {
            Ok(()) => {}
            // The manager's queue is full: the message is dropped, the loop goes on.
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!("sd_notify message dropped: the receiver is not reading")
            }
            Err(err) => tracing::warn!(error = %err, "sd_notify failed"),
        }
    }
}

/// A schedule disabled or removed by a reload: its queued instant and its fires still waiting
/// for their jitter or a slot do not start; each gets a `skipped` row.
fn withdraw(recorder: &Recorder, entry: &mut Entry, now: DateTime<Utc>, how: &str) {
    entry.withdrawn.cancel();
    entry.withdrawn = CancellationToken::new();
    if let Some(instant) = entry.queued.take() {
        record_row(
            recorder,
            &entry.schedule,
            instant,
            now,
            Status::Skipped,
            &format!("not started: the schedule was {how} while it was queued"),
        );
    }
}

/// What ends a dispatched fire early.
struct Stops {
    /// The service stops: fires not started yet are `interrupted`.
    stopping: CancellationToken,
    /// Running cycles are cut short (shutdown grace over).
    cancel: CancellationToken,
    /// The schedule was disabled or removed: fires not started yet are `skipped`.
    withdrawn: CancellationToken,
}

/// Runs one dispatched fire: jitter, a free slot, the schedule's lock, the cycle.
async fn run_fire(
    spec: CycleSpec,
    recorder: Recorder,
    jitter: Duration,
    slots: Arc<Semaphore>,
    stops: Stops,
    mut done: DoneGuard,
) {
    let Stops {
        stopping,
        cancel,
        withdrawn,
    } = stops;
    let instant = spec.scheduled_at.unwrap_or_else(Utc::now);
    let not_started = |spec: &CycleSpec, why: &str| {
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %instant, "not started: {why}");
        let dispatched_at = spec.dispatched_at.unwrap_or(instant);
        record_row(
            &recorder,
            &spec.schedule,
            instant,
            dispatched_at,
            Status::Interrupted,
            &format!("not started: {why}"),
        );
    };
    let skipped = |spec: &CycleSpec, done: &mut DoneGuard, note: &str| {
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %instant, "skipped: {note}");
        record_row(
            &recorder,
            &spec.schedule,
            instant,
            spec.dispatched_at.unwrap_or(instant),
            Status::Skipped,
            note,
        );
        done.status = Some(Status::Skipped);
    };
    let withdrawn_row = |spec: &CycleSpec, done: &mut DoneGuard| {
        skipped(
            spec,
            done,
            "not started: the schedule was disabled or removed while the fire waited",
        )
    };
    if !jitter.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(jitter) => {}
            () = stopping.cancelled() => return not_started(&spec, "the service stopped during the jitter"),
            () = withdrawn.cancelled() => return withdrawn_row(&spec, &mut done),
        }
    }
    let _permit = tokio::select! {
        biased;
        () = stopping.cancelled() => return not_started(&spec, "the service stopped while it waited for a slot"),
        () = withdrawn.cancelled() => return withdrawn_row(&spec, &mut done),
        permit = slots.acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return not_started(&spec, "the slot pool closed"),
        },
    };
    if stopping.is_cancelled() {
        return not_started(&spec, "the service is stopping");
    }
    let mut lock = match LockFile::schedule(&spec.dir, &spec.schedule.id) {
        Ok(lock) => lock,
        Err(err) => {
            tracing::error!(schedule = %spec.schedule.id, error = %err, "cannot open the schedule lock");
            done.status = Some(Status::Failed);
            return;
        }
    };
    let parallel = spec.schedule.overlap == Overlap::Parallel;
    if spec.schedule.overlap == Overlap::Queue {
        // Another process (a `run-cycle`) holds the schedule: wait for it, as `queue` says.
        while lock.probe().is_some() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = stopping.cancelled() => return not_started(&spec, "the service stopped while the schedule was busy"),
                () = withdrawn.cancelled() => return withdrawn_row(&spec, &mut done),
            }
        }
    }
    let held = match lock.try_cycle(parallel) {
        Ok(held) => held,
        Err(LockError::Held { pid, .. }) => {
            let note = format!(
                "overlap {}: a cycle of this schedule runs in pid {pid}",
                spec.schedule.overlap
            );
            skipped(&spec, &mut done, &note);
            return;
        }
        Err(err) => {
            tracing::error!(schedule = %spec.schedule.id, error = %err, "cannot take the schedule lock");
            done.status = Some(Status::Failed);
            return;
        }
    };
    let id = spec.schedule.id.clone();
    match cycle::run(spec, &recorder, cancel, |_| {}).await {
        Ok(outcome) => done.status = Some(outcome.status),
        Err(err) => {
            tracing::error!(schedule = %id, error = %err, "cycle failed to record");
            done.status = Some(Status::Failed);
        }
    }
    drop(held);
}

/// Runs a schedule's `on_escalate` argv once, in its own process group, with a time limit.
async fn run_on_escalate(
    dir: PathBuf,
    schedule: Schedule,
    argv: Vec<String>,
    failures: u32,
    cancel: CancellationToken,
) {
    let program = argv[0].clone();
    let Ok(resolved) = which::which_in(&program, std::env::var_os("PATH"), &schedule.cwd) else {
        tracing::error!(schedule = %schedule.id, program, "on_escalate: program not found");
        return;
    };
    let mut argv = argv;
    argv[0] = resolved.display().to_string();
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let spec = RunSpec {
        argv,
        cwd: schedule.cwd.clone(),
        env: vec![
            ("LOOP_SCHEDULE_ID".into(), schedule.id.clone()),
            ("LOOP_DIR".into(), dir.display().to_string()),
            ("LOOP_FAILURES".into(), failures.to_string()),
        ],
        prompt: PromptDelivery::None,
        prompt_text: String::new(),
        prompt_file: dir
            .join(STATE_DIR)
            .join("runs")
            .join(format!("{stamp}-escalate-{}.prompt.md", schedule.id)),
        timeout: ESCALATE_TIMEOUT,
        kill_grace: Duration::from_secs(5),
        log_path: dir
            .join(STATE_DIR)
            .join("runs")
            .join(format!("{stamp}-escalate-{}.log", schedule.id)),
        log_cap: runner::LOG_CAP,
        record: None,
    };
    // Read as a mode's output is, so that its status says `blocked` the same way.
    let mut protocol = crate::protocol::ProtocolReader::default();
    match runner::run(spec, &mut [&mut protocol], cancel).await {
        Ok(outcome) => {
            tracing::info!(schedule = %schedule.id, status = %outcome.status.as_str(), summary = %outcome.summary, "on_escalate ran")
        }
        Err(err) => {
            tracing::error!(schedule = %schedule.id, error = %err, "on_escalate failed to start")
        }
    }
}

/// The latest instant of `cron` at or before `now`, not before `floor`. Searches windows of
/// growing size back from `now`, so a per-second schedule after a day of downtime costs a
/// minute's worth of steps, not a day's.
fn latest_at_or_before(
    cron: &crate::cron::Cron,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    floor: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    const WINDOWS: [i64; 6] = [
        60,
        3_600,
        86_400,
        31 * 86_400,
        366 * 86_400,
        5 * 366 * 86_400,
    ];
    for window in WINDOWS {
        let start = (now - chrono::TimeDelta::seconds(window))
            .max(floor - chrono::TimeDelta::nanoseconds(1));
        let latest = cron
            .iter_after(start, tz)
            .take(100_000)
            .take_while(|t| *t <= now)
            .last();
        if latest.is_some() || start < floor {
            return latest;
        }
    }
    None
}

/// Queues one cycle row; the recorder commits it with the others of its moment.
fn record_row(
    recorder: &Recorder,
    schedule: &Schedule,
    instant: DateTime<Utc>,
    dispatched_at: DateTime<Utc>,
    status: Status,
    note: &str,
) {
    recorder.rows_detached(vec![cycle::cycle_row(
        schedule,
        Some(instant),
        dispatched_at,
        status,
        note,
    )]);
}

fn rows_of(dir: &Path) -> Vec<crate::timing::Row> {
    TimingFile::new(dir.join(TIMING_FILE))
        .read()
        .map(|log| log.rows)
        .unwrap_or_default()
}

async fn next_change(watcher: &mut Option<Watcher>) -> Vec<PathBuf> {
    match watcher {
        Some(watcher) => watcher.changed().await,
        None => std::future::pending().await,
    }
}

fn describe_paths(dir: &Path, paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
        .collect();
    format!("{} changed", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::Cron;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn latest_missed_instant_is_found_without_walking_the_whole_gap() {
        let every_second = Cron::parse("* * * * * *").unwrap();
        let now = at("2026-11-21T12:00:00.500Z");
        let floor = at("2026-11-20T12:00:00Z");
        assert_eq!(
            latest_at_or_before(&every_second, chrono_tz::UTC, now, floor),
            Some(at("2026-11-21T12:00:00Z"))
        );
        let hourly = Cron::parse("@hourly").unwrap();
        assert_eq!(
            latest_at_or_before(&hourly, chrono_tz::UTC, now, floor),
            Some(at("2026-11-21T12:00:00Z"))
        );
        let yearly = Cron::parse("0 0 1 1 *").unwrap();
        assert_eq!(
            latest_at_or_before(&yearly, chrono_tz::UTC, now, at("2025-06-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:00Z"))
        );
        // Nothing at or after the floor.
        assert_eq!(
            latest_at_or_before(&yearly, chrono_tz::UTC, now, at("2026-02-01T00:00:00Z")),
            None
        );
    }
}
