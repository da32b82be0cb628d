//! Whether the scheduler loop is alive (`/healthz`) and the service ready (`/readyz`).
//!
//! The loop writes, the HTTP handlers read, through atomics only: a handler never waits for
//! the loop, so a stalled loop is reported instead of stalling the report.
//!
//! Rules:
//! - The loop records the instant its timer is armed for and stamps each turn. It is
//!   *overdue* when that instant passed more than [`OVERDUE_AFTER`] ago and the loop has
//!   not turned since: a timer wake it did not handle. A loop with nothing armed, or
//!   waiting for an instant still to come, is alive; the loop wakes for nothing else, so
//!   this is what can be known without waking it.
//! - Ready from the first READY (configuration loaded, catch-up dispatched) until the stop
//!   begins.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// How long past its timer's instant the loop may be before it counts as stalled: a turn
/// takes milliseconds; seconds mean the thread is blocked or starved.
pub const OVERDUE_AFTER: TimeDelta = TimeDelta::seconds(5);

/// No instant armed.
const NONE: i64 = i64::MIN;

#[derive(Debug)]
pub struct Health {
    /// Unix milliseconds of the instant the timer is armed for, or [`NONE`].
    due_ms: AtomicI64,
    /// Unix milliseconds of the end of the loop's last turn.
    turned_ms: AtomicI64,
    ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            due_ms: AtomicI64::new(NONE),
            turned_ms: AtomicI64::new(Utc::now().timestamp_millis()),
            ready: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The loop armed its timer for `due`.
    pub fn armed(&self, due: Option<DateTime<Utc>>) {
        let ms = due.map_or(NONE, |d| d.timestamp_millis());
        self.due_ms.store(ms, Ordering::Relaxed);
    }

    /// The loop finished a turn at `now`.
    pub fn turned(&self, now: DateTime<Utc>) {
        self.turned_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// `Err` with the reason when the loop is overdue at `now`.
    pub fn liveness(&self, now: DateTime<Utc>) -> Result<(), String> {
        let due = self.due_ms.load(Ordering::Relaxed);
        let turned = self.turned_ms.load(Ordering::Relaxed);
        let now = now.timestamp_millis();
        if due == NONE || turned >= due || now - due <= OVERDUE_AFTER.num_milliseconds() {
            return Ok(());
        }
        let at = |ms| {
            DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        };
        Err(format!(
            "the scheduler loop is overdue: its timer was due at {} ({} ms ago) and its last turn ended at {}",
            at(due),
            now - due,
            at(turned)
        ))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn overdue_only_past_the_due_instant_without_a_turn() {
        let health = Health::default();
        health.turned(at("2026-11-21T12:00:00Z"));
        assert!(
            health.liveness(at("2026-11-21T13:00:00Z")).is_ok(),
            "nothing armed"
        );
        health.armed(Some(at("2026-11-21T12:00:10Z")));
        assert!(
            health.liveness(at("2026-11-21T12:00:09Z")).is_ok(),
            "not due yet"
        );
        assert!(
            health.liveness(at("2026-11-21T12:00:15Z")).is_ok(),
            "within the grace"
        );
        let err = health.liveness(at("2026-11-21T12:00:15.001Z")).unwrap_err();
        assert!(err.contains("2026-11-21T12:00:10.000Z"), "{err}");
        health.turned(at("2026-11-21T12:00:16Z"));
        assert!(
            health.liveness(at("2026-11-21T12:00:17Z")).is_ok(),
            "turned since"
        );
    }
}
