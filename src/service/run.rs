//! The service's loop: waits for the next event, asks the [`Core`] what to do, does it.
//!
//! Events: the deadline timer ([`WallTimer`]: sleeps until the earliest due instant and
//! nothing else), SIGTERM/SIGINT (stop), SIGHUP and the watcher (reload), a cycle's end, the
//! watchdog tick. Actions are performed here: cycles are spawned on the worker runtime,
//! rows go to the recorder, markers to `.loop-orchestrator/`. `started_at` of a cycle is the
//! moment it was dispatched, so lateness is `started_at - scheduled_at`.
//!
//! With metrics, the loop publishes its core's state to the gauges after each turn (one
//! schedule when a cycle of it ended, all of them otherwise), stamps the turn for
//! `/healthz`, and is ready for `/readyz` from READY until the stop begins.
//!
//! Shutdown (SPEC §7): no new fires; running cycles get `shutdown_grace`, then their modes
//! are terminated (TERM, then KILL after `kill_grace`) and recorded `interrupted`. A second
//! SIGINT kills every running mode at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::core::{Action, Core, Done, Entry};
use super::fire::{self, DoneGuard, Stops};
use super::notify::{self, Notifier};
use super::timer::{Wake, WallTimer};
use super::watch::Watcher;
use crate::config::{Config, Problems};
use crate::cycle::CycleSpec;
use crate::duration::short;
use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::limits::InstanceBudget;
use crate::memory::{MemoryLimits, Section};
use crate::metrics::gauges::{Publisher, ScheduleState};
use crate::metrics::{FireStage, Metrics};
use crate::recorder::Recorder;
use crate::schedule::Schedule;
use crate::state::{self, Escalation, ReloadResult, ServiceState};
use crate::timing::{Priority, Status, TimingFile};

/// How long the watcher waits for a burst of file events to end before reloading.
const RELOAD_BATCH: Duration = Duration::from_millis(100);
/// How often, at most, the loop hands freed memory back (see [`crate::heap`]). Only a turn of
/// the loop trims, so an idle service still wakes for nothing.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// A started fire's report back to the loop.
pub struct Ended {
    pub id: String,
    pub done: Done,
}

pub struct Service {
    inst: Instance,
    /// The runtime the cycles run on (the loop has a thread of its own).
    workers: tokio::runtime::Handle,
    recorder: Recorder,
    config: Arc<Config>,
    core: Core,
    /// Per schedule: cancelled when it is disabled or removed, so its fires still waiting for
    /// their jitter or a slot do not start.
    withdrawn: HashMap<String, CancellationToken>,
    slots: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Ended>,
    done_rx: mpsc::UnboundedReceiver<Ended>,
    timer: WallTimer,
    /// Cancelled at the first stop signal: nothing new starts.
    stopping: CancellationToken,
    /// Cancelled when the grace is over: running modes are terminated.
    cancel: CancellationToken,
    notifier: Notifier,
    started_at: DateTime<Utc>,
    last_reload: Option<ReloadResult>,
    last_trim: std::time::Instant,
    /// With metrics: writes the core's state into the gauges.
    publisher: Option<Publisher>,
}

enum Step {
    Stop(&'static str),
    Reload(String),
    Ended(Ended),
    Due(std::io::Result<Wake>),
    Watchdog,
}

impl Service {
    pub fn new(
        inst: Instance,
        config: Config,
        recorder: Recorder,
        workers: tokio::runtime::Handle,
        metrics: Option<Arc<Metrics>>,
    ) -> std::io::Result<Service> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let now = Utc::now();
        let rows = rows_of(&inst);
        let markers = markers(&inst, &config.schedules);
        let (mut core, actions) = Core::new(&config.schedules, &rows, &markers, now);
        core.load_limits(
            &InstanceBudget::of(&config),
            &pauses(&inst, &config.schedules),
            Some(&rows),
            now,
        );
        if let Some(metrics) = &metrics {
            metrics.seed(&rows, config.schedules.iter().map(|s| s.id.as_str()));
            metrics.set_budgets(&config.schedules);
        }
        let mut service = Service {
            recorder,
            slots: Arc::new(Semaphore::new(config.max_concurrent_cycles)),
            config: Arc::new(config),
            inst,
            workers,
            core,
            withdrawn: HashMap::new(),
            done_tx,
            done_rx,
            timer: WallTimer::new()?,
            stopping: CancellationToken::new(),
            cancel: CancellationToken::new(),
            notifier: Notifier::from_env(),
            started_at: now,
            last_reload: None,
            last_trim: std::time::Instant::now(),
            publisher: metrics.map(Publisher::new),
        };
        service.perform(actions);
        service.publish(None);
        Ok(service)
    }

    pub async fn run(mut self) -> Result<Code, Error> {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return Err(Error::Failed(
                "serve: cannot install signal handlers".into(),
            ));
        };
        let mut watcher = match Watcher::new(&self.inst, RELOAD_BATCH) {
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
        tracing::info!(dir = %self.inst.root().display(), schedules = self.core.entries().count(), "serving");
        let actions = self.core.catch_up(&rows_of(&self.inst), Utc::now());
        self.perform(actions);
        self.publish(None);
        self.notify(self.notifier.ready(&self.status_line()));
        if let Some(metrics) = self.metrics() {
            metrics.health().set_ready(true);
        }

        let signal_name = loop {
            let due = self.core.next_due();
            if let Err(err) = self.timer.arm(due) {
                tracing::error!(error = %err, "cannot arm the timer");
            }
            if let Some(metrics) = self.metrics() {
                metrics.health().armed(due);
            }
            stall_for_tests();
            let step = tokio::select! {
                _ = term.recv() => Step::Stop("SIGTERM"),
                _ = int.recv() => Step::Stop("SIGINT"),
                _ = hup.recv() => Step::Reload("SIGHUP".into()),
                paths = next_change(&mut watcher) => Step::Reload(describe_paths(&self.inst, &paths)),
                Some(ended) = self.done_rx.recv() => Step::Ended(ended),
                wake = self.timer.wait(), if due.is_some() => Step::Due(wake),
                _ = watchdog_tick.tick(), if watchdog.is_some() => Step::Watchdog,
            };
            self.core.observe_clock(Utc::now());
            let a_cycle_ended = matches!(step, Step::Ended(_));
            match step {
                Step::Stop(name) => break name,
                Step::Reload(trigger) => self.reload(&trigger),
                Step::Ended(ended) => {
                    let actions = self.core.on_done(&ended.id, ended.done, Utc::now());
                    self.perform(actions);
                    self.publish(Some(&ended.id));
                }
                Step::Due(wake) => {
                    match wake {
                        Ok(Wake::ClockChanged) => {
                            tracing::warn!("the system clock was set; re-reading it")
                        }
                        Err(err) => tracing::error!(error = %err, "timer failed"),
                        Ok(Wake::Due) => {}
                    }
                    let actions = self.core.dispatch_due(Utc::now());
                    self.perform(actions);
                    self.publish(None);
                    if self.notifier.enabled() {
                        self.notify(self.notifier.status(&self.status_line()));
                    }
                }
                Step::Watchdog => self.notify(self.notifier.watchdog()),
            }
            if let Some(metrics) = self.metrics() {
                metrics.health().turned(Utc::now());
            }
            // Also when the last running cycle has ended: an idle service gives back what
            // its busiest moment needed.
            let idle = a_cycle_ended && self.core.running() == 0;
            if idle || self.last_trim.elapsed() >= TRIM_EVERY {
                crate::heap::trim();
                self.last_trim = std::time::Instant::now();
            }
        };
        self.shutdown(signal_name, &mut int).await
    }

    /// Does what the core decided.
    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start {
                    schedule,
                    instant,
                    dispatched_at,
                } => self.start(schedule, instant, dispatched_at),
                Action::Row {
                    schedule,
                    instant,
                    dispatched_at,
                    status,
                    note,
                } => self.recorder.rows_detached(vec![crate::cycle::cycle_row(
                    &schedule,
                    instant,
                    dispatched_at,
                    status,
                    &note,
                )]),
                Action::Escalate {
                    schedule,
                    failures,
                    at,
                    note,
                } => self.escalate(schedule, failures, at, note),
                Action::ClearEscalation { id } => {
                    state::clear_escalation(&self.inst, &id);
                }
                Action::Withdraw { id } => {
                    if let Some(token) = self.withdrawn.remove(&id) {
                        token.cancel();
                    }
                }
            }
        }
    }

    /// Spawns a started fire on the worker runtime.
    fn start(&mut self, schedule: Schedule, instant: DateTime<Utc>, dispatched_at: DateTime<Utc>) {
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
        let withdrawn = self
            .withdrawn
            .entry(schedule.id.clone())
            .or_default()
            .clone();
        let guard = DoneGuard::new(self.done_tx.clone(), schedule.id.clone());
        let stage = FireStage::dispatched(self.metrics());
        let spec = CycleSpec {
            inst: self.inst.clone(),
            schedule,
            modes,
            memory: self.config.memory,
            scheduled_at: Some(instant),
            priority: Priority::Schedule,
            todo_item: None,
            dispatched_at: Some(dispatched_at),
            note: (!jitter.is_zero()).then(|| format!("jitter {}", short(jitter))),
            // The fire task reads it from the files, under the schedule's lock.
            allowance: None,
        };
        self.workers.spawn(fire::run_fire(
            spec,
            self.recorder.clone(),
            jitter,
            self.slots.clone(),
            Stops {
                stopping: self.stopping.clone(),
                cancel: self.cancel.clone(),
                withdrawn,
            },
            InstanceBudget::of(&self.config),
            guard,
            stage,
        ));
    }

    fn escalate(&mut self, schedule: Schedule, failures: u32, at: DateTime<Utc>, note: String) {
        let marker = Escalation {
            at,
            failures,
            fingerprint: schedule.fingerprint.clone(),
        };
        if let Err(err) = state::mark_escalated(&self.inst, &schedule.id, &marker) {
            tracing::error!(schedule = %schedule.id, error = %err, "cannot record the escalation");
        }
        let recorder = self.recorder.clone();
        let limits = self.memory_limits();
        let row_schedule = schedule.clone();
        self.workers.spawn(async move {
            let now = Utc::now();
            let row = crate::cycle::cycle_row(&row_schedule, None, now, Status::Escalated, &note);
            if let Err(err) = recorder.rows(vec![row]).await {
                tracing::error!(error = %err, "escalated row not written");
            }
            let entry = format!(
                "{} [{}] escalated: {note}",
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
            self.workers.spawn(fire::run_on_escalate(
                self.inst.clone(),
                schedule,
                argv,
                failures,
                self.cancel.clone(),
            ));
        }
    }

    fn memory_limits(&self) -> MemoryLimits {
        MemoryLimits {
            max_lines: self.config.memory.max_lines,
            target_lines: self.config.memory.target_lines,
        }
    }

    fn reload(&mut self, trigger: &str) {
        self.notify(self.notifier.reloading());
        let now = Utc::now();
        match Config::load(self.inst.root()) {
            Ok(config) => {
                let markers = markers(&self.inst, &config.schedules);
                let (actions, summary) = self.core.reload(&config.schedules, &markers, now);
                self.core.load_limits(
                    &InstanceBudget::of(&config),
                    &pauses(&self.inst, &config.schedules),
                    None,
                    now,
                );
                self.perform(actions);
                self.publish(None);
                if let Some(metrics) = self.metrics() {
                    metrics.reloaded(true);
                    metrics.set_budgets(&config.schedules);
                }
                if config.metrics != self.config.metrics {
                    tracing::warn!(
                        "\"metrics\" changed in schedules.json; the metrics address changes at the next start"
                    );
                }
                if config.max_concurrent_cycles != self.config.max_concurrent_cycles {
                    // Running cycles keep their permits of the old pool; new fires use the new one.
                    self.slots = Arc::new(Semaphore::new(config.max_concurrent_cycles));
                }
                self.config = Arc::new(config);
                tracing::info!(
                    trigger,
                    added = summary.added,
                    changed = summary.changed,
                    removed = summary.removed,
                    resumed = summary.resumed,
                    schedules = self.core.entries().count(),
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
                if let Some(metrics) = self.metrics() {
                    metrics.reloaded(false);
                }
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

    async fn shutdown(
        mut self,
        signal_name: &str,
        int: &mut tokio::signal::unix::Signal,
    ) -> Result<Code, Error> {
        self.stopping.cancel();
        self.notify(self.notifier.stopping());
        if let Some(metrics) = self.metrics() {
            // No more fires: nothing is armed, so the grace is not mistaken for a stall.
            metrics.health().armed(None);
            metrics.health().set_ready(false);
        }
        let grace = self.config.shutdown_grace;
        tracing::info!(signal = signal_name, running = self.core.running(), grace = %short(grace), "stopping: no new fires");
        let actions = self.core.stop(Utc::now());
        self.perform(actions);
        let deadline = tokio::time::Instant::now() + grace;
        let mut forced = false;
        while self.core.running() > 0 {
            tokio::select! {
                Some(ended) = self.done_rx.recv() => self.core.count_done(&ended.id),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = int.recv() => { forced = true; break; }
            }
        }
        if self.core.running() > 0 {
            tracing::warn!(
                running = self.core.running(),
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
            while !forced && self.core.running() > 0 {
                tokio::select! {
                    Some(ended) = self.done_rx.recv() => self.core.count_done(&ended.id),
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = int.recv() => forced = true,
                }
            }
        }
        if forced {
            self.cancel.cancel();
            let killed = crate::leftover::kill_own(&self.inst);
            tracing::warn!(
                running = self.core.running(),
                killed,
                "second SIGINT: killed every running mode at once"
            );
            // The runners see their groups die and write the rows; that takes moments.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while self.core.running() > 0 {
                tokio::select! {
                    Some(ended) = self.done_rx.recv() => self.core.count_done(&ended.id),
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        self.recorder.flush().await;
        tracing::info!(left = self.core.running(), "stopped");
        Ok(Code::OK)
    }

    fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.publisher.as_ref().map(Publisher::metrics)
    }

    /// Writes the core's state into the gauges: of the schedule `only` (a cycle of it
    /// ended), or of every schedule.
    fn publish(&mut self, only: Option<&str>) {
        let Some(publisher) = &mut self.publisher else {
            return;
        };
        match only {
            Some(id) => {
                if let Some(entry) = self.core.entry(id) {
                    publisher.one(gauge_state(entry));
                }
            }
            None => publisher.all(self.core.entries().map(gauge_state)),
        }
    }

    fn status_line(&self) -> String {
        let mut line = self.core.status_line();
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
        if let Err(err) = state::write_service(&self.inst, &state) {
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

fn gauge_state(entry: &Entry) -> ScheduleState<'_> {
    ScheduleState {
        schedule: &entry.schedule,
        next: entry.next,
        streak: entry.streak,
        escalated: entry.escalated,
        queued: entry.queued.is_some(),
    }
}

/// A test hook: while the file named by `LOOP_ORCHESTRATOR_TEST_STALL_FILE` exists, the
/// loop's thread sleeps at the top of each turn, as a loop stuck in a blocking call would.
/// Only this thread stops: the cycles and the metrics server go on, so `/healthz` can be
/// seen to turn 503 and back. Read once; unset, it costs nothing.
fn stall_for_tests() {
    static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let file =
        FILE.get_or_init(|| std::env::var_os("LOOP_ORCHESTRATOR_TEST_STALL_FILE").map(Into::into));
    if let Some(file) = file {
        while file.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The escalation markers on disk for `schedules`.
fn markers(inst: &Instance, schedules: &[Schedule]) -> HashMap<String, Escalation> {
    schedules
        .iter()
        .filter_map(|s| Some((s.id.clone(), state::escalation(inst, &s.id)?)))
        .collect()
}

/// The rate-limit pauses on file for `schedules`.
fn pauses(inst: &Instance, schedules: &[Schedule]) -> HashMap<String, state::Pause> {
    schedules
        .iter()
        .filter_map(|s| Some((s.id.clone(), state::pause_of(inst, &s.id)?)))
        .collect()
}

fn rows_of(inst: &Instance) -> Vec<crate::timing::Row> {
    TimingFile::new(inst.timing())
        .read()
        .map(|log| log.rows)
        .unwrap_or_default()
}

async fn next_change(watcher: &mut Option<Watcher>) -> Vec<std::path::PathBuf> {
    match watcher {
        Some(watcher) => watcher.changed().await,
        None => std::future::pending().await,
    }
}

fn describe_paths(inst: &Instance, paths: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| inst.display(p).to_string()).collect();
    format!("{} changed", names.join(", "))
}
