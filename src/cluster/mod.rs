//! The cluster (SPEC §11): several `serve` processes on several hosts, each with its own
//! instance directory and the same schedules, share one PostgreSQL (15 or later). This
//! module owns everything that speaks to it; no PostgreSQL type leaves it.
//!
//! # The choice
//!
//! Claims with leases on the database's clock, after db-scheduler and river, not Quartz's
//! check-in. Every node tries to claim every due instant; the primary key of `claims`
//! (schedule, scheduled_at, attempt) lets exactly one insert succeed
//! (`INSERT … ON CONFLICT DO NOTHING RETURNING`, every schedule due at an instant in one
//! statement through `unnest`). No `SELECT … FOR UPDATE SKIP LOCKED` is needed: db-scheduler
//! picks rows that already exist (one per task); here the row is the claim, so the insert
//! is the pick. The winner renews its leases every lease/3 in one statement with its
//! heartbeat. A claim's lease is per claim (db-scheduler's `picked_by` + heartbeat), not
//! per node as Quartz's `QRTZ_SCHEDULER_STATE` check-in, so a slow node loses only the
//! claims it failed to renew, and is told so. Leases and heartbeats are stamped and compared
//! by the database's `now()` only (river's `expires_at`), never by a node's clock: Quartz
//! and db-scheduler compare times written by the nodes' clocks, so skew between hosts
//! shortens or stretches leases there. Each claim carries a fencing token (a sequence
//! value): renewing, finishing and releasing name the token, and a claim taken over has
//! left the `running` state, so a node that was presumed dead cannot renew or finish it
//! (Quartz's known hole: a node recovered while still alive goes on running its job, and
//! nothing tells it).
//!
//! # Failure cases and what happens
//!
//! - **Node killed.** Its heartbeat and renewals stop. When a claim's lease ends (database
//!   clock), a takeover pass of any survivor marks it `interrupted`, returns it so that
//!   survivor writes the `interrupted` cycle row, and for a `catch_up` schedule claims the
//!   instant again as attempt 2 and runs it (attempt 1 only is retried: a cycle that kills
//!   its node twice is not chased around the cluster). A restart of the same instance takes
//!   its name back at once and expires its old claims for the takeover pass.
//! - **Network cut.** TCP user timeout and keepalives (a third of a lease) and a deadline on
//!   every request notice it within a lease. The node stops claiming at once (a claim fails
//!   fast while disconnected: it never fires on its own), reconnects with capped backoff,
//!   and stops each running cycle when that claim's trust window ends (below).
//! - **Database down.** As a cut for every node at once: nothing is claimed anywhere, so
//!   nothing runs twice; running cycles stop at their deadlines; rows wait in the outbox;
//!   everything resumes without a restart when it answers. A lease that ran out while the
//!   server was down counts from the server's start: every node gets a lease to report the
//!   cycles that ended meanwhile before anything of theirs is taken over.
//! - **A node paused past its lease** (SIGSTOP, a frozen VM, a suspended laptop). Its trust
//!   windows run on `CLOCK_BOOTTIME`, which counts the pause, so on waking its watchdog
//!   finds the claims past their deadlines and reports them lost before anything else runs;
//!   its renewals are refused by fencing (the claims were taken over); it stops those
//!   cycles. What fencing cannot undo: the pausing node's own processes run again for the
//!   moment until they are stopped, and may overlap a `catch_up` retry on a survivor; tokens
//!   guard the database, not what a mode does to the world outside it.
//! - **A claim answered after its lease.** A claim is trusted from when its request left
//!   (monotonic) for 2/3 of a lease; an answer later than that is not started (`late`) and
//!   is released, so a survivor retries it for `catch_up`. A claim whose request timed out
//!   may have committed: it belongs to no one, expires, and is taken over.
//! - **A renewal that does not come.** At the end of its trust window (2/3 of a lease after
//!   its last renewal was sent) the service is told to stop the cycle; the database's lease
//!   runs another third, so the cycle's processes are stopped before any survivor may take
//!   over (choose a lease of at least 3 × the longest `kill_grace`). The claim is released
//!   when the database answers again.
//! - **Clock skew between nodes.** Leases, heartbeats and liveness use the database's clock
//!   only; a node measures only durations on its own monotonic clock. Fire instants come
//!   from each node's wall clock (cron), so a skewed node fires early or late, but the claim
//!   key is the instant itself, so it never fires twice. The heartbeat measures the offset
//!   to the database's clock and warns above 2 s.
//!
//! # How the service uses it
//!
//! The service loop never waits for the database on the timer's path. A [`Node`] is a
//! handle on three tasks of its own (see [`node`]): heartbeat and renewals, the outbox and
//! takeover work, and a watchdog of deadlines; they report through a channel of [`Event`]s
//! the loop selects on. The loop awaits [`Node::claim`] (one round trip, on a connection
//! that carries nothing heavy) in a task it spawns per due instant, so a slow database
//! delays a dispatch by at most that round trip and never delays the timer;
//! [`Node::finish`], [`Node::mirror`] and [`Node::reconfigure`] queue and return. The other
//! requests (`escalate`, `resume`, `pause`, `running_elsewhere`, status) are awaited off the
//! timer's path the same way. `status --cluster`, `report --cluster` and `resume` use
//! [`Db`] directly.
//!
//! # Tables
//!
//! `nodes`, `claims`, `timing_rows`, `escalations`, `pauses`, created and migrated by the
//! binary (`migrations/NNN_name.sql`, recorded in `schema_migrations`, applied in one
//! transaction under `pg_advisory_xact_lock`). Retention (default 30 days) deletes ended
//! claims, mirrored rows and long-gone nodes; `catch_up` reads claims, so it cannot look
//! further back than the retention.

pub mod db;
pub mod node;
pub mod settings;
mod tls;

pub use db::{
    Beat, Claim, ClaimKey, ClusterStatus, Db, DbError, Due, Escalation, Interrupted, LastCycle,
    NodeStatus, Pause, Registered, Registration, Retained, Rules, RunningClaim, Takeover,
};
pub use node::{Claimed, ClusterError, Event, Link, LostReason, Node, NodeState};
pub use settings::{ClusterConfig, PgUrl, Settings, SettingsError, SslMode};

use sha2::{Digest, Sha256};

use crate::schedule::Schedule;

/// A hash of the effective schedules, equal on nodes whose schedules.json says the same
/// thing about schedules (the `cluster` section, which names the node, is left out):
/// SHA-256 over each schedule's fingerprint (its entry, the defaults and the time zone, in
/// serde_json's canonical order), the first 16 bytes in hex.
pub fn schedules_hash(schedules: &[Schedule]) -> String {
    let mut hasher = Sha256::new();
    for schedule in schedules {
        hasher.update(schedule.fingerprint.as_bytes());
        hasher.update([0u8]);
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
