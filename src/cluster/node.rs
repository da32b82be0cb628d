//! A running node: the handle the service holds ([`Node`]) and the three tasks behind it.
//!
//! - **link** owns the dispatch connection: connects (capped backoff), registers, and every
//!   lease/3 sends the heartbeat that also renews every lease the node holds (one
//!   statement). Claims go through this connection and nothing heavy ever does, so a claim
//!   waits behind at most a heartbeat.
//! - **worker** owns a second connection for the heavy work: the outbox (claim ends,
//!   releases, mirrored rows, resends from the TSV), takeover passes, the configuration
//!   check, retention.
//! - **watchdog** needs no database: it stops trusting each held claim at its deadline.
//!
//! Rules:
//! - A claim is trusted until `sent + 2/3 lease`, where `sent` is when the request that
//!   claimed or last renewed it left, on `CLOCK_BOOTTIME` (monotonic, and counting time the
//!   machine was suspended). The database's lease ends no earlier than `sent + lease` in
//!   real time, so the node gives up a third of a lease before any survivor may take over:
//!   time to stop the cycle's processes (choose a lease of at least 3 × the longest
//!   `kill_grace`).
//! - A claim answered after its trust window is not started (it is [`Claimed::late`]) and
//!   is released. A claim past its deadline, or missing from a renewal's answer, is
//!   reported in [`Event::LeaseLost`] for the service to stop.
//! - Nothing that touches the database is awaited by [`Node::finish`], [`Node::mirror`] or
//!   [`Node::reconfigure`]: they queue and return.
//! - The outbox holds [`Settings::outbox_capacity`] rows. Past it the oldest rows are
//!   dropped from memory and counted ([`Event::RowsDropped`]); with
//!   [`Settings::backfill_from`] they are sent again from the TSV once the database is
//!   back, and so are rows of an earlier process that stopped or crashed before sending.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::{
    Claim, ClaimKey, ClusterStatus, Db, DbError, Due, Escalation, Pause, Registered, Registration,
    Takeover, within,
};
use super::settings::Settings;
use crate::timing::{Row, Status, TimingFile};

/// Rows sent in one insert.
const BATCH: usize = 500;
/// How often a node deletes what is older than the retention.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not connected, or not registered: the node claims nothing.
    #[error("cluster database unavailable: {0}")]
    Unavailable(String),
    #[error(
        "node name {node:?} is taken by a live node of another instance ({instance_id}, heartbeat {age:?} ago): give each node its own name (\"node\" in the cluster section or LOOP_ORCHESTRATOR_NODE)"
    )]
    NameTaken {
        node: String,
        instance_id: String,
        age: Duration,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What the node tells the service, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Connected and registered: claims are accepted.
    Up,
    /// The database is out of reach: nothing is claimed until [`Event::Up`]. Cycles keep
    /// running until their leases' deadlines.
    Down { error: String },
    /// Another live instance took this node's name while it was away; retried with backoff.
    Refused { instance_id: String },
    /// Stop these cycles now and write their rows `interrupted`.
    LeaseLost {
        claims: Vec<ClaimKey>,
        reason: LostReason,
    },
    /// A survivor's work: write an `interrupted` cycle row for each of
    /// `Takeover::interrupted`, and run `Takeover::retries` (claims now held by this node).
    TakenOver(Takeover),
    /// This node's schedules hash is not the live majority's (`None`: there is none).
    Mismatch {
        ours: String,
        majority: Option<String>,
    },
    /// The outbox overflowed; `resend`: the rows will be sent again from the TSV.
    RowsDropped { count: u64, resend: bool },
    /// The database's schema is newer than this binary: the node stays away from it.
    Fatal { error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Not renewed before its deadline (the database unreachable or too slow).
    NotRenewed,
    /// Refused by the database: taken over by a survivor, its lease already ended, or the
    /// node's name taken by another instance.
    Fenced,
}

/// The result of [`Node::claim`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    /// Claims won in time: run them (subject to their [`super::Rules`]), then
    /// [`Node::finish`].
    pub won: Vec<Claim>,
    /// Schedules another node claimed: this node writes no row for the instant.
    pub taken: Vec<String>,
    /// Won, but the answer came after the trust window: not to be started; released, so
    /// a `catch_up` schedule's instant is claimed again as attempt 2.
    pub late: Vec<Claim>,
}

/// The link to the database, for `status` and sd_notify.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Up { since: DateTime<Utc> },
    Down { since: DateTime<Utc>, error: String },
    Refused { instance_id: String },
}

/// A snapshot of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub node: String,
    pub url: String,
    pub link: Link,
    pub held: Vec<ClaimKey>,
    pub outbox_rows: usize,
    pub dropped_rows: u64,
    /// Database clock minus this host's, at the last heartbeat.
    pub clock_offset: Option<chrono::TimeDelta>,
    pub schedules_hash: String,
    pub majority_hash: Option<String>,
}

impl NodeState {
    /// One line for sd_notify `STATUS=` and the journal.
    pub fn line(&self) -> String {
        let held = self.held.len();
        match &self.link {
            Link::Connecting => format!("cluster: connecting to {}", self.url),
            Link::Up { .. } => {
                let mut line = format!("cluster: node {} up, {held} claims held", self.node);
                if self.outbox_rows > 0 {
                    line.push_str(&format!(", {} rows to send", self.outbox_rows));
                }
                line
            }
            Link::Down { since, error } => format!(
                "cluster: database unreachable since {} ({error}); claiming nothing, {held} claims held, {} rows waiting",
                since.format("%H:%M:%S"),
                self.outbox_rows
            ),
            Link::Refused { instance_id } => format!(
                "cluster: node name {} is held by instance {instance_id}; claiming nothing",
                self.node
            ),
        }
    }
}

#[derive(Debug)]
struct Held {
    key: ClaimKey,
    /// `CLOCK_BOOTTIME` past which the claim is no longer trusted.
    deadline: Duration,
}

/// Where the next resend from the TSV starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resend {
    None,
    /// After this node's newest mirrored row (at start).
    AfterLastMirrored,
    From(DateTime<Utc>),
}

#[derive(Debug)]
struct Outbox {
    rows: VecDeque<Row>,
    capacity: usize,
    dropped: u64,
    finishes: Vec<(i64, Status)>,
    releases: Vec<i64>,
    resend: Resend,
}

impl Outbox {
    /// Adds rows at the back; past the capacity drops from the front. Returns how many
    /// were dropped.
    fn push(&mut self, rows: impl IntoIterator<Item = Row>, resend_possible: bool) -> u64 {
        self.rows.extend(rows);
        let mut dropped = 0;
        while self.rows.len() > self.capacity {
            if let Some(row) = self.rows.pop_front() {
                dropped += 1;
                if resend_possible {
                    self.resend = match self.resend {
                        Resend::From(t) => Resend::From(t.min(row.finished_at)),
                        Resend::None => Resend::From(row.finished_at),
                        start => start,
                    };
                }
            }
        }
        self.dropped += dropped;
        dropped
    }

    /// Puts back a batch that could not be sent, ahead of the rows added since.
    fn put_back(&mut self, batch: Vec<Row>, resend_possible: bool) -> u64 {
        let newer: Vec<Row> = self.rows.drain(..).collect();
        self.rows.extend(batch);
        self.push(newer, resend_possible)
    }
}

struct State {
    held: HashMap<i64, Held>,
    outbox: Outbox,
    schedules_hash: String,
    catch_up: Vec<String>,
    link: Link,
    clock_offset: Option<chrono::TimeDelta>,
    majority_hash: Option<String>,
    mismatch_reported: Option<Option<String>>,
}

struct Shared {
    settings: Settings,
    session: String,
    /// The dispatch connection, present while connected and registered.
    hot: watch::Sender<Option<Arc<Db>>>,
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
    wake_worker: Notify,
    wake_watchdog: Notify,
    /// One flush of the outbox at a time.
    flushing: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        // The receiver gone means the service is stopping; nothing to tell.
        let _ = self.events.send(event);
    }

    fn lease(&self) -> Duration {
        self.settings.lease
    }

    fn trust(&self) -> Duration {
        self.settings.lease * 2 / 3
    }

    fn resend_possible(&self) -> bool {
        self.settings.backfill_from.is_some()
    }

    fn set_link(&self, link: Link) {
        self.state().link = link;
    }

    /// A request failed on the dispatch connection `db`: it is dropped if still current, so
    /// claims are refused at once and the link task connects anew.
    fn connection_failed(&self, db: &Arc<Db>, error: String) {
        let dropped = self.hot.send_if_modified(|hot| {
            let current = hot.as_ref().is_some_and(|h| Arc::ptr_eq(h, db));
            if current {
                *hot = None;
            }
            current
        });
        if dropped {
            self.went_down(error);
        }
    }

    /// Reports the database out of reach, once per outage.
    fn went_down(&self, error: String) {
        let mut state = self.state();
        if let Link::Down { error: last, .. } = &mut state.link {
            *last = error;
            return;
        }
        state.link = Link::Down {
            since: Utc::now(),
            error: error.clone(),
        };
        drop(state);
        tracing::warn!(url = %self.settings.url, %error, "cluster: database out of reach; claiming nothing");
        self.emit(Event::Down { error });
    }

    /// Fences whose claims this node still answers for: held, or waiting to be released.
    fn own_fences(&self) -> Vec<i64> {
        let state = self.state();
        state
            .held
            .keys()
            .copied()
            .chain(state.outbox.releases.iter().copied())
            .chain(state.outbox.finishes.iter().map(|f| f.0))
            .collect()
    }

    async fn register(&self, db: &Db) -> Result<Registered, DbError> {
        let hash = self.state().schedules_hash.clone();
        let s = &self.settings;
        within(
            self.lease(),
            db.register(&Registration {
                node: &s.node,
                instance_id: &s.instance_id,
                session: &self.session,
                version: &s.version,
                schedules_hash: &hash,
                lease: s.lease,
            }),
        )
        .await
    }
}

/// The cluster side of one `serve`: cheap to clone, shared by the service's tasks.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.shared.settings.node)
            .field("url", &self.shared.settings.url)
            .finish()
    }
}

impl Node {
    /// Starts the node: a first connect and registration now, so a name held by another
    /// live instance or a schema too new refuses the start; a database out of reach does
    /// not (the node reports [`Link::Down`] and keeps trying).
    pub async fn start(
        settings: Settings,
    ) -> Result<(Node, mpsc::UnboundedReceiver<Event>), ClusterError> {
        let (events, receiver) = mpsc::unbounded_channel();
        let session = format!("{:016x}", rand::random::<u64>());
        let resend = if settings.backfill_from.is_some() {
            Resend::AfterLastMirrored
        } else {
            Resend::None
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                held: HashMap::new(),
                outbox: Outbox {
                    rows: VecDeque::new(),
                    capacity: settings.outbox_capacity.max(1),
                    dropped: 0,
                    finishes: Vec::new(),
                    releases: Vec::new(),
                    resend,
                },
                schedules_hash: settings.schedules_hash.clone(),
                catch_up: settings.catch_up.clone(),
                link: Link::Connecting,
                clock_offset: None,
                majority_hash: None,
                mismatch_reported: None,
            }),
            settings,
            session,
            hot: watch::Sender::new(None),
            events,
            wake_worker: Notify::new(),
            wake_watchdog: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            cancel: CancellationToken::new(),
        });
        let s = &shared.settings;
        let first = match Db::connect(&s.url, s.lease).await {
            Ok(db) => match shared.register(&db).await {
                Ok(Registered::Ok { expired_claims }) => {
                    if expired_claims > 0 {
                        tracing::warn!(
                            node = %s.node,
                            expired_claims,
                            "cluster: claims of this instance's previous process expired for takeover"
                        );
                    }
                    Some(Arc::new(db))
                }
                Ok(Registered::Taken {
                    instance_id,
                    heartbeat_age,
                }) => {
                    return Err(ClusterError::NameTaken {
                        node: s.node.clone(),
                        instance_id,
                        age: heartbeat_age,
                    });
                }
                Err(err @ DbError::SchemaTooNew { .. }) => return Err(err.into()),
                Err(err) => {
                    shared.went_down(err.to_string());
                    None
                }
            },
            Err(err @ DbError::SchemaTooNew { .. }) => return Err(err.into()),
            Err(err) => {
                shared.went_down(err.to_string());
                None
            }
        };
        if let Some(db) = first {
            tracing::info!(node = %s.node, url = %s.url, "cluster: node registered");
            shared.set_link(Link::Up { since: Utc::now() });
            shared.hot.send_replace(Some(db));
            shared.emit(Event::Up);
        }
        let tasks = vec![
            tokio::spawn(link_task(shared.clone())),
            tokio::spawn(worker_task(shared.clone())),
            tokio::spawn(watchdog_task(shared.clone())),
        ];
        let node = Node {
            shared,
            tasks: Arc::new(Mutex::new(tasks)),
        };
        Ok((node, receiver))
    }

    pub fn name(&self) -> &str {
        &self.shared.settings.node
    }

    /// This process's session id (the `session` column of its claims).
    pub fn session(&self) -> &str {
        &self.shared.session
    }

    fn hot(&self) -> Result<Arc<Db>, ClusterError> {
        let db = self.shared.hot.borrow().clone();
        db.ok_or_else(|| {
            ClusterError::Unavailable(match &self.shared.state().link {
                Link::Down { error, .. } => error.clone(),
                Link::Refused { instance_id } => {
                    format!("node name held by instance {instance_id}")
                }
                _ => "connecting".into(),
            })
        })
    }

    /// Runs `op` on the dispatch connection within a third of a lease; a connection error
    /// has the link task replace the connection.
    async fn on_hot<T, F>(&self, op: impl FnOnce(Arc<Db>) -> F) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, DbError>>,
    {
        let db = self.hot()?;
        match within(self.shared.lease() / 3, op(db.clone())).await {
            Ok(value) => Ok(value),
            Err(err) => {
                if err.is_connection() {
                    self.shared.connection_failed(&db, err.to_string());
                }
                Err(err.into())
            }
        }
    }

    /// Claims `scheduled_at` for every schedule of `due`, in one round trip. Fails at once,
    /// claiming nothing, while the node is not connected and registered.
    pub async fn claim(
        &self,
        scheduled_at: DateTime<Utc>,
        due: &[Due],
    ) -> Result<Claimed, ClusterError> {
        let mut unique: Vec<Due> = Vec::with_capacity(due.len());
        for d in due {
            if !unique.iter().any(|u| u.schedule == d.schedule) {
                unique.push(d.clone());
            }
        }
        if unique.is_empty() {
            return Ok(Claimed::default());
        }
        let db = self.hot()?;
        let s = &self.shared.settings;
        let trust = self.shared.trust();
        let sent = boot_now();
        // Waited for up to a lease, so a slow answer is seen (and released) rather than
        // left to expire: only answers within the trust window are started.
        let rows = match within(
            s.lease,
            db.claim(
                &s.node,
                &self.shared.session,
                s.lease,
                scheduled_at,
                &unique,
            ),
        )
        .await
        {
            Ok(rows) => rows,
            Err(err) => {
                // Whether the insert committed is unknown: such claims are nobody's, so they
                // expire and a takeover pass settles them.
                if err.is_connection() {
                    self.shared.connection_failed(&db, err.to_string());
                }
                return Err(err.into());
            }
        };
        let answered = boot_now();
        let taken = unique
            .iter()
            .filter(|d| !rows.iter().any(|r| r.key.schedule == d.schedule))
            .map(|d| d.schedule.clone())
            .collect();
        if answered.saturating_sub(sent) >= trust {
            tracing::warn!(
                instant = %scheduled_at,
                waited = ?answered.saturating_sub(sent),
                "cluster: claims answered after their trust window; not started, released"
            );
            let mut state = self.shared.state();
            state.outbox.releases.extend(rows.iter().map(|r| r.fence));
            drop(state);
            self.shared.wake_worker.notify_one();
            return Ok(Claimed {
                won: Vec::new(),
                taken,
                late: rows,
            });
        }
        let mut state = self.shared.state();
        for row in &rows {
            state.held.insert(
                row.fence,
                Held {
                    key: row.key.clone(),
                    deadline: sent + trust,
                },
            );
        }
        drop(state);
        self.shared.wake_watchdog.notify_one();
        Ok(Claimed {
            won: rows,
            taken,
            late: Vec::new(),
        })
    }

    /// The claim's cycle ended with `status`: queued, sent by the worker. Not for a claim
    /// reported in [`Event::LeaseLost`]: that one is no longer this node's to end.
    pub fn finish(&self, fence: i64, status: Status) {
        let mut state = self.shared.state();
        state.held.remove(&fence);
        state.outbox.finishes.push((fence, status));
        drop(state);
        self.shared.wake_worker.notify_one();
    }

    /// Rows this node wrote to its TSV: queued, sent by the worker.
    pub fn mirror(&self, rows: impl IntoIterator<Item = Row>) {
        let resend = self.shared.resend_possible();
        let dropped = self.shared.state().outbox.push(rows, resend);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                resend,
                "cluster: outbox full, oldest rows dropped from memory"
            );
            self.shared.emit(Event::RowsDropped {
                count: dropped,
                resend,
            });
        }
        self.shared.wake_worker.notify_one();
    }

    /// After a reload: the new schedules hash and `catch_up` schedules.
    pub fn reconfigure(&self, schedules_hash: String, catch_up: Vec<String>) {
        let mut state = self.shared.state();
        state.schedules_hash = schedules_hash;
        state.catch_up = catch_up;
        state.mismatch_reported = None;
    }

    pub fn state(&self) -> NodeState {
        let state = self.shared.state();
        let mut held: Vec<ClaimKey> = state.held.values().map(|h| h.key.clone()).collect();
        held.sort();
        NodeState {
            node: self.shared.settings.node.clone(),
            url: self.shared.settings.url.redacted(),
            link: state.link.clone(),
            held,
            outbox_rows: state.outbox.rows.len(),
            dropped_rows: state.outbox.dropped,
            clock_offset: state.clock_offset,
            schedules_hash: state.schedules_hash.clone(),
            majority_hash: state.majority_hash.clone(),
        }
    }

    /// The node running a cycle of `schedule` with a live lease, other than this one.
    pub async fn running_elsewhere(&self, schedule: &str) -> Result<Option<String>, ClusterError> {
        let node = self.name().to_string();
        self.on_hot(|db| async move { db.running_elsewhere(schedule, &node).await })
            .await
    }

    pub async fn escalate(
        &self,
        schedule: &str,
        fingerprint: &str,
        failures: u32,
    ) -> Result<(), ClusterError> {
        let node = self.name().to_string();
        self.on_hot(|db| async move { db.escalate(schedule, fingerprint, failures, &node).await })
            .await
    }

    pub async fn resume(&self, schedule: &str) -> Result<bool, ClusterError> {
        self.on_hot(|db| async move { db.resume(schedule).await })
            .await
    }

    pub async fn escalations(&self) -> Result<Vec<Escalation>, ClusterError> {
        self.on_hot(|db| async move { db.escalations().await })
            .await
    }

    pub async fn pause(
        &self,
        schedule: &str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), ClusterError> {
        let node = self.name().to_string();
        self.on_hot(|db| async move { db.pause(schedule, until, reason, &node).await })
            .await
    }

    pub async fn pauses(&self) -> Result<Vec<Pause>, ClusterError> {
        self.on_hot(|db| async move { db.pauses().await }).await
    }

    pub async fn cost_since(
        &self,
        schedule: &str,
        since: DateTime<Utc>,
    ) -> Result<f64, ClusterError> {
        self.on_hot(|db| async move { db.cost_since(schedule, since).await })
            .await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClusterError> {
        let db = self.hot()?;
        Ok(within(self.shared.lease(), db.status()).await?)
    }

    /// Sends what the outbox holds now, on the dispatch connection (the worker does this
    /// on its own; tests and [`Node::stop`] call it to know when it is done).
    pub async fn flush(&self) -> Result<(), ClusterError> {
        let db = self.hot()?;
        flush(&self.shared, &db).await.map_err(|err| {
            if err.is_connection() {
                self.shared.connection_failed(&db, err.to_string());
            }
            err.into()
        })
    }

    /// Stops the node: sends the outbox, releases every claim still running (the service
    /// has stopped their cycles and written their rows), marks the node stopped, and ends
    /// the tasks. With the database away the claims expire and are taken over instead.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.shared.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        let db = self.hot()?;
        let shared = &self.shared;
        let outcome = within(shared.lease(), async {
            flush(shared, &db).await?;
            let released = db
                .release(&shared.settings.node, &[], Some(&shared.session))
                .await?;
            if !released.is_empty() {
                tracing::info!(
                    released = released.len(),
                    "cluster: claims released on stop"
                );
            }
            db.stop_node(&shared.settings.node, &shared.session).await?;
            Ok(())
        })
        .await;
        shared.state().held.clear();
        shared.hot.send_replace(None);
        Ok(outcome?)
    }
}

/// `CLOCK_BOOTTIME`: monotonic, and it counts time the machine spent suspended, which
/// `CLOCK_MONOTONIC` (tokio's clock) does not: a node woken from suspend must find its
/// claims past their deadlines.
fn boot_now() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        // CLOCK_BOOTTIME exists on every Linux this runs on; monotonic time is the fallback.
        .unwrap_or_else(|_| {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed()
        })
}

/// Capped exponential backoff with jitter, so nodes cut off together do not return in step.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(lease: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(250),
            cap: (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10)),
        }
    }

    fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.cap);
        wait.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
}

/// The dispatch connection: connect, register, heartbeat and renewals.
async fn link_task(shared: Arc<Shared>) {
    let s = &shared.settings;
    let mut backoff = Backoff::new(s.lease);
    let mut next_beat = tokio::time::Instant::now() + s.lease / 3;
    let mut hot = shared.hot.subscribe();
    loop {
        let current = hot.borrow_and_update().clone();
        let Some(db) = current else {
            // Disconnected (or refused): wait, then connect and register.
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.step()) => {}
            }
            let attempt = async {
                let db = Db::connect(&s.url, s.lease).await?;
                let registered = shared.register(&db).await?;
                Ok::<_, DbError>((db, registered))
            };
            let outcome = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                outcome = attempt => outcome,
            };
            match outcome {
                Ok((db, Registered::Ok { .. })) => {
                    tracing::info!(node = %s.node, url = %s.url, "cluster: connected and registered");
                    shared.set_link(Link::Up { since: Utc::now() });
                    shared.hot.send_replace(Some(Arc::new(db)));
                    shared.emit(Event::Up);
                    shared.wake_worker.notify_one();
                    backoff.reset();
                    next_beat = tokio::time::Instant::now();
                }
                Ok((_, Registered::Taken { instance_id, .. })) => {
                    let refused = Link::Refused {
                        instance_id: instance_id.clone(),
                    };
                    if shared.state().link != refused {
                        tracing::error!(node = %s.node, %instance_id, "cluster: node name held by another live instance; claiming nothing");
                        shared.set_link(refused);
                        shared.emit(Event::Refused { instance_id });
                    }
                }
                Err(err @ DbError::SchemaTooNew { .. }) => {
                    tracing::error!(error = %err, "cluster: database schema too new");
                    shared.emit(Event::Fatal {
                        error: err.to_string(),
                    });
                    return;
                }
                Err(err) => shared.went_down(err.to_string()),
            }
            continue;
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            // Dropped by a failed request elsewhere.
            _ = hot.changed() => continue,
            _ = tokio::time::sleep_until(next_beat) => {}
        }
        if db.is_closed() {
            shared.connection_failed(&db, "connection closed".into());
            continue;
        }
        match beat(&shared, &db).await {
            Ok(()) => next_beat = tokio::time::Instant::now() + s.lease / 3,
            Err(err) if err.is_connection() => shared.connection_failed(&db, err.to_string()),
            Err(err) => {
                tracing::warn!(error = %err, "cluster: heartbeat failed; retrying");
                next_beat = tokio::time::Instant::now() + s.lease / 15;
            }
        }
    }
}

/// One heartbeat: renews every held lease, learns which were lost.
async fn beat(shared: &Shared, db: &Db) -> Result<(), DbError> {
    let s = &shared.settings;
    let (fences, hash) = {
        let state = shared.state();
        (
            state.held.keys().copied().collect::<Vec<i64>>(),
            state.schedules_hash.clone(),
        )
    };
    let sent = boot_now();
    let wall_sent = Utc::now();
    let answer = within(
        shared.trust() / 2,
        db.beat(&s.node, &shared.session, &hash, s.lease, &fences),
    )
    .await?;
    let answered = boot_now();
    let rtt = answered.saturating_sub(sent);
    let local_mid = wall_sent + chrono::TimeDelta::from_std(rtt / 2).unwrap_or_default();
    let offset = answer.db_now - local_mid;
    if offset.abs() > chrono::TimeDelta::seconds(2) {
        tracing::warn!(
            offset_ms = offset.num_milliseconds(),
            "cluster: this host's clock differs from the database's; leases use the database's, fire instants this host's"
        );
    }
    let mut lost = Vec::new();
    {
        let mut state = shared.state();
        state.clock_offset = Some(offset);
        for fence in &fences {
            if answer.renewed.contains(fence) {
                if let Some(held) = state.held.get_mut(fence) {
                    held.deadline = sent + shared.trust();
                }
            } else if let Some(held) = state.held.remove(fence) {
                // (Finished meanwhile: not in `held` any more, so not lost.) Released too: a
                // lease that ran out unrenewed is still `running` until someone acts, and
                // this node, which stops the cycle and writes its rows, is the one to.
                state.outbox.releases.push(*fence);
                lost.push(held.key);
            }
        }
    }
    if !lost.is_empty() {
        tracing::warn!(
            lost = lost.len(),
            "cluster: leases no longer this node's; stopping their cycles"
        );
        shared.emit(Event::LeaseLost {
            claims: lost,
            reason: LostReason::Fenced,
        });
    }
    shared.wake_watchdog.notify_one();
    if !answer.registered {
        match shared.register(db).await? {
            Registered::Ok { .. } => {
                tracing::warn!(node = %s.node, "cluster: registered again after the node's row was replaced");
            }
            Registered::Taken { instance_id, .. } => {
                shared.hot.send_replace(None);
                tracing::error!(node = %s.node, %instance_id, "cluster: node name taken over by another instance; claiming nothing");
                shared.set_link(Link::Refused {
                    instance_id: instance_id.clone(),
                });
                shared.emit(Event::Refused { instance_id });
            }
        }
    }
    Ok(())
}

/// Stops trusting held claims at their deadlines.
async fn watchdog_task(shared: Arc<Shared>) {
    loop {
        let next = shared.state().held.values().map(|h| h.deadline).min();
        let sleep = match next {
            Some(deadline) => deadline.saturating_sub(boot_now()),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = shared.wake_watchdog.notified() => continue,
            _ = tokio::time::sleep(sleep) => {}
        }
        let now = boot_now();
        let mut lost = Vec::new();
        {
            let mut state = shared.state();
            let expired: Vec<i64> = state
                .held
                .iter()
                .filter(|(_, h)| h.deadline <= now)
                .map(|(f, _)| *f)
                .collect();
            for fence in expired {
                if let Some(held) = state.held.remove(&fence) {
                    state.outbox.releases.push(fence);
                    lost.push(held.key);
                }
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                lost = lost.len(),
                "cluster: leases not renewed in time; stopping their cycles"
            );
            shared.emit(Event::LeaseLost {
                claims: lost,
                reason: LostReason::NotRenewed,
            });
        }
    }
}

/// The heavy work, on its own connection.
async fn worker_task(shared: Arc<Shared>) {
    let s = &shared.settings;
    let mut bulk: Option<Db> = None;
    let mut backoff = Backoff::new(s.lease);
    let mut last_retention: Option<tokio::time::Instant> = None;
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = shared.wake_worker.notified() => {}
            _ = tokio::time::sleep(s.lease / 3) => {}
        }
        if !pause.is_zero() {
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        // Nothing is done while the node itself is not registered: its own fences must be
        // known before any takeover pass.
        if shared.hot.borrow().is_none() {
            continue;
        }
        if bulk.as_ref().is_none_or(Db::is_closed) {
            match Db::connect(&s.url, s.lease).await {
                Ok(db) => bulk = Some(db),
                Err(err) => {
                    tracing::debug!(error = %err, "cluster: worker connection failed");
                    pause = backoff.step();
                    continue;
                }
            }
        }
        let Some(db) = &bulk else { continue };
        let due_retention = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        match work(&shared, db, due_retention).await {
            Ok(()) => {
                backoff.reset();
                pause = Duration::ZERO;
                if due_retention {
                    last_retention = Some(tokio::time::Instant::now());
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cluster: background work failed; retrying");
                if err.is_connection() {
                    bulk = None;
                }
                pause = backoff.step();
            }
        }
    }
}

/// One pass of the worker.
async fn work(shared: &Shared, db: &Db, retention: bool) -> Result<(), DbError> {
    let s = &shared.settings;
    let lease = s.lease;
    flush(shared, db).await?;
    let catch_up = shared.state().catch_up.clone();
    let own = shared.own_fences();
    let sent = boot_now();
    let mut pass = within(
        lease,
        db.takeover(&s.node, &shared.session, lease, &own, &catch_up),
    )
    .await?;
    if !pass.interrupted.is_empty() || !pass.retries.is_empty() {
        if boot_now().saturating_sub(sent) >= shared.trust() {
            // As for a late claim: not to be started; released for the next pass.
            let late: Vec<i64> = pass.retries.drain(..).map(|c| c.fence).collect();
            shared.state().outbox.releases.extend(late);
        }
        {
            let mut state = shared.state();
            for claim in &pass.retries {
                state.held.insert(
                    claim.fence,
                    Held {
                        key: claim.key.clone(),
                        deadline: sent + shared.trust(),
                    },
                );
            }
        }
        shared.wake_watchdog.notify_one();
        for i in &pass.interrupted {
            tracing::warn!(schedule = %i.key.schedule, instant = %i.key.scheduled_at, from = %i.node, "cluster: took over an expired claim; marked interrupted");
        }
        shared.emit(Event::TakenOver(pass));
    }
    let majority = within(lease, db.majority_hash()).await?;
    let report = {
        let mut state = shared.state();
        state.majority_hash = majority.clone();
        let differs = majority.as_ref() != Some(&state.schedules_hash);
        let report = differs && state.mismatch_reported.as_ref() != Some(&majority);
        if report {
            state.mismatch_reported = Some(majority.clone());
        }
        if !differs {
            state.mismatch_reported = None;
        }
        report.then(|| state.schedules_hash.clone())
    };
    if let Some(ours) = report {
        tracing::error!(%ours, majority = ?majority, "cluster: this node's schedules differ from the live majority's");
        shared.emit(Event::Mismatch { ours, majority });
    }
    if retention {
        let gone = within(lease * 4, db.retain(s.retention)).await?;
        if gone != Default::default() {
            tracing::info!(
                claims = gone.claims,
                rows = gone.rows,
                nodes = gone.nodes,
                "cluster: retention removed old entries"
            );
        }
    }
    Ok(())
}

/// Sends the outbox: releases, claim ends, rows, then any resend from the TSV.
async fn flush(shared: &Shared, db: &Db) -> Result<(), DbError> {
    let _one = shared.flushing.lock().await;
    let s = &shared.settings;
    let lease = s.lease;
    let (releases, finishes) = {
        let state = shared.state();
        (state.outbox.releases.clone(), state.outbox.finishes.clone())
    };
    if !releases.is_empty() {
        within(lease, db.release(&s.node, &releases, None)).await?;
        shared
            .state()
            .outbox
            .releases
            .retain(|f| !releases.contains(f));
    }
    if !finishes.is_empty() {
        let done = within(lease, db.finish(&s.node, &finishes)).await?;
        for (fence, _) in &finishes {
            if !done.contains(fence) {
                tracing::warn!(
                    fence,
                    "cluster: a finished claim was no longer this node's (taken over while unrenewed)"
                );
            }
        }
        shared
            .state()
            .outbox
            .finishes
            .retain(|f| !finishes.contains(f));
    }
    loop {
        let batch: Vec<Row> = {
            let mut state = shared.state();
            let n = state.outbox.rows.len().min(BATCH);
            state.outbox.rows.drain(..n).collect()
        };
        if batch.is_empty() {
            break;
        }
        if let Err(err) = within(lease, db.insert_rows(&s.node, &batch)).await {
            let dropped = shared
                .state()
                .outbox
                .put_back(batch, shared.resend_possible());
            if dropped > 0 {
                shared.emit(Event::RowsDropped {
                    count: dropped,
                    resend: shared.resend_possible(),
                });
            }
            return Err(err);
        }
    }
    resend(shared, db).await
}

/// Sends rows of the TSV again: after an overflow, and at start for rows a previous
/// process never sent. Inserts are idempotent, so rows already there cost nothing.
async fn resend(shared: &Shared, db: &Db) -> Result<(), DbError> {
    let Some(path) = shared.settings.backfill_from.clone() else {
        return Ok(());
    };
    let s = &shared.settings;
    let mode = shared.state().outbox.resend;
    let floor = Utc::now() - chrono::TimeDelta::from_std(s.retention).unwrap_or_default();
    let from = match mode {
        Resend::None => return Ok(()),
        Resend::From(t) => t,
        Resend::AfterLastMirrored => {
            // A row is written when it ends, so rows after the newest sent one are the
            // unsent; a lease of slack covers rows appended out of order.
            let last = within(s.lease, db.last_mirrored(&s.node)).await?;
            last.map_or(floor, |t| {
                t - chrono::TimeDelta::from_std(s.lease).unwrap_or_default()
            })
        }
    }
    .max(floor);
    // The file holds milliseconds, memory held finer: a second of slack, as inserts are
    // idempotent.
    let rows = read_rows_since(path, from - chrono::TimeDelta::seconds(1)).await;
    let total = rows.len();
    let mut inserted = 0;
    for chunk in rows.chunks(BATCH) {
        inserted += within(s.lease, db.insert_rows(&s.node, chunk)).await?;
    }
    {
        let mut state = shared.state();
        // Set again meanwhile by a new overflow: keep the new start.
        if state.outbox.resend == mode {
            state.outbox.resend = Resend::None;
        }
    }
    if inserted > 0 {
        tracing::info!(inserted, read = total, since = %from, "cluster: rows resent from the TSV");
    }
    Ok(())
}

async fn read_rows_since(path: PathBuf, from: DateTime<Utc>) -> Vec<Row> {
    tokio::task::spawn_blocking(move || match TimingFile::new(&path).read() {
        Ok(log) => log
            .rows
            .into_iter()
            .filter(|r| r.finished_at >= from)
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "cluster: cannot read the TSV to resend rows");
            Vec::new()
        }
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::Priority;

    fn row(i: i64) -> Row {
        let at = DateTime::from_timestamp(1_800_000_000 + i, 0).unwrap();
        Row {
            scheduled_at: Some(at),
            started_at: at,
            finished_at: at,
            duration_ms: 0,
            priority: Priority::Schedule,
            schedule: "s".into(),
            cycle: format!("c{i}"),
            mode: "cycle".into(),
            attempt: 1,
            status: Status::Ok,
            exit_code: Some(0),
            cost_usd: None,
            note: String::new(),
        }
    }

    fn outbox(capacity: usize) -> Outbox {
        Outbox {
            rows: VecDeque::new(),
            capacity,
            dropped: 0,
            finishes: Vec::new(),
            releases: Vec::new(),
            resend: Resend::None,
        }
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_rows_and_remembers_where_to_resend_from() {
        let mut out = outbox(3);
        assert_eq!(out.push((0..5).map(row), true), 2);
        let cycles: Vec<&str> = out.rows.iter().map(|r| r.cycle.as_str()).collect();
        assert_eq!(cycles, ["c2", "c3", "c4"]);
        assert_eq!(out.resend, Resend::From(row(0).finished_at));
        assert_eq!(out.dropped, 2);
        // A batch put back goes ahead of newer rows, and the bound still holds.
        let batch: Vec<Row> = out.rows.drain(..2).collect();
        out.push([row(5), row(6)], true);
        assert_eq!(out.put_back(batch, true), 2);
        let cycles: Vec<&str> = out.rows.iter().map(|r| r.cycle.as_str()).collect();
        assert_eq!(cycles, ["c4", "c5", "c6"]);
        assert_eq!(out.dropped, 4);
    }

    #[test]
    fn without_a_tsv_to_resend_from_dropped_rows_are_only_counted() {
        let mut out = outbox(1);
        assert_eq!(out.push((0..3).map(row), false), 2);
        assert_eq!(out.resend, Resend::None);
        assert_eq!(out.dropped, 2);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let waits: Vec<Duration> = (0..10).map(|_| b.step()).collect();
        assert!(waits[0] <= Duration::from_millis(313));
        assert!(
            waits[9] >= Duration::from_millis(7500) && waits[9] <= Duration::from_millis(12500)
        );
        b.reset();
        assert!(b.step() <= Duration::from_millis(313));
    }
}
