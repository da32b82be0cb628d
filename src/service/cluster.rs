//! The service's side of the cluster (SPEC §11): starting the node, claiming the instants the
//! core dispatches, running what was won, and the rows a survivor owes.
//!
//! Rules:
//! - Nothing of an instant is written before this node won its claim: a fire the core starts
//!   and a row it asks for (an overlap skip, a queued fire dropped) both wait for the claim.
//!   A claim lost, or not made because the database is out of reach, writes nothing and
//!   ends the fire as one that never ran ([`super::core::Done`] without a status).
//! - Claims for every schedule due at one instant go in one [`Node::claim`], awaited on the
//!   worker runtime, never on the loop's thread: a slow database delays a fire by at most
//!   that round trip and never delays the timer. A fire's `started_at` is taken after the
//!   claim's answer, so the lateness in the TSV includes the claim.
//! - What a won claim means (its [`crate::cluster::Rules`]) is judged by the pure
//!   [`claim_verdict`]; an escalation seen there goes back to the loop as a [`Note`].
//! - A claim ends with its fire ([`ClaimHold::end`]): finished with the cycle's status;
//!   left to [`Node::stop`] to release when the service stopped it (so a survivor retries a
//!   `catch_up` instant at once); untouched when its lease was lost (the node releases it).
//! - Escalations are pushed and read by one task ([`escalation_sync`]), so an escalation of
//!   this node is in the database before a read that could undo it is applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::{ClaimVerdict, claim_verdict};
use super::fire::{self, Fire};
use crate::cluster::{Claim, ClaimKey, ClusterError, Due, Escalation, Interrupted, Node, Settings};
use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;
use crate::limits::{Hold, Ledger};
use crate::recorder::{Recorder, RowSink};
use crate::timing::{Priority, Row, Status, sanitize_note};

/// The cycle id a fire of `schedule` dispatched at `at` runs under: the run folder's name
/// (see [`crate::runs::create`]), chosen before the claim so the claim can carry it.
pub fn cycle_id(schedule: &str, at: DateTime<Utc>) -> String {
    format!("{}-{schedule}", crate::runs::stamp(at))
}

/// The instance's id in the cluster: read from `.loop-orchestrator/instance-id`, made (random)
/// and saved the first time. A restart of the same instance takes its node name back at once.
pub fn instance_id(inst: &Instance) -> std::io::Result<String> {
    let path = inst.instance_id();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let id = format!("{:032x}", rand::random::<u128>());
    crate::fsutil::write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// The node's settings from the `cluster` section, the environment and the instance.
pub fn settings(inst: &Instance, config: &Config) -> Result<Option<Settings>, Error> {
    let Some(section) = &config.cluster else {
        return Ok(None);
    };
    let (url, node) = section
        .resolve(|key| std::env::var(key).ok())
        .map_err(|err| Error::Invalid(format!("serve: {err}")))?;
    let id = instance_id(inst).map_err(|err| {
        Error::Failed(format!(
            "serve: cannot keep the instance id in {}: {err}",
            inst.instance_id().display()
        ))
    })?;
    let mut settings = Settings::new(url, node, id);
    settings.lease = section.lease.0;
    settings.retention = section.retention.0;
    settings.schedules_hash = crate::cluster::schedules_hash(&config.schedules);
    settings.catch_up = catch_up_ids(config);
    settings.backfill_from = Some(inst.timing());
    Ok(Some(settings))
}

pub fn catch_up_ids(config: &Config) -> Vec<String> {
    config
        .schedules
        .iter()
        .filter(|s| s.catch_up)
        .map(|s| s.id.clone())
        .collect()
}

/// Starts the node on `workers` (its tasks run there, away from the loop's thread).
pub fn start_node(
    settings: Settings,
    workers: &tokio::runtime::Handle,
) -> Result<(Node, mpsc::UnboundedReceiver<crate::cluster::Event>), Error> {
    workers
        .block_on(Node::start(settings))
        .map_err(|err| match err {
            ClusterError::NameTaken { .. } | ClusterError::Db(_) => {
                Error::Invalid(format!("serve: {err}"))
            }
            ClusterError::Unavailable(_) => Error::Failed(format!("serve: {err}")),
        })
}

/// Hands every row the recorder made durable to the node, which sends it to `timing_rows`.
pub struct MirrorSink(pub Node);

impl RowSink for MirrorSink {
    fn rows_written(&mut self, rows: &[Row]) {
        self.0.mirror(rows.iter().cloned());
    }
}

/// What the cluster's tasks tell the loop.
#[derive(Debug)]
pub enum Note {
    /// The escalations in force cluster-wide, read after every escalation this node asked
    /// for up to `generation` was written.
    Escalations {
        escalations: Vec<Escalation>,
        generation: u64,
    },
    /// A claim's rules said the schedule escalated on another node.
    EscalatedElsewhere { escalation: Escalation },
    /// The latest instant claimed per schedule, by any node: where `catch_up` starts.
    LastClaimed(HashMap<String, DateTime<Utc>>),
}

/// An escalation of this node to write to the cluster.
#[derive(Debug, Clone)]
pub struct EscalateRequest {
    pub schedule: String,
    pub fingerprint: String,
    pub failures: u32,
    pub generation: u64,
}

/// Controls of the claims this node's fires hold, so a lost lease can stop their cycles.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<ClaimKey, Arc<ClaimCtl>>>>);

struct ClaimCtl {
    /// Stops the claim's cycle (a child of the service's own cancel token).
    cancel: CancellationToken,
    lost: AtomicBool,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClaimKey, Arc<ClaimCtl>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leases of `claims` are no longer this node's: their cycles stop (rows
    /// `interrupted`), and their claims are not ended by this node. Returns how many fires
    /// were stopped.
    pub fn lost(&self, claims: &[ClaimKey]) -> usize {
        let map = self.lock();
        let mut stopped = 0;
        for key in claims {
            if let Some(ctl) = map.get(key) {
                ctl.lost.store(true, Ordering::SeqCst);
                ctl.cancel.cancel();
                stopped += 1;
            }
        }
        stopped
    }
}

/// A won claim, held by its fire until the fire ends.
pub struct ClaimHold {
    node: Node,
    key: ClaimKey,
    fence: i64,
    ctl: Arc<ClaimCtl>,
    registry: Registry,
    stopping: CancellationToken,
}

impl ClaimHold {
    fn new(
        node: &Node,
        claim: &Claim,
        registry: &Registry,
        cancel: &CancellationToken,
        stopping: &CancellationToken,
    ) -> ClaimHold {
        let ctl = Arc::new(ClaimCtl {
            cancel: cancel.child_token(),
            lost: AtomicBool::new(false),
        });
        registry.lock().insert(claim.key.clone(), ctl.clone());
        ClaimHold {
            node: node.clone(),
            key: claim.key.clone(),
            fence: claim.fence,
            ctl,
            registry: registry.clone(),
            stopping: stopping.clone(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Cancelled when the claim's lease is lost, or when the service's grace is over.
    pub fn cancel_token(&self) -> CancellationToken {
        self.ctl.cancel.clone()
    }

    /// Ends the claim with the fire's status (see the module doc).
    pub fn end(self, status: Option<Status>) {
        self.registry.lock().remove(&self.key);
        if self.ctl.lost.load(Ordering::SeqCst) {
            return;
        }
        match status {
            // Released by `Node::stop`, so a survivor claims a `catch_up` instant again now.
            Some(Status::Interrupted) if self.stopping.is_cancelled() => {}
            Some(status) => self.node.finish(self.fence, status),
            // The fire ended without a cycle row (it could not start): the claim is done.
            None => self.node.finish(self.fence, Status::Failed),
        }
    }
}

/// A fire's claim as [`fire::run_fire`] gets it: held, and judged.
pub struct ClaimedFire {
    pub hold: ClaimHold,
    /// `overlap = "queue"`: the node whose cycle of the schedule runs now.
    pub wait_for: Option<String>,
}

/// Something of an instant that needs this node's claim first.
pub enum Pending {
    Fire(Box<Fire>),
    Row(Row),
}

impl Pending {
    fn schedule(&self) -> &str {
        match self {
            Pending::Fire(fire) => &fire.spec.schedule.id,
            Pending::Row(row) => &row.schedule,
        }
    }

    fn due(&self) -> Due {
        let (cycle, cost_since) = match self {
            Pending::Fire(fire) => {
                let s = &fire.spec.schedule;
                // A schedule with a daily budget: the claim answers what every node spent on
                // it since the start of its day.
                let since = s
                    .max_cost_usd_per_day
                    .map(|max| Ledger::new(Some(max), s.timezone.clone(), Utc::now()).day_start);
                (fire.spec.cycle.clone().unwrap_or_default(), since)
            }
            Pending::Row(row) => (row.cycle.clone(), None),
        };
        Due {
            schedule: self.schedule().to_string(),
            cycle,
            cost_since,
        }
    }
}

/// What the claim tasks share.
#[derive(Clone)]
pub struct Claimer {
    pub node: Node,
    pub registry: Registry,
    pub recorder: Recorder,
    pub notes: mpsc::UnboundedSender<Note>,
    pub stopping: CancellationToken,
    pub cancel: CancellationToken,
}

impl Claimer {
    /// Claims `instant` for every pending item (one round trip) and carries out what was
    /// won. Runs on the worker runtime.
    pub async fn claim(self, instant: DateTime<Utc>, pending: Vec<Pending>) {
        let dues: Vec<Due> = pending.iter().map(Pending::due).collect();
        let claimed = match self.node.claim(instant, &dues).await {
            Ok(claimed) => claimed,
            Err(err) => {
                // Never fires on its own: nothing runs and nothing is written. The outage
                // itself is logged once by the node and shown by `status`.
                tracing::debug!(scheduled_at = %instant, schedules = dues.len(), error = %err, "not claimed: nothing runs here for this instant");
                return;
            }
        };
        let mut won: HashMap<String, Claim> = claimed
            .won
            .into_iter()
            .map(|c| (c.key.schedule.clone(), c))
            .collect();
        let mut late: HashMap<String, Claim> = claimed
            .late
            .into_iter()
            .map(|c| (c.key.schedule.clone(), c))
            .collect();
        for item in pending {
            let id = item.schedule().to_string();
            if let Some(claim) = won.remove(&id) {
                self.won(claim, item);
            } else if let Some(claim) = late.remove(&id) {
                // Released by the node; a survivor retries it for `catch_up`.
                let started = match &item {
                    Pending::Fire(fire) => fire.spec.dispatched_at.unwrap_or_else(Utc::now),
                    Pending::Row(row) => row.started_at,
                };
                let row = not_run_row(
                    &claim,
                    started,
                    Status::Interrupted,
                    "not started: the claim was answered after its trust window (a slow database); released",
                );
                self.recorder.rows_detached(vec![row]);
            } else {
                tracing::debug!(schedule = %id, scheduled_at = %instant, "claimed by another node");
            }
        }
    }

    /// Carries out a claim this node holds: the row asked for, or the fire as its rules say.
    pub fn won(&self, claim: Claim, item: Pending) {
        match item {
            Pending::Row(mut row) => {
                row.cycle = claim.cycle.clone();
                row.attempt = claim.key.attempt;
                let status = row.status;
                self.recorder.rows_detached(vec![row]);
                if !(status == Status::Interrupted && self.stopping.is_cancelled()) {
                    self.node.finish(claim.fence, status);
                }
            }
            Pending::Fire(mut fire) => {
                fire.spec.dispatched_at = Some(Utc::now());
                fire.spec.cycle = Some(claim.cycle.clone());
                fire.spec.attempt = claim.key.attempt;
                let verdict = claim_verdict(
                    &fire.spec.schedule,
                    &claim.rules,
                    claim.key.attempt,
                    Utc::now(),
                );
                let hold = ClaimHold::new(
                    &self.node,
                    &claim,
                    &self.registry,
                    &self.cancel,
                    &self.stopping,
                );
                let wait_for = match verdict {
                    ClaimVerdict::Run => None,
                    ClaimVerdict::WaitFor { node } => Some(node),
                    ClaimVerdict::Skip { note } => {
                        return self.skip(*fire, hold, &claim, &note, None);
                    }
                    ClaimVerdict::Held { hold: held } => {
                        return self.skip(*fire, hold, &claim, &held.note(), Some(held));
                    }
                    ClaimVerdict::Escalated { note, .. } => {
                        if let Some(escalation) = claim.rules.escalation.clone() {
                            let _ = self.notes.send(Note::EscalatedElsewhere { escalation });
                        }
                        return self.skip(*fire, hold, &claim, &note, None);
                    }
                };
                tokio::spawn(fire::run_fire(*fire, Some(ClaimedFire { hold, wait_for })));
            }
        }
    }

    /// The claimed instant does not run: its `skipped` row. `held`: a hold learnt from the
    /// cluster, handed to the core with the fire's end so the schedule is held here too.
    fn skip(&self, fire: Fire, hold: ClaimHold, claim: &Claim, note: &str, held: Option<Hold>) {
        let Fire { spec, mut done, .. } = fire;
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %claim.key.scheduled_at, "skipped: {note}");
        let started = spec.dispatched_at.unwrap_or_else(Utc::now);
        let row = not_run_row(claim, started, Status::Skipped, note);
        self.recorder.rows_detached(vec![row]);
        done.hold_claim(hold);
        match held {
            Some(held) => done.held(held),
            None => done.set(Status::Skipped, false),
        }
    }
}

/// The cycle row of a claimed instant that does not run, under the claim's cycle id.
pub fn not_run_row(claim: &Claim, started: DateTime<Utc>, status: Status, note: &str) -> Row {
    let now = Utc::now();
    Row {
        scheduled_at: Some(claim.key.scheduled_at),
        started_at: started,
        finished_at: now,
        duration_ms: (now - started).num_milliseconds().max(0) as u64,
        priority: Priority::Schedule,
        schedule: claim.key.schedule.clone(),
        cycle: claim.cycle.clone(),
        mode: crate::timing::CYCLE_MODE.to_string(),
        attempt: claim.key.attempt,
        status,
        exit_code: None,
        cost_usd: None,
        note: sanitize_note(note),
    }
}

/// The `interrupted` cycle row a survivor writes for a claim it took over: the dead node's
/// cycle id and attempt, started when that node claimed it.
pub fn takeover_row(taken: &Interrupted, me: &str, now: DateTime<Utc>) -> Row {
    Row {
        scheduled_at: Some(taken.key.scheduled_at),
        started_at: taken.claimed_at,
        finished_at: now,
        duration_ms: (now - taken.claimed_at).num_milliseconds().max(0) as u64,
        priority: Priority::Schedule,
        schedule: taken.key.schedule.clone(),
        cycle: taken.cycle.clone(),
        mode: crate::timing::CYCLE_MODE.to_string(),
        attempt: taken.key.attempt,
        status: Status::Interrupted,
        exit_code: None,
        cost_usd: None,
        note: sanitize_note(&format!(
            "interrupted: node {} stopped renewing its lease (ended {}); taken over by node {me}",
            taken.node,
            taken
                .lease_until
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
    }
}

/// Pushes this node's escalations to the cluster and reads the cluster's back, every `every`
/// and after each push. A read is reported only once every push asked for before it is in
/// the database (the [`Note::Escalations`] generation says up to which), so an escalation
/// of this node is never undone by a read that missed it.
pub async fn escalation_sync(
    node: Node,
    mut requests: mpsc::UnboundedReceiver<EscalateRequest>,
    notes: mpsc::UnboundedSender<Note>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut pending: Vec<EscalateRequest> = Vec::new();
    let mut generation = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            request = requests.recv() => match request {
                Some(request) => pending.push(request),
                None => return,
            },
            _ = tokio::time::sleep(every) => {}
        }
        while let Ok(request) = requests.try_recv() {
            pending.push(request);
        }
        let mut failed = Vec::new();
        for request in pending.drain(..) {
            match node
                .escalate(&request.schedule, &request.fingerprint, request.failures)
                .await
            {
                Ok(()) => {
                    tracing::info!(schedule = %request.schedule, "escalation written to the cluster: the schedule pauses on every node");
                    generation = generation.max(request.generation);
                }
                Err(err) => {
                    tracing::debug!(schedule = %request.schedule, error = %err, "escalation not yet written to the cluster; retrying");
                    failed.push(request);
                }
            }
        }
        pending = failed;
        if !pending.is_empty() {
            continue;
        }
        if let Ok(escalations) = node.escalations().await {
            let _ = notes.send(Note::Escalations {
                escalations,
                generation,
            });
        }
    }
}

/// Reads the latest claimed instant of every schedule (for `catch_up` after a start or an
/// outage) and tells the loop.
pub async fn last_claimed(node: Node, notes: mpsc::UnboundedSender<Note>) {
    match node.cluster_status().await {
        Ok(status) => {
            let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
            for cycle in status.last_cycles {
                let at = last
                    .entry(cycle.key.schedule.clone())
                    .or_insert(cycle.key.scheduled_at);
                *at = (*at).max(cycle.key.scheduled_at);
            }
            let _ = notes.send(Note::LastClaimed(last));
        }
        Err(err) => {
            tracing::warn!(error = %err, "cluster: cannot read the last claims; catch_up waits for the next connection")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Rules;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let first = instance_id(&inst).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(instance_id(&inst).unwrap(), first);
        assert_eq!(
            std::fs::read_to_string(inst.instance_id()).unwrap().trim(),
            first
        );
        // Another instance directory is another instance.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(instance_id(&Instance::new(other.path())).unwrap(), first);
    }

    #[test]
    fn a_survivor_writes_the_dead_nodes_cycle_interrupted_under_its_id() {
        let taken = Interrupted {
            key: ClaimKey {
                schedule: "s".into(),
                scheduled_at: at("2026-11-21T12:00:00Z"),
                attempt: 1,
            },
            cycle: "20261121T120000.000Z-s".into(),
            node: "n1".into(),
            claimed_at: at("2026-11-21T12:00:00.004Z"),
            lease_until: at("2026-11-21T12:00:30Z"),
        };
        let row = takeover_row(&taken, "n2", at("2026-11-21T12:00:31Z"));
        assert_eq!(row.cycle, taken.cycle);
        assert_eq!(row.mode, crate::timing::CYCLE_MODE);
        assert_eq!(row.status, Status::Interrupted);
        assert_eq!(row.scheduled_at, Some(taken.key.scheduled_at));
        assert_eq!(row.started_at, taken.claimed_at);
        assert_eq!(row.duration_ms, 30_996);
        assert!(
            row.note
                .starts_with("interrupted: node n1 stopped renewing its lease"),
            "{}",
            row.note
        );
        assert!(row.note.ends_with("taken over by node n2"), "{}", row.note);
    }

    #[test]
    fn an_instant_not_run_is_recorded_under_its_claims_cycle_and_attempt() {
        let claim = Claim {
            key: ClaimKey {
                schedule: "s".into(),
                scheduled_at: at("2026-11-21T12:00:00Z"),
                attempt: 2,
            },
            cycle: "20261121T120000.000Z-s".into(),
            fence: 7,
            lease_until: at("2026-11-21T12:00:30Z"),
            rules: Rules::default(),
        };
        let row = not_run_row(
            &claim,
            at("2026-11-21T12:00:00.010Z"),
            Status::Skipped,
            "overlap skip:\tthe previous cycle still runs on node n2",
        );
        assert_eq!(
            (row.cycle.as_str(), row.attempt, row.status),
            (claim.cycle.as_str(), 2, Status::Skipped)
        );
        assert!(!row.note.contains('\t'));
        assert_eq!(cycle_id("s", claim.key.scheduled_at), claim.cycle);
    }
}
