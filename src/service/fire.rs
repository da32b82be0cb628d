//! One started fire, as a task on the worker runtime: its jitter, a free slot, the schedule's
//! lock, then the cycle; and a schedule's `on_escalate` hook.
//!
//! Rules: a fire that never starts still gets exactly one cycle row (`interrupted` when the
//! service stops first, `skipped` when its schedule is withdrawn, the schedule's lock is held
//! elsewhere, or the files say the schedule is paused or over budget); its end always reaches
//! the loop, even when the task panics or is dropped ([`DoneGuard`]). The files are checked
//! under the schedule's lock, right before the cycle: a `run-cycle` may have been limited or
//! spent since the core last looked ([`crate::limits::on_disk`]). In a cluster a fire runs
//! only on a claim this node won: the guard also ends the claim ([`ClaimHold::end`]), a lost
//! lease stops the cycle like a shutdown does, and `overlap = "queue"` waits for a cycle of
//! the schedule running on another node.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::cluster::{ClaimHold, ClaimedFire};
use super::core::Done;
use super::run::Ended;
use crate::cycle::{self, CycleSpec};
use crate::instance::Instance;
use crate::limits::{Hold, InstanceBudget};
use crate::lock::{LockError, LockFile};
use crate::metrics::FireStage;
use crate::recorder::Recorder;
use crate::runner::{self, PromptDelivery, RunSpec};
use crate::schedule::{Overlap, Schedule};
use crate::timing::Status;

/// How long an `on_escalate` hook may run.
const ESCALATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a `queue` fire looks again at a schedule another process holds.
const BUSY_RECHECK: Duration = Duration::from_millis(200);
/// How often a `queue` fire asks the cluster again whether another node still runs the
/// schedule (one small query each time).
const ELSEWHERE_RECHECK: Duration = Duration::from_secs(1);

/// Sends the fire's end to the loop when dropped, so a task that panics or is cut short still
/// frees its place in the core's books.
pub struct DoneGuard {
    tx: mpsc::UnboundedSender<Ended>,
    id: String,
    done: Done,
    /// The cluster claim the fire runs on, ended with the fire's status.
    claim: Option<ClaimHold>,
}

impl DoneGuard {
    pub fn new(tx: mpsc::UnboundedSender<Ended>, id: String) -> DoneGuard {
        DoneGuard {
            tx,
            id,
            done: Done::default(),
            claim: None,
        }
    }

    /// The cluster claim the fire runs on, ended when the fire ends.
    pub fn hold_claim(&mut self, claim: ClaimHold) {
        self.claim = Some(claim);
    }

    pub(super) fn set(&mut self, status: Status, counts_as_failure: bool) {
        self.done = Done {
            status: Some(status),
            counts_as_failure,
            ..Done::default()
        };
    }

    /// The cycle ran: its status, its cost, and the pause its rate limits ask for.
    fn ran(&mut self, outcome: &cycle::CycleOutcome) {
        self.done = Done {
            status: Some(outcome.status),
            counts_as_failure: outcome.counts_as_failure,
            cost_usd: outcome.cost_usd,
            hold: outcome
                .paused_until
                .map(|until| Hold::RateLimited { until }),
        };
    }

    /// The files, or the cluster, held the fire (its `skipped` row is written).
    pub(super) fn held(&mut self, hold: Hold) {
        self.done = Done {
            status: Some(Status::Skipped),
            hold: Some(hold),
            ..Done::default()
        };
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            claim.end(self.done.status);
        }
        let _ = self.tx.send(Ended {
            id: std::mem::take(&mut self.id),
            done: self.done,
        });
    }
}

/// What ends a dispatched fire early.
pub struct Stops {
    /// The service stops: fires not started yet are `interrupted`.
    pub stopping: CancellationToken,
    /// Running cycles are cut short (shutdown grace over).
    pub cancel: CancellationToken,
    /// The schedule was disabled or removed: fires not started yet are `skipped`.
    pub withdrawn: CancellationToken,
}

/// A dispatched fire, ready to run.
pub struct Fire {
    pub spec: CycleSpec,
    pub recorder: Recorder,
    pub jitter: Duration,
    pub slots: Arc<Semaphore>,
    pub stops: Stops,
    /// The instance's daily budget, checked with the files under the schedule's lock.
    pub budget: InstanceBudget,
    pub done: DoneGuard,
    /// Its place in the metrics' waiting and running gauges.
    pub stage: FireStage,
}

/// Runs one dispatched fire: jitter, a free slot, the schedule's lock, the pause and
/// budgets on file, the cycle. `claim`: the cluster claim it runs on (the caller judged its
/// rules already).
pub async fn run_fire(fire: Fire, claim: Option<ClaimedFire>) {
    let Fire {
        mut spec,
        recorder,
        jitter,
        slots,
        stops,
        budget,
        mut done,
        mut stage,
    } = fire;
    let Stops {
        stopping,
        cancel,
        withdrawn,
    } = stops;
    // A claim's lease lost stops its cycle (and a wait before it) as a shutdown would.
    let (cancel, lost, wait_for) = match claim {
        Some(ClaimedFire { hold, wait_for }) => {
            let token = hold.cancel_token();
            let node = hold.node().clone();
            done.hold_claim(hold);
            (token.clone(), token, wait_for.map(|other| (node, other)))
        }
        None => (cancel, CancellationToken::new(), None),
    };
    let instant = spec.scheduled_at.unwrap_or_else(Utc::now);
    let dispatched_at = spec.dispatched_at.unwrap_or(instant);
    let cycle_id = spec.cycle.clone();
    let attempt = spec.attempt.max(1);
    let record = |status: Status, note: &str| {
        let mut row = cycle::cycle_row(&spec.schedule, Some(instant), dispatched_at, status, note);
        if let Some(id) = &cycle_id {
            row.cycle = id.clone();
        }
        row.attempt = attempt;
        recorder.rows_detached(vec![row]);
    };
    let not_started = |done: &mut DoneGuard, why: &str| {
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %instant, "not started: {why}");
        record(Status::Interrupted, &format!("not started: {why}"));
        done.set(Status::Interrupted, false);
    };
    let skipped = |done: &mut DoneGuard, note: &str| {
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %instant, "skipped: {note}");
        record(Status::Skipped, note);
        done.set(Status::Skipped, false);
    };
    const WITHDRAWN: &str =
        "not started: the schedule was disabled or removed while the fire waited";
    const LOST: &str = "the cluster lease of its claim was lost";
    if !jitter.is_zero() {
        tokio::select! {
            biased;
            () = stopping.cancelled() => return not_started(&mut done, "the service stopped during the jitter"),
            () = lost.cancelled() => return not_started(&mut done, LOST),
            () = withdrawn.cancelled() => return skipped(&mut done, WITHDRAWN),
            () = tokio::time::sleep(jitter) => {}
        }
    }
    let _permit = tokio::select! {
        biased;
        () = stopping.cancelled() => return not_started(&mut done, "the service stopped while it waited for a slot"),
        () = lost.cancelled() => return not_started(&mut done, LOST),
        () = withdrawn.cancelled() => return skipped(&mut done, WITHDRAWN),
        permit = slots.acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return not_started(&mut done, "the slot pool closed"),
        },
    };
    if stopping.is_cancelled() {
        return not_started(&mut done, "the service is stopping");
    }
    if let Some((node, mut other)) = wait_for {
        // `queue` across nodes: the claim is held (and renewed) while another node's cycle of
        // the schedule runs; a database that does not answer keeps the fire waiting, and the
        // claim's lease decides.
        tracing::info!(schedule = %spec.schedule.id, scheduled_at = %instant, node = %other, "queued behind the cycle running on another node");
        loop {
            tokio::select! {
                biased;
                () = stopping.cancelled() => return not_started(&mut done, &format!("the service stopped while node {other} ran the schedule")),
                () = lost.cancelled() => return not_started(&mut done, LOST),
                () = withdrawn.cancelled() => return skipped(&mut done, WITHDRAWN),
                () = tokio::time::sleep(ELSEWHERE_RECHECK) => {}
            }
            match node.running_elsewhere(&spec.schedule.id).await {
                Ok(None) => break,
                Ok(Some(name)) => other = name,
                Err(err) => {
                    tracing::debug!(schedule = %spec.schedule.id, error = %err, "cannot ask the cluster; still waiting")
                }
            }
        }
    }
    let mut lock = match LockFile::schedule(&spec.inst, &spec.schedule.id) {
        Ok(lock) => lock,
        Err(err) => {
            tracing::error!(schedule = %spec.schedule.id, error = %err, "cannot open the schedule lock");
            done.set(Status::Failed, false);
            return;
        }
    };
    let parallel = spec.schedule.overlap == Overlap::Parallel;
    // A cluster's retry of an interrupted instant is its last run: it waits like `queue`.
    if spec.schedule.overlap == Overlap::Queue || (!parallel && attempt > 1) {
        // Another process (a `run-cycle`) holds the schedule: wait for it, as `queue` says.
        while lock.probe().is_some() {
            tokio::select! {
                biased;
                () = stopping.cancelled() => return not_started(&mut done, "the service stopped while the schedule was busy"),
                () = lost.cancelled() => return not_started(&mut done, LOST),
                () = withdrawn.cancelled() => return skipped(&mut done, WITHDRAWN),
                () = tokio::time::sleep(BUSY_RECHECK) => {}
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
            return skipped(&mut done, &note);
        }
        Err(err) => {
            tracing::error!(schedule = %spec.schedule.id, error = %err, "cannot take the schedule lock");
            done.set(Status::Failed, false);
            return;
        }
    };
    let gate = crate::limits::on_disk(&spec.inst, &spec.schedule, &budget, Utc::now());
    if let Some(hold) = gate.hold {
        skipped(&mut done, &hold.note());
        done.held(hold);
        return;
    }
    spec.allowance = gate.allowance;
    stage.started();
    let id = spec.schedule.id.clone();
    match cycle::run(spec, &recorder, cancel, |_| {}).await {
        Ok(outcome) => done.ran(&outcome),
        Err(err) => {
            tracing::error!(schedule = %id, error = %err, "cycle failed to record");
            done.set(Status::Failed, true);
        }
    }
    drop(held);
}

/// Runs a schedule's `on_escalate` argv once, in its own process group, with a time limit.
/// Its log is a run folder of its own (`<stamp>-<schedule>~escalate/on_escalate.log`), so
/// retention removes it with the cycles' runs.
pub async fn run_on_escalate(
    inst: Instance,
    schedule: Schedule,
    argv: Vec<String>,
    failures: u32,
    cancel: CancellationToken,
) {
    let Some(argv) = crate::program::resolve_argv(&argv, &schedule.cwd) else {
        tracing::error!(schedule = %schedule.id, program = %argv[0], "on_escalate: program not found");
        return;
    };
    let run_name = format!("{}~escalate", schedule.id);
    let run_dir = match crate::runs::create(&inst, &run_name, Utc::now()) {
        Ok((_, path)) => path,
        Err(err) => {
            tracing::error!(schedule = %schedule.id, error = %err, "on_escalate: cannot create its run folder");
            return;
        }
    };
    let root = inst.canonical();
    let spec = RunSpec {
        argv,
        cwd: schedule.cwd.clone(),
        env: vec![
            ("LOOP_SCHEDULE_ID".into(), schedule.id.clone()),
            ("LOOP_DIR".into(), root.root().display().to_string()),
            ("LOOP_FAILURES".into(), failures.to_string()),
        ],
        prompt: PromptDelivery::None,
        prompt_text: String::new(),
        prompt_file: run_dir.join("on_escalate.prompt.md"),
        timeout: ESCALATE_TIMEOUT,
        kill_grace: Duration::from_secs(5),
        log_path: run_dir.join("on_escalate.log"),
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
    crate::runs::finish(&inst, &run_dir);
}
