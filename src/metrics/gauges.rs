//! The per-schedule gauges the service loop publishes from its decision core: next fire,
//! interval, failure streak, escalated, and the instants queued behind a running cycle
//! (part of `waiting_fires`).
//!
//! Rules: the loop tells the [`Publisher`] the state of the schedules a turn may have
//! changed (one after a cycle ends, all after a wake, a reload or a stop); the publisher
//! writes only what differs from what it last wrote, through handles it keeps, so a turn
//! costs a map lookup per schedule and no lock of the registry. A schedule the core no
//! longer has loses its gauges; the counters of its rows stay.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::gauge::Gauge;

use super::{FloatGauge, Metrics, ScheduleLabel};
use crate::schedule::Schedule;
use crate::zone::Zone;

/// Instants looked at for a schedule's interval: enough to see a weekend in a weekday
/// schedule and the longest month in a monthly one.
const INTERVAL_INSTANTS: usize = 8;

/// What the decision core knows of one schedule now.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleState<'a> {
    pub schedule: &'a Schedule,
    pub next: Option<DateTime<Utc>>,
    pub streak: u32,
    pub escalated: bool,
    /// An instant waits behind the running cycle (`overlap = "queue"`).
    pub queued: bool,
}

/// What was last written for one schedule, with the handles to write it again.
struct Shown {
    label: ScheduleLabel,
    streak: Gauge,
    escalated: Gauge,
    next: Option<DateTime<Utc>>,
    /// The cron expression and zone the interval was computed for.
    cron: (String, Zone),
    next_gauge: Option<FloatGauge>,
    queued: bool,
    /// The last [`Publisher::all`] that saw it.
    seen: u64,
}

/// Writes the core's state into the gauges; owned by the loop.
pub struct Publisher {
    metrics: Arc<Metrics>,
    shown: HashMap<String, Shown>,
    /// Counts the calls of [`Publisher::all`].
    round: u64,
}

impl Publisher {
    pub fn new(metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            metrics,
            shown: HashMap::new(),
            round: 0,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every schedule the core has; the gauges of the others are removed.
    pub fn all<'a>(&mut self, states: impl Iterator<Item = ScheduleState<'a>>) {
        self.round += 1;
        let mut count = 0;
        for state in states {
            count += 1;
            let id = &state.schedule.id;
            self.one(state);
            if let Some(shown) = self.shown.get_mut(id) {
                shown.seen = self.round;
            }
        }
        if self.shown.len() > count {
            let gone: Vec<String> = self
                .shown
                .iter()
                .filter(|(_, shown)| shown.seen != self.round)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(shown) = self.shown.remove(&id) {
                    self.forget(shown);
                }
            }
        }
    }

    /// One schedule whose state may have changed.
    pub fn one(&mut self, state: ScheduleState<'_>) {
        let m = &self.metrics;
        let schedule = state.schedule;
        // Looked up before inserting: a turn publishes every schedule, and `entry` would
        // allocate a key for each.
        if !self.shown.contains_key(&schedule.id) {
            let label = ScheduleLabel {
                schedule: schedule.id.clone(),
            };
            let shown = Shown {
                streak: m.failure_streak.get_or_create_owned(&label),
                escalated: m.escalated.get_or_create_owned(&label),
                label,
                next: None,
                cron: (String::new(), Zone::utc()),
                next_gauge: None,
                queued: false,
                seen: 0,
            };
            self.shown.insert(schedule.id.clone(), shown);
        }
        let Some(shown) = self.shown.get_mut(&schedule.id) else {
            return;
        };
        shown.streak.set(i64::from(state.streak));
        shown.escalated.set(i64::from(state.escalated));
        if state.queued != shown.queued {
            if state.queued {
                m.waiting.inc();
            } else {
                m.waiting.dec();
            }
            shown.queued = state.queued;
        }
        let armed_changed = state.next.is_some() != shown.next.is_some();
        if state.next != shown.next {
            match state.next {
                Some(next) => {
                    let gauge = shown
                        .next_gauge
                        .get_or_insert_with(|| m.next_fire.get_or_create_owned(&shown.label));
                    gauge.set(next.timestamp_millis() as f64 / 1e3);
                }
                None => {
                    m.next_fire.remove(&shown.label);
                    shown.next_gauge = None;
                }
            }
            shown.next = state.next;
        }
        let cron_changed =
            shown.cron.0 != schedule.cron.expr() || shown.cron.1 != schedule.timezone;
        if armed_changed || cron_changed {
            match state.next.and_then(|next| interval(schedule, next)) {
                Some(secs) => {
                    m.interval.get_or_create(&shown.label).set(secs);
                }
                None => {
                    m.interval.remove(&shown.label);
                }
            }
            shown.cron = (schedule.cron.expr().to_string(), schedule.timezone.clone());
        }
    }

    fn forget(&self, shown: Shown) {
        let m = &self.metrics;
        if shown.queued {
            m.waiting.dec();
        }
        m.failure_streak.remove(&shown.label);
        m.escalated.remove(&shown.label);
        m.next_fire.remove(&shown.label);
        m.interval.remove(&shown.label);
    }
}

/// The longest gap, in seconds, between `next` and the schedule's instants after it.
fn interval(schedule: &Schedule, next: DateTime<Utc>) -> Option<f64> {
    let mut previous = next;
    let mut longest = None;
    for instant in schedule
        .cron
        .iter_after(next, &schedule.timezone)
        .take(INTERVAL_INSTANTS)
    {
        let gap = (instant - previous).num_milliseconds() as f64 / 1e3;
        longest = Some(longest.map_or(gap, |l: f64| l.max(gap)));
        previous = instant;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Instance;
    use crate::metrics::Format;
    use crate::schedule::ScheduleFields;

    fn schedule(json: &str) -> Schedule {
        let fields: ScheduleFields = serde_json::from_str(json).unwrap();
        Schedule::resolve(
            fields,
            &ScheduleFields::default(),
            Zone::utc(),
            std::path::Path::new("inst"),
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn gauges_follow_the_core_and_go_with_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(&Instance::new(dir.path()));
        let mut publisher = Publisher::new(metrics.clone());
        let weekdays = schedule(r#"{"id": "w", "task": "t", "cron": "0 9 * * 1-5"}"#);
        let other = schedule(r#"{"id": "o", "task": "t", "cron": "@hourly"}"#);
        let state = |s, next, queued| ScheduleState {
            schedule: s,
            next,
            streak: 2,
            escalated: next.is_none(),
            queued,
        };
        // Friday 2026-11-20 09:00 UTC: the gap over the weekend is the longest.
        publisher.all(
            [
                state(&weekdays, Some(at("2026-11-20T09:00:00Z")), true),
                state(&other, Some(at("2026-11-20T10:00:00Z")), false),
            ]
            .into_iter(),
        );
        let text = metrics.encode(Format::Text);
        assert!(
            text.contains(&format!(
                "loop_orchestrator_next_fire_timestamp_seconds{{schedule=\"w\"}} {:.1}\n",
                at("2026-11-20T09:00:00Z").timestamp() as f64
            )),
            "{text}"
        );
        assert!(
            text.contains("loop_orchestrator_schedule_interval_seconds{schedule=\"w\"} 259200")
        );
        assert!(text.contains("loop_orchestrator_schedule_interval_seconds{schedule=\"o\"} 3600"));
        assert!(text.contains("loop_orchestrator_failure_streak{schedule=\"w\"} 2"));
        assert!(text.contains("loop_orchestrator_escalated{schedule=\"w\"} 0"));
        assert_eq!(metrics.waiting.get(), 1);
        // Escalated: no next fire, no interval; the queued instant was dropped.
        publisher.one(state(&weekdays, None, false));
        let text = metrics.encode(Format::Text);
        assert!(text.contains("loop_orchestrator_escalated{schedule=\"w\"} 1"));
        assert!(!text.contains("next_fire_timestamp_seconds{schedule=\"w\"}"));
        assert!(!text.contains("schedule_interval_seconds{schedule=\"w\"}"));
        assert_eq!(metrics.waiting.get(), 0);
        // Removed from the configuration: its gauges go.
        publisher.all([state(&weekdays, None, true)].into_iter());
        assert_eq!(metrics.waiting.get(), 1);
        let text = metrics.encode(Format::Text);
        assert!(!text.contains("schedule=\"o\""), "{text}");
        publisher.all(std::iter::empty());
        assert_eq!(metrics.waiting.get(), 0);
        assert!(!metrics.encode(Format::Text).contains("schedule=\"w\""));
    }
}
