//! The service's decisions, without I/O: given `now` and an event, what to do.
//!
//! The loop ([`super::run`]) owns the timer, signals, watcher, files and tasks; it tells the
//! core what happened (a wake, a cycle's end, a reload, a stop) and performs the
//! [`Action`]s the core returns. So every rule below is unit-tested without sleeping, and
//! the loop holds no rule of its own (the ntpd-rs shape: `handle_timer(&mut self) -> actions`).
//!
//! Rules (SPEC §7):
//! - Every due instant is dispatched exactly once. Instants due for longer than
//!   [`STALE_AFTER`] were missed (the clock jumped forward, the machine slept): the schedule
//!   fires once, for the latest of them, as cronie runs a job once after a jump.
//! - A fire while the schedule's previous cycle runs follows `overlap`: `skip` writes a
//!   `skipped` cycle row, `queue` runs once after (further fires meanwhile are skipped),
//!   `parallel` runs alongside.
//! - After `max_failures` consecutive cycles that count as failures
//!   ([`crate::timing::Row::counts_as_failure`]) a schedule escalates: no fires until its
//!   entry changes or `resume ID` removes the marker; a fire queued behind the last failure
//!   is dropped with a `skipped` row.
//! - A reload keeps unchanged schedules' next instants, reschedules changed ones from now
//!   (lifting their escalation), stops firing removed or disabled ones (their fires still
//!   waiting do not start), and resumes a schedule whose marker is gone.
//! - A step of the clock back by more than [`CLOCK_STEP_BACK`] re-arms elapsed-time
//!   schedules from the new time; fixed-time ones wait for the clock, unless the step is
//!   larger than [`LARGE_STEP_BACK`] (cronie's rule: the clock was wrong, not adjusted).
//! - On stop, a queued fire gets an `interrupted` row, so every dispatched instant has
//!   exactly one cycle row.
//! - A fire while its schedule is paused by a rate limit, or once a day's cost reached a
//!   budget (the schedule's or the instance's), is one `skipped` cycle row saying why and until
//!   when ([`crate::limits`]); it never counts as a failure. The core learns a cycle's cost and
//!   rate-limit pause from its [`Done`], the pauses on file at start and at each reload, and
//!   today's costs from the rows at start. Another process's spending reaches it through the
//!   fire task, which checks the files before it runs a cycle and reports a hold it found.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::cluster::Rules;
use crate::limits::{Hold, InstanceBudget, Ledger};
use crate::schedule::{Overlap, Schedule};
use crate::state::{Escalation, Pause};
use crate::timing::{Row, Status, failure_streak};

/// Instants due for longer than this were missed, not merely reached late.
pub const STALE_AFTER: TimeDelta = TimeDelta::seconds(60);
/// A step of the clock back by more than this re-arms elapsed-time schedules.
pub const CLOCK_STEP_BACK: TimeDelta = TimeDelta::seconds(1);
/// A step back by more than this re-arms every schedule, fixed-time ones too.
pub const LARGE_STEP_BACK: TimeDelta = TimeDelta::hours(3);

/// What the loop is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a cycle of `schedule` for `instant` (jitter, a free slot and the schedule's lock
    /// come first, in the loop's task).
    Start {
        schedule: Schedule,
        instant: DateTime<Utc>,
        dispatched_at: DateTime<Utc>,
    },
    /// Write the cycle row of an instant that does not run (or, without `instant`, an
    /// escalation's row).
    Row {
        schedule: Schedule,
        instant: Option<DateTime<Utc>>,
        dispatched_at: DateTime<Utc>,
        status: Status,
        note: String,
    },
    /// The schedule escalated: write its marker, its `escalated` row and memory entry, and
    /// run its `on_escalate` once.
    Escalate {
        schedule: Schedule,
        failures: u32,
        at: DateTime<Utc>,
        note: String,
    },
    /// Remove the schedule's escalation marker: its entry changed.
    ClearEscalation { id: String },
    /// Fires of the schedule still waiting for their jitter or a slot must not start.
    Withdraw { id: String },
}

/// A schedule as the service tracks it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub schedule: Schedule,
    /// The next instant to fire; `None` when disabled, escalated or exhausted.
    pub next: Option<DateTime<Utc>>,
    /// Cycles dispatched and not yet done (waiting for a slot included).
    pub running: usize,
    /// An instant waiting for the running cycle to end (`overlap = "queue"`).
    pub queued: Option<DateTime<Utc>>,
    /// Consecutive cycles that counted as failures.
    pub streak: u32,
    pub escalated: bool,
    /// A rate-limit pause, or a budget found spent on file, until its end.
    pub held: Option<Hold>,
    /// Today's cost of the schedule, against its budget.
    pub spent: Ledger,
}

impl Entry {
    fn new(schedule: Schedule, escalated: bool, streak: u32, now: DateTime<Utc>) -> Entry {
        let spent = Ledger::new(
            schedule.max_cost_usd_per_day,
            schedule.timezone.clone(),
            now,
        );
        let mut entry = Entry {
            schedule,
            next: None,
            running: 0,
            queued: None,
            streak,
            escalated,
            held: None,
            spent,
        };
        entry.arm(now);
        entry
    }

    fn arm(&mut self, from: DateTime<Utc>) {
        self.next = if self.schedule.enabled && !self.escalated {
            self.schedule.cron.next_after(from, &self.schedule.timezone)
        } else {
            None
        };
    }
}

/// How a cycle the loop started ended.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Done {
    /// The cycle row's status; `None` when the task ended without one (it could not start).
    pub status: Option<Status>,
    /// Whether its cycle row counts toward the failure streak.
    pub counts_as_failure: bool,
    /// The cycle row's `cost_usd`.
    pub cost_usd: Option<f64>,
    /// A pause its rate-limited modes asked for, or a pause or spent budget the fire found
    /// on file (it did not run then).
    pub hold: Option<Hold>,
}

/// What a reload changed, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub resumed: usize,
}

/// The decision core: every schedule's state.
#[derive(Debug)]
pub struct Core {
    entries: BTreeMap<String, Entry>,
    /// Today's cost of the whole instance, against its budget (see [`Core::load_limits`]).
    instance: Ledger,
    /// The clock at the last observation, to notice it stepping back.
    last_now: DateTime<Utc>,
    stopping: bool,
}

impl Core {
    /// The core of a starting service: schedules with their failure streaks from the rows
    /// already written, escalated when their marker's fingerprint still matches. A marker of
    /// a changed entry is cleared.
    pub fn new(
        schedules: &[Schedule],
        rows: &[Row],
        markers: &HashMap<String, Escalation>,
        now: DateTime<Utc>,
    ) -> (Core, Vec<Action>) {
        let mut actions = Vec::new();
        let mut entries = BTreeMap::new();
        for schedule in schedules {
            let history = rows
                .iter()
                .filter(|r| r.mode == crate::timing::CYCLE_MODE && r.schedule == schedule.id);
            let escalated = match markers.get(&schedule.id) {
                Some(marker) if marker.fingerprint == schedule.fingerprint => true,
                Some(_) => {
                    tracing::info!(schedule = %schedule.id, "escalation lifted: the entry changed");
                    actions.push(Action::ClearEscalation {
                        id: schedule.id.clone(),
                    });
                    false
                }
                None => false,
            };
            let streak = failure_streak(history);
            entries.insert(
                schedule.id.clone(),
                Entry::new(schedule.clone(), escalated, streak, now),
            );
        }
        let core = Core {
            entries,
            instance: Ledger::new(None, crate::zone::Zone::utc(), now),
            last_now: now,
            stopping: false,
        };
        (core, actions)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The earliest instant due, to arm the timer with.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.entries.values().filter_map(|e| e.next).min()
    }

    /// Cycles dispatched and not yet done.
    pub fn running(&self) -> usize {
        self.entries.values().map(|e| e.running).sum()
    }

    /// Notices a step of the system clock back (see the module doc). Called at every turn of
    /// the loop, before the event is handled.
    pub fn observe_clock(&mut self, now: DateTime<Utc>) {
        if now + CLOCK_STEP_BACK < self.last_now {
            let back = self.last_now - now;
            let mut rearmed = 0;
            for entry in self.entries.values_mut() {
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

    /// Fires every instant due at `now`.
    pub fn dispatch_due(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopping {
            return actions;
        }
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Some(first) = entry.next else { continue };
            let (cron, tz) = (&entry.schedule.cron, &entry.schedule.timezone);
            let mut instants = Vec::new();
            if now - first > STALE_AFTER {
                let latest = latest_at_or_before(cron, tz, now, first).unwrap_or(first);
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
                self.fire(&id, instant, now, &mut actions);
            }
        }
        actions
    }

    /// One fire of a schedule: start, queue or skip it.
    fn fire(
        &mut self,
        id: &str,
        instant: DateTime<Utc>,
        dispatched_at: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        if let Some(hold) = self.local_hold(id, dispatched_at) {
            let Some(entry) = self.entries.get(id) else {
                return;
            };
            let note = hold.note();
            tracing::info!(schedule = %id, scheduled_at = %instant, "skipped: {note}");
            actions.push(Action::Row {
                schedule: entry.schedule.clone(),
                instant: Some(instant),
                dispatched_at,
                status: Status::Skipped,
                note,
            });
            return;
        }
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
                actions.push(Action::Row {
                    schedule: entry.schedule.clone(),
                    instant: Some(instant),
                    dispatched_at,
                    status: Status::Skipped,
                    note: note.into(),
                });
                return;
            }
            if entry.schedule.overlap == Overlap::Queue {
                tracing::info!(schedule = %id, scheduled_at = %instant, "queued behind the running cycle");
                entry.queued = Some(instant);
                return;
            }
        }
        entry.running += 1;
        tracing::info!(schedule = %id, scheduled_at = %instant, late_ms = (dispatched_at - instant).num_milliseconds(), "fired");
        actions.push(Action::Start {
            schedule: entry.schedule.clone(),
            instant,
            dispatched_at,
        });
    }

    /// A started cycle ended: count it, escalate when the streak reaches `max_failures`, and
    /// start the fire queued behind it.
    pub fn on_done(&mut self, id: &str, done: Done, now: DateTime<Utc>) -> Vec<Action> {
        let mut actions = Vec::new();
        self.count_limits(id, &done, now);
        let Some(entry) = self.entries.get_mut(id) else {
            return actions;
        };
        entry.running = entry.running.saturating_sub(1);
        if done.counts_as_failure {
            entry.streak += 1;
        } else if done.status == Some(Status::Ok) {
            entry.streak = 0;
        }
        if entry.streak >= entry.schedule.max_failures && !entry.escalated {
            self.escalate(id, now, &mut actions);
        }
        let Some(entry) = self.entries.get_mut(id) else {
            return actions;
        };
        if let Some(instant) = entry.queued.take()
            && !entry.escalated
            && !self.stopping
        {
            self.fire(id, instant, now, &mut actions);
        }
        actions
    }

    fn escalate(&mut self, id: &str, now: DateTime<Utc>, actions: &mut Vec<Action>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let failures = entry.streak;
        entry.escalated = true;
        entry.next = None;
        entry.streak = 0;
        if let Some(instant) = entry.queued.take() {
            actions.push(Action::Row {
                schedule: entry.schedule.clone(),
                instant: Some(instant),
                dispatched_at: now,
                status: Status::Skipped,
                note: "not started: the schedule escalated while it was queued".into(),
            });
        }
        tracing::warn!(schedule = %id, failures, "escalated: paused until its entry changes or `resume {id}`");
        actions.push(Action::Escalate {
            schedule: entry.schedule.clone(),
            failures,
            at: now,
            note: format!(
                "{failures} consecutive failed cycles; paused until its entry changes or `resume {id}`"
            ),
        });
    }

    /// A new valid configuration. `markers` are the escalation markers on disk now, by
    /// schedule id.
    pub fn reload(
        &mut self,
        schedules: &[Schedule],
        markers: &HashMap<String, Escalation>,
        now: DateTime<Utc>,
    ) -> (Vec<Action>, Reloaded) {
        let mut actions = Vec::new();
        let mut summary = Reloaded::default();
        let mut next_entries = BTreeMap::new();
        for schedule in schedules {
            let id = &schedule.id;
            match self.entries.remove(id) {
                Some(mut entry) if entry.schedule.fingerprint == schedule.fingerprint => {
                    entry.schedule = schedule.clone();
                    if entry.escalated && !markers.contains_key(id) {
                        entry.escalated = false;
                        entry.arm(now);
                        summary.resumed += 1;
                        tracing::info!(schedule = %id, "resumed");
                    }
                    next_entries.insert(id.clone(), entry);
                }
                Some(mut entry) => {
                    if entry.escalated {
                        actions.push(Action::ClearEscalation { id: id.clone() });
                        entry.escalated = false;
                        entry.streak = 0;
                        tracing::info!(schedule = %id, "escalation lifted: the entry changed");
                    }
                    entry.schedule = schedule.clone();
                    entry.arm(now);
                    summary.changed += 1;
                    if !schedule.enabled {
                        withdraw(&mut entry, now, "disabled", &mut actions);
                    }
                    tracing::info!(schedule = %id, next = ?entry.next, "rescheduled");
                    next_entries.insert(id.clone(), entry);
                }
                None => {
                    let escalated = markers
                        .get(id)
                        .is_some_and(|m| m.fingerprint == schedule.fingerprint);
                    let entry = Entry::new(schedule.clone(), escalated, 0, now);
                    summary.added += 1;
                    tracing::info!(schedule = %id, next = ?entry.next, "added");
                    next_entries.insert(id.clone(), entry);
                }
            }
        }
        for (id, entry) in &mut self.entries {
            tracing::info!(schedule = %id, "removed: no more fires; a running cycle finishes");
            withdraw(entry, now, "removed", &mut actions);
        }
        summary.removed = self.entries.len();
        self.entries = next_entries;
        (actions, summary)
    }

    /// `catch_up = true`: the last instant missed while the service was down (the rows say
    /// when it last fired) runs once, now.
    pub fn catch_up(&mut self, rows: &[Row], now: DateTime<Utc>) -> Vec<Action> {
        let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
        for row in rows.iter().filter(|r| r.mode == crate::timing::CYCLE_MODE) {
            if let Some(at) = row.scheduled_at {
                let slot = last.entry(row.schedule.clone()).or_insert(at);
                *slot = (*slot).max(at);
            }
        }
        self.catch_up_from(&last, now)
    }

    /// `catch_up` from the last instant each schedule fired for (from the rows, or in a
    /// cluster from the claims too): the latest instant missed since runs once, now.
    pub fn catch_up_from(
        &mut self,
        last: &HashMap<String, DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let ids: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.schedule.catch_up && e.next.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let entry = &self.entries[&id];
            let Some(&last) = last.get(&id) else { continue };
            let (cron, tz) = (&entry.schedule.cron, &entry.schedule.timezone);
            let missed = cron
                .next_after(last, tz)
                .filter(|t| *t <= now)
                .and_then(|first| latest_at_or_before(cron, tz, now, first));
            if let Some(instant) = missed {
                tracing::info!(schedule = %id, scheduled_at = %instant, "catch-up: firing the instant missed while the service was down");
                self.fire(&id, instant, now, &mut actions);
            }
        }
        actions
    }

    /// The service stops: nothing new starts; queued fires get `interrupted` rows.
    pub fn stop(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        self.stopping = true;
        let mut actions = Vec::new();
        for entry in self.entries.values_mut() {
            if let Some(instant) = entry.queued.take() {
                actions.push(Action::Row {
                    schedule: entry.schedule.clone(),
                    instant: Some(instant),
                    dispatched_at: now,
                    status: Status::Interrupted,
                    note: "not started: the service stopped while it was queued".into(),
                });
            }
        }
        actions
    }

    /// A cycle ended during shutdown: only counted.
    pub fn count_done(&mut self, id: &str) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.running = entry.running.saturating_sub(1);
        }
    }

    /// One line for sd_notify `STATUS=`.
    pub fn status_line(&self) -> String {
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
        line
    }
}

/// Pauses and budgets (SPEC §8): the local rule. What this node knows (its own cycles' costs
/// and pauses, the files at start and reload) lives in [`Entry::held`], [`Entry::spent`] and
/// the instance's ledger; rules learnt elsewhere (another node's claims in a cluster) merge
/// into the same fields through a method of their own, and [`Core::local_hold`] applies both.
impl Core {
    /// What the files say: the instance's budget, the schedules' pauses on file (a schedule
    /// without one is not paused: `resume` lifts a pause by removing its file), and, at start,
    /// today's costs from the rows already written. Called after [`Core::new`] and after each
    /// [`Core::reload`] (without rows: the costs counted since start stay).
    pub fn load_limits(
        &mut self,
        budget: &InstanceBudget,
        pauses: &HashMap<String, Pause>,
        rows: Option<&[Row]>,
        now: DateTime<Utc>,
    ) {
        let recent = rows.map(|rows| crate::limits::recent_costs(rows, now));
        let mut instance = Ledger::new(budget.max_usd_per_day, budget.zone.clone(), now);
        match &recent {
            Some(recent) => instance.count_rows(recent.values().flatten().copied(), None),
            None if self.instance.zone == budget.zone => {
                instance.usd = self.instance.at(now).usd;
            }
            None => {}
        }
        self.instance = instance;
        for (id, entry) in &mut self.entries {
            let mut spent = Ledger::new(
                entry.schedule.max_cost_usd_per_day,
                entry.schedule.timezone.clone(),
                now,
            );
            match &recent {
                Some(recent) => spent.count_rows(
                    recent.get(id.as_str()).into_iter().flatten().copied(),
                    Some(id),
                ),
                None if entry.spent.zone == spent.zone => spent.usd = entry.spent.at(now).usd,
                None => {}
            }
            entry.spent = spent;
            entry.held = pauses
                .get(id)
                .filter(|p| p.until > now)
                .map(|p| Hold::RateLimited { until: p.until });
        }
    }

    /// Why a fire of `id` may not run at `now`, if it may not.
    pub fn local_hold(&self, id: &str, now: DateTime<Utc>) -> Option<Hold> {
        let entry = self.entries.get(id)?;
        entry
            .held
            .filter(|hold| hold.until() > now)
            .or_else(|| crate::limits::hold(now, None, &entry.spent, &self.instance))
    }

    /// A fire's end: its cost counts toward today's, its hold holds the schedule.
    fn count_limits(&mut self, id: &str, done: &Done, now: DateTime<Utc>) {
        if let Some(cost) = done.cost_usd {
            self.instance.add(now, cost);
        }
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(cost) = done.cost_usd {
            entry.spent.add(now, cost);
        }
        if let Some(hold) = done.hold
            && entry.held.is_none_or(|held| held.until() < hold.until())
        {
            tracing::warn!(schedule = %id, until = %hold.until(), "held: {}", hold.note());
            entry.held = Some(hold);
        }
    }
}

/// What a cluster sync of escalations changed (see [`Core::cluster_escalations`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EscalationSync {
    pub actions: Vec<Action>,
    /// Schedules paused here because they escalated on another node.
    pub paused: Vec<String>,
    /// Schedules resumed here because their escalation was lifted on some node.
    pub resumed: Vec<String>,
}

/// The cluster's share of the core (SPEC §11): escalations held cluster-wide and instants a
/// survivor retries. Kept apart so the single-node rules above read on their own.
impl Core {
    /// Escalations in force cluster-wide (schedule → the fingerprint of the entry that
    /// escalated). A schedule escalated elsewhere with this node's entry pauses here; a
    /// schedule paused here whose escalation is gone from the cluster (`resume` on any node)
    /// fires again from now. An escalation of another entry does not apply (the entry
    /// changed, which lifts it).
    pub fn cluster_escalations(
        &mut self,
        escalated: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> EscalationSync {
        let mut sync = EscalationSync::default();
        let ids: Vec<String> = self.entries.keys().cloned().collect();
        for id in ids {
            let entry = &self.entries[&id];
            let applies = escalated
                .get(&id)
                .is_some_and(|fp| *fp == entry.schedule.fingerprint);
            if applies && !entry.escalated {
                self.pause_escalated_elsewhere(&id, now, &mut sync.actions);
                sync.paused.push(id);
            } else if !applies && entry.escalated {
                let entry = self.entries.get_mut(&id).expect("listed above");
                entry.escalated = false;
                entry.streak = 0;
                entry.arm(now);
                tracing::info!(schedule = %id, "resumed: the escalation was lifted in the cluster");
                sync.actions
                    .push(Action::ClearEscalation { id: id.clone() });
                sync.resumed.push(id);
            }
        }
        sync
    }

    /// A claim's rules said `id` escalated on another node with this node's entry: pause it
    /// here too. Returns false when it already was.
    pub fn escalated_elsewhere(
        &mut self,
        id: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> (bool, Vec<Action>) {
        let mut actions = Vec::new();
        let applies = self
            .entries
            .get(id)
            .is_some_and(|e| !e.escalated && e.schedule.fingerprint == fingerprint);
        if applies {
            self.pause_escalated_elsewhere(id, now, &mut actions);
        }
        (applies, actions)
    }

    fn pause_escalated_elsewhere(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.escalated = true;
        entry.next = None;
        entry.streak = 0;
        if let Some(instant) = entry.queued.take() {
            actions.push(Action::Row {
                schedule: entry.schedule.clone(),
                instant: Some(instant),
                dispatched_at: now,
                status: Status::Skipped,
                note: "not started: the schedule escalated on another node while it was queued"
                    .into(),
            });
        }
        tracing::warn!(schedule = %id, "escalated on another node: paused here too until its entry changes or `resume {id}` on any node");
    }

    /// A survivor claimed an instant again after a takeover (`catch_up`): the retry counts as
    /// a running cycle of the schedule. `None` (nothing counted) when the schedule is not
    /// this node's to fire now: unknown here, disabled, escalated, or the service stopping.
    pub fn start_retry(&mut self, id: &str) -> Option<Schedule> {
        if self.stopping {
            return None;
        }
        let entry = self.entries.get_mut(id)?;
        if !entry.schedule.enabled || entry.escalated {
            return None;
        }
        entry.running += 1;
        Some(entry.schedule.clone())
    }
}

/// What a claim this node won means for its fire, from the cluster-wide rules its round trip
/// read (SPEC §11). Pure, as the core is.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimVerdict {
    Run,
    /// `overlap = "queue"` while a cycle of the schedule runs on `node`: wait for it to end,
    /// then run.
    WaitFor {
        node: String,
    },
    /// The cycle does not run: a `skipped` cycle row with this note.
    Skip {
        note: String,
    },
    /// Held cluster-wide: a rate-limit pause some node set, or the schedule's daily budget
    /// spent across nodes. A `skipped` row with the hold's note; the hold comes back to the
    /// core with the fire's [`Done`], so the schedule is held here too until its end.
    Held {
        hold: Hold,
    },
    /// Escalated on `node` with this node's entry: a `skipped` row, and the schedule pauses
    /// here too ([`Core::escalated_elsewhere`]).
    Escalated {
        node: String,
        fingerprint: String,
        note: String,
    },
}

/// `attempt` > 1 is a retry after a takeover (`catch_up`): the only run left of its instant,
/// so it waits for a cycle running elsewhere instead of being skipped. `now`: the claim's
/// answer, for the end of a spent budget's day.
pub fn claim_verdict(
    schedule: &Schedule,
    rules: &Rules,
    attempt: u32,
    now: DateTime<Utc>,
) -> ClaimVerdict {
    if let Some(e) = &rules.escalation
        && e.fingerprint == schedule.fingerprint
    {
        return ClaimVerdict::Escalated {
            node: e.node.clone(),
            fingerprint: e.fingerprint.clone(),
            note: format!(
                "not started: escalated on node {} ({} consecutive failed cycles); paused until its entry changes or `resume {}`",
                e.node, e.failures, schedule.id
            ),
        };
    }
    // A pause some node set, still in force by the database's clock (SPEC §8 across nodes).
    if let Some(p) = &rules.paused {
        return ClaimVerdict::Held {
            hold: Hold::RateLimited { until: p.until },
        };
    }
    // The schedule's cost today on every node (asked for by `Due::cost_since` when it has
    // a budget). The instance's budget stays each node's own: the database sums rows per
    // schedule, and an instance budget counts one instance directory's spending.
    if let (Some(max_usd), Some(usd)) = (schedule.max_cost_usd_per_day, rules.cost_since)
        && usd >= max_usd
    {
        let day = Ledger::new(Some(max_usd), schedule.timezone.clone(), now);
        return ClaimVerdict::Held {
            hold: Hold::BudgetSpent {
                until: day.day_end,
                whose: crate::limits::Whose::Schedule,
                usd,
                max_usd,
            },
        };
    }
    match (&rules.running_on, schedule.overlap) {
        (Some(node), Overlap::Skip | Overlap::Queue) if attempt > 1 => {
            ClaimVerdict::WaitFor { node: node.clone() }
        }
        (Some(node), Overlap::Skip) => ClaimVerdict::Skip {
            note: format!("overlap skip: the previous cycle still runs on node {node}"),
        },
        (Some(node), Overlap::Queue) => ClaimVerdict::WaitFor { node: node.clone() },
        _ => ClaimVerdict::Run,
    }
}

/// A schedule disabled or removed by a reload: its queued instant gets a `skipped` row and
/// its fires still waiting do not start.
fn withdraw(entry: &mut Entry, now: DateTime<Utc>, how: &str, actions: &mut Vec<Action>) {
    actions.push(Action::Withdraw {
        id: entry.schedule.id.clone(),
    });
    if let Some(instant) = entry.queued.take() {
        actions.push(Action::Row {
            schedule: entry.schedule.clone(),
            instant: Some(instant),
            dispatched_at: now,
            status: Status::Skipped,
            note: format!("not started: the schedule was {how} while it was queued"),
        });
    }
}

/// The latest instant of `cron` at or before `now`, not before `floor`. Searches windows of
/// growing size back from `now`, so a per-second schedule after a day of downtime costs a
/// minute's worth of steps, not a day's.
pub fn latest_at_or_before(
    cron: &crate::cron::Cron,
    tz: &crate::zone::Zone,
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
        let start = (now - TimeDelta::seconds(window)).max(floor - TimeDelta::nanoseconds(1));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::Cron;
    use crate::schedule::ScheduleFields;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A schedule from the JSON of its entry, as schedules.json would give it.
    fn schedule(json: &str) -> Schedule {
        let fields: ScheduleFields = serde_json::from_str(json).unwrap();
        let mut s = Schedule::resolve(
            fields,
            &ScheduleFields::default(),
            crate::zone::Zone::utc(),
            std::path::Path::new("inst"),
        );
        s.fingerprint = json.to_string();
        s
    }

    fn core(schedules: &[Schedule], now: DateTime<Utc>) -> Core {
        let (core, actions) = Core::new(schedules, &[], &HashMap::new(), now);
        assert!(actions.is_empty());
        core
    }

    fn starts(actions: &[Action]) -> Vec<DateTime<Utc>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { instant, .. } => Some(*instant),
                _ => None,
            })
            .collect()
    }

    fn rows(actions: &[Action]) -> Vec<(Option<DateTime<Utc>>, Status, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Row {
                    instant,
                    status,
                    note,
                    ..
                } => Some((*instant, *status, note.clone())),
                _ => None,
            })
            .collect()
    }

    const FAILED: Done = Done {
        status: Some(Status::Failed),
        counts_as_failure: true,
        cost_usd: None,
        hold: None,
    };
    const OK: Done = Done {
        status: Some(Status::Ok),
        counts_as_failure: false,
        cost_usd: None,
        hold: None,
    };

    #[test]
    fn every_due_instant_is_dispatched_once_and_the_timer_moves_on() {
        let s =
            schedule(r#"{"id": "a", "task": "t", "cron": "* * * * * *", "overlap": "parallel"}"#);
        let mut core = core(&[s], at("2026-11-21T12:00:00.500Z"));
        assert_eq!(core.next_due(), Some(at("2026-11-21T12:00:01Z")));
        // A late wake covers three instants: each starts once.
        let actions = core.dispatch_due(at("2026-11-21T12:00:03.200Z"));
        assert_eq!(
            starts(&actions),
            vec![
                at("2026-11-21T12:00:01Z"),
                at("2026-11-21T12:00:02Z"),
                at("2026-11-21T12:00:03Z")
            ]
        );
        assert_eq!(core.next_due(), Some(at("2026-11-21T12:00:04Z")));
        assert!(core.dispatch_due(at("2026-11-21T12:00:03.900Z")).is_empty());
        assert_eq!(core.running(), 3);
    }

    #[test]
    fn overlap_skip_writes_a_skipped_row_and_parallel_runs_alongside() {
        let skip = schedule(r#"{"id": "s", "task": "t", "cron": "* * * * * *"}"#);
        let par =
            schedule(r#"{"id": "p", "task": "t", "cron": "* * * * * *", "overlap": "parallel"}"#);
        let mut core = core(&[skip, par], at("2026-11-21T12:00:00.500Z"));
        let first = core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        assert_eq!(starts(&first).len(), 2);
        let second = core.dispatch_due(at("2026-11-21T12:00:02.001Z"));
        assert_eq!(starts(&second).len(), 1, "parallel starts again");
        assert_eq!(
            rows(&second),
            vec![(
                Some(at("2026-11-21T12:00:02Z")),
                Status::Skipped,
                "overlap skip: the previous cycle still runs".to_string()
            )]
        );
    }

    #[test]
    fn overlap_queue_runs_one_fire_after_and_skips_the_rest() {
        let q = schedule(r#"{"id": "q", "task": "t", "cron": "* * * * * *", "overlap": "queue"}"#);
        let mut core = core(&[q], at("2026-11-21T12:00:00.500Z"));
        assert_eq!(
            starts(&core.dispatch_due(at("2026-11-21T12:00:01.001Z"))).len(),
            1
        );
        assert!(core.dispatch_due(at("2026-11-21T12:00:02.001Z")).is_empty());
        assert_eq!(
            core.entry("q").unwrap().queued,
            Some(at("2026-11-21T12:00:02Z"))
        );
        let third = core.dispatch_due(at("2026-11-21T12:00:03.001Z"));
        assert_eq!(rows(&third)[0].1, Status::Skipped);
        assert_eq!(
            rows(&third)[0].2,
            "overlap queue: a cycle is already queued"
        );
        let after = core.on_done("q", OK, at("2026-11-21T12:00:03.500Z"));
        assert_eq!(starts(&after), vec![at("2026-11-21T12:00:02Z")]);
        assert!(core.entry("q").unwrap().queued.is_none());
    }

    #[test]
    fn escalation_after_max_failures_pauses_and_drops_the_queued_fire() {
        let q = schedule(
            r#"{"id": "e", "task": "t", "cron": "* * * * * *", "overlap": "queue", "max_failures": 2}"#,
        );
        let mut core = core(&[q], at("2026-11-21T12:00:00.500Z"));
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        assert!(
            core.on_done("e", FAILED, at("2026-11-21T12:00:01.500Z"))
                .is_empty()
        );
        core.dispatch_due(at("2026-11-21T12:00:02.001Z"));
        core.dispatch_due(at("2026-11-21T12:00:03.001Z")); // queued behind the running cycle
        let actions = core.on_done("e", FAILED, at("2026-11-21T12:00:03.500Z"));
        assert!(
            starts(&actions).is_empty(),
            "the queued fire does not start"
        );
        assert_eq!(
            rows(&actions),
            vec![(
                Some(at("2026-11-21T12:00:03Z")),
                Status::Skipped,
                "not started: the schedule escalated while it was queued".to_string()
            )]
        );
        assert!(matches!(
            actions.last(),
            Some(Action::Escalate { failures: 2, .. })
        ));
        assert_eq!(core.next_due(), None);
        assert!(core.dispatch_due(at("2026-11-21T12:00:10Z")).is_empty());
    }

    #[test]
    fn a_rate_limited_failure_does_not_count_and_an_ok_resets_the_streak() {
        let s = schedule(r#"{"id": "r", "task": "t", "cron": "* * * * * *", "max_failures": 2}"#);
        let mut core = core(&[s], at("2026-11-21T12:00:00.500Z"));
        let limited = Done {
            status: Some(Status::Failed),
            counts_as_failure: false,
            ..Done::default()
        };
        for (second, done) in [
            (1, FAILED),
            (2, limited),
            (3, limited),
            (4, OK),
            (5, FAILED),
        ] {
            core.dispatch_due(at(&format!("2026-11-21T12:00:0{second}.001Z")));
            let actions = core.on_done("r", done, at(&format!("2026-11-21T12:00:0{second}.5Z")));
            assert!(actions.is_empty(), "{second}: {actions:?}");
        }
        assert_eq!(core.entry("r").unwrap().streak, 1);
    }

    #[test]
    fn a_rate_limit_pause_skips_fires_until_its_end_and_counts_nothing() {
        let s = schedule(r#"{"id": "r", "task": "t", "cron": "* * * * * *", "max_failures": 1}"#);
        let mut core = core(&[s], at("2026-11-21T12:00:00.500Z"));
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        let limited = Done {
            status: Some(Status::Failed),
            counts_as_failure: false,
            cost_usd: Some(0.01),
            hold: Some(Hold::RateLimited {
                until: at("2026-11-21T12:00:03.500Z"),
            }),
        };
        assert!(
            core.on_done("r", limited, at("2026-11-21T12:00:01.5Z"))
                .is_empty()
        );
        for second in [2, 3] {
            let actions = core.dispatch_due(at(&format!("2026-11-21T12:00:0{second}.001Z")));
            assert!(starts(&actions).is_empty());
            assert_eq!(
                rows(&actions)[0].2,
                "rate limited until 2026-11-21T12:00:03Z",
                "{second}"
            );
        }
        assert_eq!(
            starts(&core.dispatch_due(at("2026-11-21T12:00:04.001Z"))).len(),
            1
        );
        assert!(!core.entry("r").unwrap().escalated);
    }

    #[test]
    fn a_spent_budget_skips_fires_until_the_next_day_and_a_reload_keeps_the_count() {
        let s = schedule(
            r#"{"id": "b", "task": "t", "cron": "0 0 * * * *", "max_cost_usd_per_day": 0.02}"#,
        );
        let now = at("2026-11-21T21:30:00Z");
        let mut core = core(std::slice::from_ref(&s), now);
        let row = |cost: f64| Row {
            scheduled_at: None,
            started_at: at("2026-11-21T10:00:00Z"),
            finished_at: at("2026-11-21T10:00:01Z"),
            duration_ms: 1000,
            priority: crate::timing::Priority::Schedule,
            schedule: "b".into(),
            cycle: "c".into(),
            mode: "cycle".into(),
            attempt: 1,
            status: Status::Ok,
            exit_code: None,
            cost_usd: Some(cost),
            note: String::new(),
        };
        let budget = InstanceBudget {
            max_usd_per_day: None,
            zone: crate::zone::Zone::utc(),
        };
        core.load_limits(&budget, &HashMap::new(), Some(&[row(0.0123)]), now);
        assert_eq!(
            starts(&core.dispatch_due(at("2026-11-21T22:00:00Z"))).len(),
            1
        );
        let done = Done {
            status: Some(Status::Ok),
            cost_usd: Some(0.0123),
            ..Done::default()
        };
        core.on_done("b", done, at("2026-11-21T22:00:05Z"));
        core.reload(&[s], &HashMap::new(), at("2026-11-21T22:10:00Z"));
        core.load_limits(&budget, &HashMap::new(), None, at("2026-11-21T22:10:00Z"));
        let actions = core.dispatch_due(at("2026-11-21T23:00:00Z"));
        assert_eq!(
            rows(&actions)[0].2,
            "budget spent until 2026-11-22T00:00:00Z: $0.0246 of the schedule's budget of $0.02 a day"
        );
        assert_eq!(
            starts(&core.dispatch_due(at("2026-11-22T00:00:00Z"))).len(),
            1
        );
    }

    #[test]
    fn the_instance_budget_holds_every_schedule_and_a_pause_on_file_holds_one() {
        let a = schedule(r#"{"id": "a", "task": "t", "cron": "0 * * * * *"}"#);
        let b = schedule(r#"{"id": "b", "task": "t", "cron": "0 * * * * *"}"#);
        let now = at("2026-11-21T12:00:30Z");
        let mut core = core(&[a, b], now);
        let budget = InstanceBudget {
            max_usd_per_day: Some(1.0),
            zone: crate::zone::Zone::utc(),
        };
        let pause = Pause {
            until: at("2026-11-21T12:01:30Z"),
            at: now,
            cycle: "c".into(),
            note: "limited".into(),
        };
        core.load_limits(
            &budget,
            &HashMap::from([("a".to_string(), pause)]),
            Some(&[]),
            now,
        );
        let actions = core.dispatch_due(at("2026-11-21T12:01:00Z"));
        assert_eq!(starts(&actions).len(), 1, "b runs, a is paused");
        assert_eq!(
            rows(&actions)[0].2,
            "rate limited until 2026-11-21T12:01:30Z"
        );
        let done = Done {
            status: Some(Status::Ok),
            cost_usd: Some(1.5),
            ..Done::default()
        };
        core.on_done("b", done, at("2026-11-21T12:01:10Z"));
        let actions = core.dispatch_due(at("2026-11-21T12:02:00Z"));
        assert!(starts(&actions).is_empty());
        assert!(
            rows(&actions)
                .iter()
                .all(|r| r.2.ends_with("of the instance's budget of $1 a day"))
        );
    }

    #[test]
    fn streaks_start_from_the_rows_and_markers_of_changed_entries_are_cleared() {
        let a = schedule(r#"{"id": "a", "task": "t"}"#);
        let b = schedule(r#"{"id": "b", "task": "changed"}"#);
        let row = |status| Row {
            scheduled_at: None,
            started_at: at("2026-11-21T11:00:00Z"),
            finished_at: at("2026-11-21T11:00:01Z"),
            duration_ms: 1000,
            priority: crate::timing::Priority::Schedule,
            schedule: "a".into(),
            cycle: "c".into(),
            mode: "cycle".into(),
            attempt: 1,
            status,
            exit_code: None,
            cost_usd: None,
            note: String::new(),
        };
        let marker = |fp: &str| Escalation {
            at: at("2026-11-21T11:00:00Z"),
            failures: 3,
            fingerprint: fp.into(),
        };
        let markers = HashMap::from([
            ("a".to_string(), marker(&a.fingerprint)),
            ("b".to_string(), marker("an older entry")),
        ]);
        let (core, actions) = Core::new(
            &[a, b],
            &[row(Status::Ok), row(Status::Failed), row(Status::Timeout)],
            &markers,
            at("2026-11-21T12:00:00Z"),
        );
        assert_eq!(actions, vec![Action::ClearEscalation { id: "b".into() }]);
        let a = core.entry("a").unwrap();
        assert!(a.escalated && a.next.is_none());
        assert_eq!(a.streak, 2);
        assert!(!core.entry("b").unwrap().escalated);
    }

    #[test]
    fn reload_keeps_unchanged_instants_reschedules_changed_and_withdraws_removed() {
        let now = at("2026-11-21T12:00:00.500Z");
        let keep = schedule(r#"{"id": "keep", "task": "t", "cron": "0 0 * * * *"}"#);
        let change =
            schedule(r#"{"id": "change", "task": "t", "cron": "0 0 * * * *", "overlap": "queue"}"#);
        let gone =
            schedule(r#"{"id": "gone", "task": "t", "cron": "* * * * * *", "overlap": "queue"}"#);
        let mut core = core(&[keep.clone(), change, gone], now);
        // "gone" runs with a fire queued behind it.
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        core.dispatch_due(at("2026-11-21T12:00:02.001Z"));
        let changed = schedule(
            r#"{"id": "change", "task": "t", "cron": "30 * * * * *", "overlap": "queue"}"#,
        );
        let added = schedule(r#"{"id": "new", "task": "t", "cron": "0 0 * * * *"}"#);
        let later = at("2026-11-21T12:00:05Z");
        let (actions, summary) = core.reload(&[keep, changed, added], &HashMap::new(), later);
        assert_eq!(
            summary,
            Reloaded {
                added: 1,
                changed: 1,
                removed: 1,
                resumed: 0
            }
        );
        assert!(actions.contains(&Action::Withdraw { id: "gone".into() }));
        assert_eq!(
            rows(&actions),
            vec![(
                Some(at("2026-11-21T12:00:02Z")),
                Status::Skipped,
                "not started: the schedule was removed while it was queued".to_string()
            )]
        );
        assert_eq!(
            core.entry("keep").unwrap().next,
            Some(at("2026-11-21T13:00:00Z"))
        );
        assert_eq!(
            core.entry("change").unwrap().next,
            Some(at("2026-11-21T12:00:30Z"))
        );
        assert!(core.entry("gone").is_none());
    }

    #[test]
    fn reload_disabling_withdraws_and_a_removed_marker_resumes() {
        let now = at("2026-11-21T12:00:00.500Z");
        let s = schedule(r#"{"id": "x", "task": "t", "cron": "* * * * * *", "max_failures": 1}"#);
        let mut core = core(std::slice::from_ref(&s), now);
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        core.on_done("x", FAILED, at("2026-11-21T12:00:01.5Z"));
        assert!(core.entry("x").unwrap().escalated);
        // The same entry, its marker still there: stays paused.
        let marker = Escalation {
            at: now,
            failures: 1,
            fingerprint: s.fingerprint.clone(),
        };
        let markers = HashMap::from([("x".to_string(), marker)]);
        let (_, summary) = core.reload(
            std::slice::from_ref(&s),
            &markers,
            at("2026-11-21T12:00:02Z"),
        );
        assert_eq!(summary.resumed, 0);
        assert!(core.entry("x").unwrap().next.is_none());
        // `resume` removed the marker: fires again from now.
        let (_, summary) = core.reload(&[s], &HashMap::new(), at("2026-11-21T12:00:03.2Z"));
        assert_eq!(summary.resumed, 1);
        assert_eq!(
            core.entry("x").unwrap().next,
            Some(at("2026-11-21T12:00:04Z"))
        );
        // Disabled: withdrawn, not armed.
        let off = schedule(
            r#"{"id": "x", "task": "t", "cron": "* * * * * *", "max_failures": 1, "enabled": false}"#,
        );
        let (actions, _) = core.reload(&[off], &HashMap::new(), at("2026-11-21T12:00:04Z"));
        assert!(actions.contains(&Action::Withdraw { id: "x".into() }));
        assert_eq!(core.next_due(), None);
    }

    #[test]
    fn a_clock_step_back_rearms_elapsed_time_schedules_and_fixed_time_ones_wait() {
        let elapsed = schedule(r#"{"id": "e", "task": "t", "cron": "0 */10 * * * *"}"#);
        let fixed = schedule(r#"{"id": "f", "task": "t", "cron": "0 30 2 * * *"}"#);
        let mut core = core(&[elapsed, fixed], at("2026-11-21T12:05:00Z"));
        assert_eq!(
            core.entry("e").unwrap().next,
            Some(at("2026-11-21T12:10:00Z"))
        );
        assert_eq!(
            core.entry("f").unwrap().next,
            Some(at("2026-11-22T02:30:00Z"))
        );
        // One hour back.
        core.observe_clock(at("2026-11-21T11:05:00Z"));
        assert_eq!(
            core.entry("e").unwrap().next,
            Some(at("2026-11-21T11:10:00Z"))
        );
        assert_eq!(
            core.entry("f").unwrap().next,
            Some(at("2026-11-22T02:30:00Z"))
        );
        // Two days back: beyond three hours, fixed-time schedules re-arm too.
        core.observe_clock(at("2026-11-19T11:05:00Z"));
        assert_eq!(
            core.entry("f").unwrap().next,
            Some(at("2026-11-20T02:30:00Z"))
        );
        // Half a second back is noise.
        core.observe_clock(at("2026-11-19T11:04:59.500Z"));
        assert_eq!(
            core.entry("e").unwrap().next,
            Some(at("2026-11-19T11:10:00Z"))
        );
    }

    #[test]
    fn a_forward_jump_fires_once_for_the_latest_missed_instant() {
        let s =
            schedule(r#"{"id": "m", "task": "t", "cron": "0 * * * * *", "overlap": "parallel"}"#);
        let mut core = core(&[s], at("2026-11-21T12:00:30Z"));
        let actions = core.dispatch_due(at("2026-11-21T15:00:10Z"));
        assert_eq!(starts(&actions), vec![at("2026-11-21T15:00:00Z")]);
        assert_eq!(core.next_due(), Some(at("2026-11-21T15:01:00Z")));
    }

    #[test]
    fn catch_up_fires_the_last_instant_missed_while_down() {
        let s = schedule(r#"{"id": "c", "task": "t", "cron": "0 0 * * * *", "catch_up": true}"#);
        let other = schedule(r#"{"id": "o", "task": "t", "cron": "0 0 * * * *"}"#);
        let mut core = core(&[s, other], at("2026-11-21T15:30:00Z"));
        let row = |id: &str| Row {
            scheduled_at: Some(at("2026-11-21T12:00:00Z")),
            started_at: at("2026-11-21T12:00:00Z"),
            finished_at: at("2026-11-21T12:00:01Z"),
            duration_ms: 1000,
            priority: crate::timing::Priority::Schedule,
            schedule: id.into(),
            cycle: "c".into(),
            mode: "cycle".into(),
            attempt: 1,
            status: Status::Ok,
            exit_code: None,
            cost_usd: None,
            note: String::new(),
        };
        let actions = core.catch_up(&[row("c"), row("o")], at("2026-11-21T15:30:00Z"));
        assert_eq!(starts(&actions), vec![at("2026-11-21T15:00:00Z")]);
    }

    #[test]
    fn stop_interrupts_queued_fires_and_starts_nothing_more() {
        let q = schedule(r#"{"id": "q", "task": "t", "cron": "* * * * * *", "overlap": "queue"}"#);
        let mut core = core(&[q], at("2026-11-21T12:00:00.500Z"));
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        core.dispatch_due(at("2026-11-21T12:00:02.001Z"));
        let actions = core.stop(at("2026-11-21T12:00:02.5Z"));
        assert_eq!(rows(&actions)[0].1, Status::Interrupted);
        assert!(core.dispatch_due(at("2026-11-21T12:00:09Z")).is_empty());
        assert!(core.on_done("q", OK, at("2026-11-21T12:00:09Z")).is_empty());
    }

    fn rules() -> Rules {
        Rules::default()
    }

    fn cluster_escalation(schedule: &Schedule, node: &str) -> crate::cluster::Escalation {
        crate::cluster::Escalation {
            schedule: schedule.id.clone(),
            fingerprint: schedule.fingerprint.clone(),
            failures: 3,
            node: node.into(),
            escalated_at: at("2026-11-21T12:00:00Z"),
        }
    }

    #[test]
    fn a_won_claim_runs_unless_its_schedule_runs_or_escalated_elsewhere() {
        let skip = schedule(r#"{"id": "s", "task": "t"}"#);
        let queue = schedule(r#"{"id": "q", "task": "t", "overlap": "queue"}"#);
        let parallel = schedule(r#"{"id": "p", "task": "t", "overlap": "parallel"}"#);
        assert_eq!(
            claim_verdict(&skip, &rules(), 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Run
        );
        let elsewhere = Rules {
            running_on: Some("n2".into()),
            ..rules()
        };
        assert_eq!(
            claim_verdict(&skip, &elsewhere, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Skip {
                note: "overlap skip: the previous cycle still runs on node n2".into()
            }
        );
        assert_eq!(
            claim_verdict(&queue, &elsewhere, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::WaitFor { node: "n2".into() }
        );
        assert_eq!(
            claim_verdict(&parallel, &elsewhere, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Run
        );
        // A retry after a takeover is the instant's last chance: it waits, never skips.
        assert_eq!(
            claim_verdict(&skip, &elsewhere, 2, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::WaitFor { node: "n2".into() }
        );
        // Escalated with this entry: paused; with another entry (changed since): runs.
        let escalated = Rules {
            escalation: Some(cluster_escalation(&skip, "n3")),
            ..rules()
        };
        assert!(matches!(
            claim_verdict(&skip, &escalated, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Escalated { ref node, .. } if node == "n3"
        ));
        let mut stale = cluster_escalation(&skip, "n3");
        stale.fingerprint = "an older entry".into();
        let changed = Rules {
            escalation: Some(stale),
            ..rules()
        };
        assert_eq!(
            claim_verdict(&skip, &changed, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Run
        );
        // A rate-limit pause in force anywhere skips the fire.
        let paused = Rules {
            paused: Some(crate::cluster::Pause {
                schedule: "s".into(),
                until: at("2026-11-21T13:00:00Z"),
                reason: "429 from the agent".into(),
                node: "n1".into(),
            }),
            ..rules()
        };
        assert_eq!(
            claim_verdict(&skip, &paused, 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Held {
                hold: Hold::RateLimited {
                    until: at("2026-11-21T13:00:00Z")
                }
            }
        );
        // The schedule's budget, spent across nodes: held until the end of its day.
        let budgeted = schedule(
            r#"{"id": "b", "task": "t", "max_cost_usd_per_day": 2, "timezone": "Europe/Berlin"}"#,
        );
        let spent = |usd| Rules {
            cost_since: Some(usd),
            ..rules()
        };
        assert_eq!(
            claim_verdict(&budgeted, &spent(1.99), 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Run
        );
        assert!(matches!(
            claim_verdict(&budgeted, &spent(2.5), 1, at("2026-11-21T12:00:00Z")),
            ClaimVerdict::Held { hold: Hold::BudgetSpent { until, .. } }
                if until == at("2026-11-21T23:00:00Z")
        ));
    }

    #[test]
    fn cluster_escalations_pause_here_and_a_lifted_one_resumes_from_now() {
        let a = schedule(r#"{"id": "a", "task": "t", "cron": "* * * * * *", "overlap": "queue"}"#);
        let b = schedule(r#"{"id": "b", "task": "t", "cron": "* * * * * *"}"#);
        let mut core = core(&[a.clone(), b.clone()], at("2026-11-21T12:00:00.500Z"));
        // "a" runs with a fire queued behind it when another node escalates it.
        core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        core.dispatch_due(at("2026-11-21T12:00:02.001Z"));
        let escalated = HashMap::from([
            ("a".to_string(), a.fingerprint.clone()),
            ("b".to_string(), "an older entry of b".to_string()),
        ]);
        let sync = core.cluster_escalations(&escalated, at("2026-11-21T12:00:02.500Z"));
        assert_eq!(sync.paused, vec!["a".to_string()]);
        assert!(sync.resumed.is_empty());
        assert_eq!(
            rows(&sync.actions),
            vec![(
                Some(at("2026-11-21T12:00:02Z")),
                Status::Skipped,
                "not started: the schedule escalated on another node while it was queued"
                    .to_string()
            )]
        );
        assert!(core.entry("a").unwrap().escalated);
        assert_eq!(core.entry("a").unwrap().next, None);
        assert!(
            !core.entry("b").unwrap().escalated,
            "another entry's escalation"
        );
        // The same read again changes nothing; the escalation gone resumes "a" from now.
        assert_eq!(
            core.cluster_escalations(&escalated, at("2026-11-21T12:00:03Z")),
            EscalationSync::default()
        );
        let sync = core.cluster_escalations(&HashMap::new(), at("2026-11-21T12:00:05.200Z"));
        assert_eq!(sync.resumed, vec!["a".to_string()]);
        assert_eq!(
            sync.actions,
            vec![Action::ClearEscalation { id: "a".into() }]
        );
        assert_eq!(
            core.entry("a").unwrap().next,
            Some(at("2026-11-21T12:00:06Z"))
        );
        // Seen in a claim's rules: paused once.
        let (paused, _) = core.escalated_elsewhere("b", &b.fingerprint, at("2026-11-21T12:00:06Z"));
        assert!(paused);
        let (again, _) = core.escalated_elsewhere("b", &b.fingerprint, at("2026-11-21T12:00:06Z"));
        assert!(!again);
    }

    #[test]
    fn a_retry_after_a_takeover_counts_as_running_unless_not_ours_to_fire() {
        let s = schedule(r#"{"id": "s", "task": "t", "cron": "* * * * * *", "catch_up": true}"#);
        let off = schedule(r#"{"id": "off", "task": "t", "enabled": false}"#);
        let mut core = core(&[s, off], at("2026-11-21T12:00:00.500Z"));
        assert_eq!(core.start_retry("s").map(|s| s.id), Some("s".to_string()));
        assert_eq!(core.running(), 1);
        // Overlap skip holds against the retry: the next fire of "s" is skipped.
        let actions = core.dispatch_due(at("2026-11-21T12:00:01.001Z"));
        assert_eq!(rows(&actions)[0].1, Status::Skipped);
        assert!(core.start_retry("off").is_none());
        assert!(core.start_retry("unknown").is_none());
        core.stop(at("2026-11-21T12:00:02Z"));
        assert!(core.start_retry("s").is_none());
    }

    #[test]
    fn catch_up_from_the_claims_fires_the_latest_instant_after_the_last_claimed() {
        let s = schedule(r#"{"id": "c", "task": "t", "cron": "0 * * * * *", "catch_up": true}"#);
        let mut core = core(&[s], at("2026-11-21T12:05:30Z"));
        let last = HashMap::from([("c".to_string(), at("2026-11-21T12:01:00Z"))]);
        let actions = core.catch_up_from(&last, at("2026-11-21T12:05:30Z"));
        assert_eq!(starts(&actions), vec![at("2026-11-21T12:05:00Z")]);
        // Claimed up to the last instant: nothing missed.
        let mut core = core_at(at("2026-11-21T12:05:30Z"));
        let last = HashMap::from([("c".to_string(), at("2026-11-21T12:05:00Z"))]);
        assert!(
            core.catch_up_from(&last, at("2026-11-21T12:05:30Z"))
                .is_empty()
        );
    }

    fn core_at(now: DateTime<Utc>) -> Core {
        core(
            &[schedule(
                r#"{"id": "c", "task": "t", "cron": "0 * * * * *", "catch_up": true}"#,
            )],
            now,
        )
    }

    #[test]
    fn latest_missed_instant_is_found_without_walking_the_whole_gap() {
        let every_second = Cron::parse("* * * * * *").unwrap();
        let now = at("2026-11-21T12:00:00.500Z");
        let floor = at("2026-11-20T12:00:00Z");
        assert_eq!(
            latest_at_or_before(&every_second, &crate::zone::Zone::utc(), now, floor),
            Some(at("2026-11-21T12:00:00Z"))
        );
        let hourly = Cron::parse("@hourly").unwrap();
        assert_eq!(
            latest_at_or_before(&hourly, &crate::zone::Zone::utc(), now, floor),
            Some(at("2026-11-21T12:00:00Z"))
        );
        let yearly = Cron::parse("0 0 1 1 *").unwrap();
        assert_eq!(
            latest_at_or_before(
                &yearly,
                &crate::zone::Zone::utc(),
                now,
                at("2025-06-01T00:00:00Z")
            ),
            Some(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            latest_at_or_before(
                &yearly,
                &crate::zone::Zone::utc(),
                now,
                at("2026-02-01T00:00:00Z")
            ),
            None
        );
    }
}
