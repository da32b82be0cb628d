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
//!
//! In a cluster (SPEC §11) the loop also listens to the node's events and the cluster's
//! notes ([`super::cluster`]): starts and instant rows go through claims, a lost lease stops
//! its cycle, a takeover writes the dead node's `interrupted` row and runs its `catch_up`
//! retry, escalations follow the cluster's, and on stop the node releases what it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cluster::{self, Claimer, EscalateRequest, Note, Pending, Registry};
use super::core::{Action, Core, Done, Entry};
use super::fire::{self, DoneGuard, Fire, Stops};
use super::notify::{self, Notifier};
use super::timer::{Wake, WallTimer};
use super::watch::Watcher;
use crate::cluster::{Event, Link, Node, Takeover};
use crate::config::{Config, Problems};
use crate::cycle::CycleSpec;
use crate::duration::short;
use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::limits::Hold;
use crate::limits::InstanceBudget;
use crate::memory::{MemoryLimits, Section};
use crate::metrics::gauges::{Publisher, ScheduleState};
use crate::metrics::{FireStage, Metrics};
use crate::recorder::Recorder;
use crate::schedule::Schedule;
use crate::state::{self, Escalation, ReloadResult, ServiceState};
use crate::timing::{Priority, Row, Status, TimingFile};

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
    /// The cluster node's side, when schedules.json has a `cluster` section.
    cluster: Option<ClusterSide>,
}

/// What the loop keeps of a cluster node.
struct ClusterSide {
    claimer: Claimer,
    events: mpsc::UnboundedReceiver<Event>,
    notes: mpsc::UnboundedReceiver<Note>,
    notes_tx: mpsc::UnboundedSender<Note>,
    escalate: mpsc::UnboundedSender<EscalateRequest>,
    /// Escalations asked for so far; a read of the cluster's older than this is stale.
    generation: u64,
    /// Claim tasks and other short cluster work, awaited before the node stops.
    tasks: JoinSet<()>,
    /// Ends the escalation sync.
    sync_cancel: CancellationToken,
    /// `catch_up` runs at the next read of the last claims (after start, after an outage).
    catch_up_pending: bool,
    /// The link as last written to service.json.
    link: Option<crate::state::ClusterLink>,
}

/// A node just started, with its events, for [`Service::new`].
pub type StartedNode = (Node, mpsc::UnboundedReceiver<Event>);

enum Step {
    Stop(&'static str),
    Reload(String),
    Ended(Ended),
    Due(std::io::Result<Wake>),
    Watchdog,
    Cluster(Event),
    Note(Note),
}

impl Service {
    pub fn new(
        inst: Instance,
        config: Config,
        recorder: Recorder,
        workers: tokio::runtime::Handle,
        metrics: Option<Arc<Metrics>>,
        node: Option<StartedNode>,
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
        let stopping = CancellationToken::new();
        let cancel = CancellationToken::new();
        let cluster = node.map(|(node, events)| {
            let (notes_tx, notes) = mpsc::unbounded_channel();
            let (escalate, requests) = mpsc::unbounded_channel();
            let sync_cancel = CancellationToken::new();
            let every = (node.lease() / 3).min(Duration::from_secs(5));
            workers.spawn(cluster::escalation_sync(
                node.clone(),
                requests,
                notes_tx.clone(),
                every,
                sync_cancel.clone(),
            ));
            ClusterSide {
                claimer: Claimer {
                    node,
                    registry: Registry::default(),
                    recorder: recorder.clone(),
                    notes: notes_tx.clone(),
                    stopping: stopping.clone(),
                    cancel: cancel.clone(),
                },
                events,
                notes,
                notes_tx,
                escalate,
                generation: 0,
                tasks: JoinSet::new(),
                sync_cancel,
                catch_up_pending: true,
                link: None,
            }
        });
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
            stopping,
            cancel,
            notifier: Notifier::from_env(),
            started_at: now,
            last_reload: None,
            last_trim: std::time::Instant::now(),
            publisher: metrics.map(Publisher::new),
            cluster,
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
        if self.cluster.is_some() {
            // In a cluster, `catch_up` also reads the claims (every node's instants): once
            // the node is connected.
            self.cluster_link_changed();
        } else {
            let actions = self.core.catch_up(&rows_of(&self.inst), Utc::now());
            self.perform(actions);
        }
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
                step = from_cluster(&mut self.cluster) => step,
            };
            self.core.observe_clock(Utc::now());
            let a_cycle_ended = matches!(step, Step::Ended(_));
            match step {
                Step::Stop(name) => break name,
                Step::Reload(trigger) => self.reload(&trigger),
                Step::Ended(ended) => {
                    self.share_pause(&ended);
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
                Step::Cluster(event) => self.cluster_event(event),
                Step::Note(note) => self.cluster_note(note),
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

    /// Does what the core decided. In a cluster, starts and the rows of instants wait for
    /// this node's claim of their instant (one claim per instant, off this thread).
    fn perform(&mut self, actions: Vec<Action>) {
        let mut claims: BTreeMap<DateTime<Utc>, Vec<Pending>> = BTreeMap::new();
        let clustered = self.cluster.is_some();
        for action in actions {
            match action {
                Action::Start {
                    schedule,
                    instant,
                    dispatched_at,
                } => {
                    let fire = self.prepare(schedule, instant, dispatched_at, 1);
                    if clustered {
                        claims
                            .entry(instant)
                            .or_default()
                            .push(Pending::Fire(Box::new(fire)));
                    } else {
                        self.workers.spawn(fire::run_fire(fire, None));
                    }
                }
                Action::Row {
                    schedule,
                    instant,
                    dispatched_at,
                    status,
                    note,
                } => {
                    let row =
                        crate::cycle::cycle_row(&schedule, instant, dispatched_at, status, &note);
                    match instant {
                        Some(instant) if clustered => {
                            claims.entry(instant).or_default().push(Pending::Row(row))
                        }
                        _ => self.recorder.rows_detached(vec![row]),
                    }
                }
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
        if let Some(side) = &mut self.cluster {
            for (instant, pending) in claims {
                side.tasks
                    .spawn_on(side.claimer.clone().claim(instant, pending), &self.workers);
            }
            while side.tasks.try_join_next().is_some() {}
        }
    }

    /// A fire ready to run on the worker runtime. `attempt`: the run of its instant (2 for a
    /// cluster's retry after a takeover).
    fn prepare(
        &mut self,
        schedule: Schedule,
        instant: DateTime<Utc>,
        dispatched_at: DateTime<Utc>,
        attempt: u32,
    ) -> Fire {
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
        let done = DoneGuard::new(self.done_tx.clone(), schedule.id.clone());
        let stage = FireStage::dispatched(self.metrics());
        // A cluster names the cycle before its claim, after the instant: each (schedule,
        // instant) is claimed once, and a retry runs under the same id.
        let cycle = self
            .cluster
            .as_ref()
            .map(|_| cluster::cycle_id(&schedule.id, instant));
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
            cycle,
            attempt,
            // The fire task reads it from the files, under the schedule's lock.
            allowance: None,
        };
        Fire {
            spec,
            recorder: self.recorder.clone(),
            jitter,
            slots: self.slots.clone(),
            stops: Stops {
                stopping: self.stopping.clone(),
                cancel: self.cancel.clone(),
                withdrawn,
            },
            budget: InstanceBudget::of(&self.config),
            done,
            stage,
        }
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
        if let Some(side) = &mut self.cluster {
            side.generation += 1;
            let _ = side.escalate.send(EscalateRequest {
                schedule: schedule.id.clone(),
                fingerprint: schedule.fingerprint.clone(),
                failures,
                generation: side.generation,
            });
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
                if let Some(side) = &self.cluster {
                    if config.cluster != self.config.cluster {
                        tracing::warn!(
                            "the cluster section changed; it takes effect at the next start of the service"
                        );
                    }
                    side.claimer.node.reconfigure(
                        crate::cluster::schedules_hash(&config.schedules),
                        cluster::catch_up_ids(&config),
                    );
                }
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
        if let Some(side) = self.cluster.take() {
            self.stop_node(side).await;
        }
        tracing::info!(left = self.core.running(), "stopped");
        Ok(Code::OK)
    }

    /// The node's part of a stop: claim work still in flight ends, its rows are written,
    /// then the node sends what it holds, releases its claims and marks itself stopped.
    async fn stop_node(&mut self, mut side: ClusterSide) {
        side.sync_cancel.cancel();
        let lease = side.claimer.node.lease();
        let drained = tokio::time::timeout(lease, async {
            while side.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("cluster: claim work still unanswered at stop; its claims expire");
            side.tasks.abort_all();
        }
        self.recorder.flush().await;
        let node = side.claimer.node.clone();
        drop(side);
        match self.workers.spawn(node.stop()).await {
            Ok(Ok(())) => tracing::info!("cluster: claims released, node stopped"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cluster: could not release the claims; they expire and survivors take them over")
            }
            Err(err) => tracing::warn!(error = %err, "cluster: the node's stop failed"),
        }
    }

    /// An event of the cluster node.
    fn cluster_event(&mut self, event: Event) {
        match event {
            Event::Up | Event::Down { .. } | Event::Refused { .. } | Event::Fatal { .. } => {
                if let Event::Fatal { error } = &event {
                    tracing::error!(%error, "cluster: this node stays away from the database; it claims nothing");
                }
                if matches!(event, Event::Down { .. } | Event::Refused { .. })
                    && let Some(side) = &mut self.cluster
                {
                    // Instants pass unclaimed while away: catch_up looks again on return.
                    side.catch_up_pending = true;
                }
                self.cluster_link_changed();
            }
            Event::LeaseLost { claims, reason } => {
                if let Some(side) = &self.cluster {
                    let stopped = side.claimer.registry.lost(&claims);
                    tracing::warn!(
                        claims = claims.len(),
                        stopped,
                        ?reason,
                        "cluster: leases lost; their cycles stop and are recorded interrupted"
                    );
                }
            }
            Event::TakenOver(takeover) => self.taken_over(takeover),
            Event::Mismatch { ours, majority } => {
                tracing::error!(%ours, ?majority, "cluster: this node's schedules differ from the other nodes'; see `status --cluster`");
            }
            Event::RowsDropped { count, resend } => {
                tracing::warn!(
                    count,
                    resend,
                    "cluster: rows dropped from the outbox while the database was away"
                );
            }
        }
    }

    /// The link to the database changed (or the service started): service.json, sd_notify
    /// `STATUS=`, and a read of the last claims for `catch_up` once connected.
    fn cluster_link_changed(&mut self) {
        let Some(side) = &mut self.cluster else {
            return;
        };
        let node = side.claimer.node.state();
        let (state, since, error) = match &node.link {
            Link::Connecting => ("connecting", None, None),
            Link::Up { since } => ("up", Some(*since), None),
            Link::Down { since, error } => ("down", Some(*since), Some(error.clone())),
            Link::Refused { instance_id } => (
                "refused",
                None,
                Some(format!("the node name is held by instance {instance_id}")),
            ),
        };
        side.link = Some(crate::state::ClusterLink {
            node: node.node.clone(),
            url: node.url.clone(),
            state: state.to_string(),
            since,
            error,
        });
        if matches!(node.link, Link::Up { .. }) && side.catch_up_pending {
            side.catch_up_pending = false;
            side.tasks.spawn_on(
                cluster::last_claimed(side.claimer.node.clone(), side.notes_tx.clone()),
                &self.workers,
            );
        }
        self.write_state();
        if self.notifier.enabled() {
            self.notify(self.notifier.status(&self.status_line()));
        }
    }

    /// A takeover pass of this node: the `interrupted` cycle rows of the dead node's claims,
    /// and the instants it claimed again (`catch_up`), run as attempt 2.
    fn taken_over(&mut self, takeover: Takeover) {
        let Some(side) = &self.cluster else {
            return;
        };
        let now = Utc::now();
        let me = side.claimer.node.name().to_string();
        let rows: Vec<Row> = takeover
            .interrupted
            .iter()
            .map(|taken| cluster::takeover_row(taken, &me, now))
            .collect();
        if !rows.is_empty() {
            self.recorder.rows_detached(rows);
        }
        for claim in takeover.retries {
            let id = claim.key.schedule.clone();
            let instant = claim.key.scheduled_at;
            tracing::info!(schedule = %id, scheduled_at = %instant, attempt = claim.key.attempt, "cluster: running again an instant interrupted on another node (catch_up)");
            let pending = match self.core.start_retry(&id) {
                Some(schedule) => {
                    self.publish(Some(&id));
                    Pending::Fire(Box::new(self.prepare(
                        schedule,
                        instant,
                        now,
                        claim.key.attempt,
                    )))
                }
                None => {
                    let (status, why) = if self.stopping.is_cancelled() {
                        (Status::Interrupted, "not started: the service is stopping")
                    } else {
                        (
                            Status::Skipped,
                            "not started: the schedule is unknown, disabled or escalated on this node",
                        )
                    };
                    Pending::Row(cluster::not_run_row(&claim, now, status, why))
                }
            };
            let Some(side) = &mut self.cluster else {
                return;
            };
            let claimer = side.claimer.clone();
            side.tasks.spawn_on(
                async move {
                    let mut claim = claim;
                    // Overlap holds for a retry too: ask who runs the schedule now.
                    claim.rules.running_on = claimer
                        .node
                        .running_elsewhere(&claim.key.schedule)
                        .await
                        .ok()
                        .flatten();
                    claimer.won(claim, pending);
                },
                &self.workers,
            );
        }
    }

    /// A note of the cluster's tasks.
    fn cluster_note(&mut self, note: Note) {
        let now = Utc::now();
        match note {
            Note::Escalations {
                escalations,
                generation,
            } => {
                let Some(side) = &self.cluster else { return };
                if generation < side.generation {
                    // Read before this node's latest escalation was written: stale.
                    return;
                }
                let by_id: HashMap<String, String> = escalations
                    .iter()
                    .map(|e| (e.schedule.clone(), e.fingerprint.clone()))
                    .collect();
                let sync = self.core.cluster_escalations(&by_id, now);
                self.perform(sync.actions);
                for id in &sync.paused {
                    if let Some(e) = escalations.iter().find(|e| &e.schedule == id) {
                        self.mark_paused_elsewhere(e);
                    }
                }
                if !sync.paused.is_empty() || !sync.resumed.is_empty() {
                    self.publish(None);
                    self.write_state();
                    if self.notifier.enabled() {
                        self.notify(self.notifier.status(&self.status_line()));
                    }
                }
            }
            Note::EscalatedElsewhere { escalation } => {
                let (paused, actions) = self.core.escalated_elsewhere(
                    &escalation.schedule,
                    &escalation.fingerprint,
                    now,
                );
                self.perform(actions);
                if paused {
                    self.mark_paused_elsewhere(&escalation);
                    self.publish(Some(&escalation.schedule));
                }
            }
            Note::LastClaimed(claimed) => {
                let mut last = claimed;
                for row in rows_of(&self.inst)
                    .iter()
                    .filter(|r| r.mode == crate::timing::CYCLE_MODE)
                {
                    if let Some(at) = row.scheduled_at {
                        let slot = last.entry(row.schedule.clone()).or_insert(at);
                        *slot = (*slot).max(at);
                    }
                }
                let actions = self.core.catch_up_from(&last, now);
                self.perform(actions);
                self.publish(None);
            }
        }
    }

    /// A cycle of this node was rate limited: the pause holds on every node (SPEC §8), so
    /// it goes to the cluster's `pauses` (a later pause in force is kept there). A hold the
    /// fire only found (on file or in the cluster) is not sent again.
    fn share_pause(&mut self, ended: &Ended) {
        let (Some(side), Some(Hold::RateLimited { until })) = (&mut self.cluster, ended.done.hold)
        else {
            return;
        };
        if ended.done.status == Some(Status::Skipped) {
            return;
        }
        let node = side.claimer.node.clone();
        let id = ended.id.clone();
        side.tasks.spawn_on(
            async move {
                match node.pause(&id, until, "rate limited").await {
                    Ok(()) => {
                        tracing::info!(schedule = %id, %until, "cluster: the rate-limit pause holds on every node")
                    }
                    Err(err) => {
                        tracing::warn!(schedule = %id, error = %err, "cluster: the rate-limit pause is this node's only")
                    }
                }
            },
            &self.workers,
        );
    }

    /// The local marker of a schedule paused by another node's escalation, so `status` on
    /// this node says it and a restart starts paused (the cluster's state wins after).
    fn mark_paused_elsewhere(&self, e: &crate::cluster::Escalation) {
        let marker = Escalation {
            at: e.escalated_at,
            failures: e.failures,
            fingerprint: e.fingerprint.clone(),
        };
        if let Err(err) = state::mark_escalated(&self.inst, &e.schedule, &marker) {
            tracing::error!(schedule = %e.schedule, error = %err, "cannot record the escalation");
        }
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
        if let Some(side) = &self.cluster {
            line.push_str("; ");
            line.push_str(&side.claimer.node.state().line());
        }
        line
    }

    fn write_state(&self) {
        let state = ServiceState {
            pid: std::process::id(),
            started_at: self.started_at,
            reload: self.last_reload.clone(),
            cluster: self.cluster.as_ref().and_then(|side| side.link.clone()),
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

/// The next event of the cluster node or note of its tasks; never, without a cluster.
async fn from_cluster(side: &mut Option<ClusterSide>) -> Step {
    let Some(side) = side else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(event) = side.events.recv() => Step::Cluster(event),
        Some(note) = side.notes.recv() => Step::Note(note),
        else => std::future::pending().await,
    }
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
