//! Rate-limit pauses and daily budgets (SPEC §8): whether a schedule may fire now, and how
//! much its modes may still spend.
//!
//! Rules:
//! - A schedule whose rate-limit pause ([`crate::state::Pause`]) has not ended does not fire:
//!   its fire is one `skipped` cycle row, `rate limited until <end>`.
//! - A day's cost is the sum of `cost_usd` over that day's *cycle* rows (a cycle row carries
//!   its modes' total, so mode rows are not counted again); a row belongs to the day its
//!   `finished_at` falls on, midnight to midnight in the schedule's time zone. The instance's
//!   day sums every schedule's cycle rows, in the instance's time zone.
//! - Once a day's cost reaches `max_cost_usd_per_day` (the schedule's, or the instance's),
//!   fires are skipped until that zone's next midnight: `budget spent until <midnight>`.
//! - Modes see what is left ([`Allowance`], `LOOP_BUDGET_LEFT_USD`): the lower of the two
//!   budgets' remainders; no budget, no allowance.
//! - A skipped fire never counts as a failure (its status is `skipped`).
//!
//! The rules ([`Ledger`], [`hold`], [`allowance`]) do no I/O, so the service's core applies
//! them to the state it keeps; [`on_disk`] reads the pause file and today's rows, for
//! `run-cycle` and for the service's fires (another process may have spent or paused since
//! the core last looked).

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, SecondsFormat, TimeDelta, Utc};

use crate::instance::Instance;
use crate::schedule::Schedule;
use crate::state::Pause;
use crate::timing::{CYCLE_MODE, Row, TimingFile};
use crate::zone::Zone;

/// The instance-wide budget: `max_cost_usd_per_day` at the top of schedules.json, counted
/// in the file's time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceBudget {
    pub max_usd_per_day: Option<f64>,
    pub zone: Zone,
}

impl InstanceBudget {
    pub fn of(config: &crate::config::Config) -> InstanceBudget {
        InstanceBudget {
            max_usd_per_day: config.max_cost_usd_per_day,
            zone: config.timezone.clone(),
        }
    }
}

/// One day's spending, against a budget, midnight to midnight in a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    pub max_usd_per_day: Option<f64>,
    pub zone: Zone,
    pub day_start: DateTime<Utc>,
    pub day_end: DateTime<Utc>,
    pub usd: f64,
}

impl Ledger {
    /// Today's ledger at `now`, nothing spent yet.
    pub fn new(max_usd_per_day: Option<f64>, zone: Zone, now: DateTime<Utc>) -> Ledger {
        let (day_start, day_end) = day_of(&zone, now);
        Ledger {
            max_usd_per_day,
            zone,
            day_start,
            day_end,
            usd: 0.0,
        }
    }

    /// The ledger as it reads at `now`: a new day starts from nothing.
    pub fn at(&self, now: DateTime<Utc>) -> Ledger {
        if now >= self.day_start && now < self.day_end {
            self.clone()
        } else {
            Ledger::new(self.max_usd_per_day, self.zone.clone(), now)
        }
    }

    /// A cost that became known at `at` (a cycle's end).
    pub fn add(&mut self, at: DateTime<Utc>, usd: f64) {
        *self = self.at(at);
        if usd.is_finite() && usd > 0.0 {
            self.usd += usd;
        }
    }

    /// Adds the cost of the cycle rows of this ledger's day (of `schedule` alone, if given).
    pub fn count_rows<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a Row>,
        schedule: Option<&str>,
    ) {
        for row in rows {
            if row.mode == CYCLE_MODE
                && schedule.is_none_or(|id| row.schedule == id)
                && row.finished_at >= self.day_start
                && row.finished_at < self.day_end
                && let Some(cost) = row.cost_usd.filter(|c| c.is_finite() && *c > 0.0)
            {
                self.usd += cost;
            }
        }
    }

    /// What is left of the budget today (never below 0); `None` without a budget.
    pub fn left(&self) -> Option<f64> {
        self.max_usd_per_day.map(|max| (max - self.usd).max(0.0))
    }

    /// Whether today's cost has reached the budget.
    pub fn spent(&self) -> bool {
        self.max_usd_per_day.is_some_and(|max| self.usd >= max)
    }
}

/// The cycle rows with a cost that finished recently enough to belong to today in some time
/// zone, by schedule: found in one pass, so that a ledger per schedule does not read every row
/// again (10,000 schedules over a million rows).
pub fn recent_costs(rows: &[Row], now: DateTime<Utc>) -> HashMap<&str, Vec<&Row>> {
    // A day is at most 25 hours long and starts at most 14 hours off UTC's.
    let since = now - TimeDelta::hours(50);
    let mut by_schedule: HashMap<&str, Vec<&Row>> = HashMap::new();
    for row in rows {
        if row.mode == CYCLE_MODE
            && row.finished_at >= since
            && row.cost_usd.is_some_and(|c| c.is_finite() && c > 0.0)
        {
            by_schedule
                .entry(row.schedule.as_str())
                .or_default()
                .push(row);
        }
    }
    by_schedule
}

/// The day (local midnight to the next local midnight) that `at` falls in, in `zone`. A
/// midnight that a DST gap swallows is the first instant after the gap.
pub fn day_of(zone: &Zone, at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = zone.wall_clock(at).date();
    let midnight = |date: chrono::NaiveDate| {
        let local = zone.resolve(date.and_time(NaiveTime::MIN));
        match local {
            crate::zone::Local::Gap { end } => end,
            other => other
                .earliest()
                .unwrap_or_else(|| date.and_time(NaiveTime::MIN).and_utc()),
        }
    };
    let start = midnight(date);
    let end = date.succ_opt().map_or(start + TimeDelta::days(1), midnight);
    (start, end)
}

/// Which budget a hold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Whose {
    Schedule,
    Instance,
}

/// Why a schedule may not fire now, and until when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hold {
    /// Its agents were rate limited; the pause lasts until their reset.
    RateLimited { until: DateTime<Utc> },
    /// Today's cost reached a budget.
    BudgetSpent {
        until: DateTime<Utc>,
        whose: Whose,
        usd: f64,
        max_usd: f64,
    },
}

impl Hold {
    pub fn until(&self) -> DateTime<Utc> {
        match self {
            Hold::RateLimited { until } | Hold::BudgetSpent { until, .. } => *until,
        }
    }

    /// The note of the `skipped` row: `rate limited until <RFC 3339>` or `budget spent until
    /// <RFC 3339>: ...`.
    pub fn note(&self) -> String {
        match self {
            Hold::RateLimited { until } => format!("rate limited until {}", rfc3339(*until)),
            Hold::BudgetSpent {
                until,
                whose,
                usd,
                max_usd,
            } => format!(
                "budget spent until {}: ${} of the {} budget of ${max_usd} a day",
                rfc3339(*until),
                dollars(*usd),
                match whose {
                    Whose::Schedule => "schedule's",
                    Whose::Instance => "instance's",
                }
            ),
        }
    }
}

/// The local rule (see the module doc): a pause that has not ended, then the schedule's
/// budget, then the instance's.
pub fn hold(
    now: DateTime<Utc>,
    paused_until: Option<DateTime<Utc>>,
    schedule: &Ledger,
    instance: &Ledger,
) -> Option<Hold> {
    if let Some(until) = paused_until.filter(|until| *until > now) {
        return Some(Hold::RateLimited { until });
    }
    [(schedule, Whose::Schedule), (instance, Whose::Instance)]
        .into_iter()
        .map(|(ledger, whose)| (ledger.at(now), whose))
        .find(|(ledger, _)| ledger.spent())
        .map(|(ledger, whose)| Hold::BudgetSpent {
            until: ledger.day_end,
            whose,
            usd: ledger.usd,
            max_usd: ledger.max_usd_per_day.unwrap_or_default(),
        })
}

/// What a cycle may still spend, and until when that holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    pub left_usd: f64,
    /// When the binding budget's day ends.
    pub until: DateTime<Utc>,
    /// `false` under `run-cycle --ignore-limits`: modes are told, nothing is skipped.
    pub enforced: bool,
}

/// The lower of the two budgets' remainders at `now`; `None` when neither has a budget.
pub fn allowance(now: DateTime<Utc>, schedule: &Ledger, instance: &Ledger) -> Option<Allowance> {
    [schedule.at(now), instance.at(now)]
        .into_iter()
        .filter_map(|ledger| {
            Some(Allowance {
                left_usd: ledger.left()?,
                until: ledger.day_end,
                enforced: true,
            })
        })
        .min_by(|a, b| a.left_usd.total_cmp(&b.left_usd))
}

/// What the files say about a schedule now.
#[derive(Debug, Clone)]
pub struct Gate {
    pub hold: Option<Hold>,
    pub allowance: Option<Allowance>,
    /// The pause on file, if it has not ended.
    pub pause: Option<Pause>,
    pub schedule: Ledger,
    pub instance: Ledger,
}

/// Reads the schedule's pause and, when a budget applies, today's rows (only the end of
/// task_timing.tsv, see [`TimingFile::read_recent`]), and applies the rules. A timing file
/// that cannot be read is logged and counts as nothing spent: a budget must not stop a
/// schedule whose rows cannot be written either (that failure shows on its own).
pub fn on_disk(
    inst: &Instance,
    schedule: &Schedule,
    budget: &InstanceBudget,
    now: DateTime<Utc>,
) -> Gate {
    let pause = crate::state::pause_of(inst, &schedule.id).filter(|p| p.until > now);
    let mut own = Ledger::new(
        schedule.max_cost_usd_per_day,
        schedule.timezone.clone(),
        now,
    );
    let mut all = Ledger::new(budget.max_usd_per_day, budget.zone.clone(), now);
    if own.max_usd_per_day.is_some() || all.max_usd_per_day.is_some() {
        match TimingFile::new(inst.timing()).read_recent(own.day_start.min(all.day_start)) {
            Ok(rows) => {
                own.count_rows(&rows, Some(&schedule.id));
                all.count_rows(&rows, None);
            }
            Err(err) => {
                tracing::warn!(schedule = %schedule.id, error = %err, "today's cost unknown; budgets not applied")
            }
        }
    }
    Gate {
        hold: hold(now, pause.as_ref().map(|p| p.until), &own, &all),
        allowance: allowance(now, &own, &all),
        pause,
        schedule: own,
        instance: all,
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An amount of dollars as notes and `LOOP_BUDGET_LEFT_USD` show it: up to six decimals,
/// trailing zeros dropped (`0.0077`, `2`).
pub fn dollars(usd: f64) -> String {
    let text = format!("{usd:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn cycle_row(schedule: &str, finished: &str, cost: Option<f64>) -> Row {
        Row {
            scheduled_at: None,
            started_at: at(finished),
            finished_at: at(finished),
            duration_ms: 0,
            priority: crate::timing::Priority::Schedule,
            schedule: schedule.into(),
            cycle: "c".into(),
            mode: CYCLE_MODE.into(),
            attempt: 1,
            status: crate::timing::Status::Ok,
            exit_code: None,
            cost_usd: cost,
            note: String::new(),
        }
    }

    #[test]
    fn a_day_is_midnight_to_midnight_in_the_zone_dst_included() {
        let ny = Zone::parse("America/New_York").unwrap();
        assert_eq!(
            day_of(&ny, at("2026-12-02T03:00:00Z")),
            (at("2026-12-01T05:00:00Z"), at("2026-12-02T05:00:00Z"))
        );
        // The day of the spring-forward (2026-03-08) has 23 hours.
        let (start, end) = day_of(&ny, at("2026-03-08T12:00:00Z"));
        assert_eq!(
            (start, end),
            (at("2026-03-08T05:00:00Z"), at("2026-03-09T04:00:00Z"))
        );
        // Havana's clocks skip midnight itself in spring: the day starts after the gap.
        let havana = Zone::parse("America/Havana").unwrap();
        let (start, _) = day_of(&havana, at("2026-03-08T12:00:00Z"));
        assert_eq!(start, at("2026-03-08T05:00:00Z"));
    }

    #[test]
    fn cycle_rows_of_the_day_count_and_mode_rows_do_not() {
        let now = at("2026-12-02T12:00:00Z");
        let mut mode_row = cycle_row("s", "2026-12-02T10:00:00Z", Some(5.0));
        mode_row.mode = "implementation".into();
        let rows = [
            cycle_row("s", "2026-12-01T23:59:59Z", Some(1.0)),
            cycle_row("s", "2026-12-02T00:00:00Z", Some(0.25)),
            mode_row,
            cycle_row("t", "2026-12-02T11:00:00Z", Some(0.5)),
            cycle_row("s", "2026-12-02T11:30:00Z", None),
        ];
        let mut own = Ledger::new(Some(0.25), Zone::utc(), now);
        own.count_rows(&rows, Some("s"));
        assert_eq!(own.usd, 0.25);
        assert!(own.spent());
        assert_eq!(own.left(), Some(0.0));
        let mut all = Ledger::new(None, Zone::utc(), now);
        all.count_rows(&rows, None);
        assert_eq!(all.usd, 0.75);
        // Grouped in one pass: cycle rows with a cost, of the last two days.
        let mut old = cycle_row("s", "2026-11-29T10:00:00Z", Some(9.0));
        old.cycle = "old".into();
        let rows: Vec<Row> = rows.into_iter().chain([old]).collect();
        let recent = recent_costs(&rows, now);
        assert_eq!(recent["s"].len(), 2, "{recent:?}");
        assert_eq!(recent["t"].len(), 1);
        assert!(!all.spent() && all.left().is_none());
    }

    #[test]
    fn holds_come_from_a_pause_then_the_schedule_then_the_instance() {
        let now = at("2026-12-02T12:00:00Z");
        let mut own = Ledger::new(Some(0.02), Zone::utc(), now);
        let mut all = Ledger::new(Some(1.0), Zone::parse("Asia/Tokyo").unwrap(), now);
        assert_eq!(hold(now, None, &own, &all), None);
        assert_eq!(hold(now, Some(now), &own, &all), None, "a pause that ended");
        let until = at("2026-12-02T15:00:00Z");
        let paused = hold(now, Some(until), &own, &all).unwrap();
        assert_eq!(paused.note(), "rate limited until 2026-12-02T15:00:00Z");
        own.add(now, 0.0123);
        own.add(now, 0.0123);
        let spent = hold(now, None, &own, &all).unwrap();
        assert_eq!(
            spent.note(),
            "budget spent until 2026-12-03T00:00:00Z: $0.0246 of the schedule's budget of $0.02 a day"
        );
        // The next day starts from nothing.
        assert_eq!(hold(at("2026-12-03T00:00:00Z"), None, &own, &all), None);
        all.add(now, 1.5);
        let unspent = Ledger::new(Some(0.02), Zone::utc(), now);
        let spent = hold(now, None, &unspent, &all).unwrap();
        assert_eq!(
            spent.until(),
            at("2026-12-02T15:00:00Z"),
            "Tokyo's midnight"
        );
        assert!(spent.note().contains("the instance's budget of $1 a day"));
    }

    #[test]
    fn the_allowance_is_the_lower_remainder() {
        let now = at("2026-12-02T12:00:00Z");
        let none = Ledger::new(None, Zone::utc(), now);
        assert_eq!(allowance(now, &none, &none), None);
        let mut own = Ledger::new(Some(2.0), Zone::utc(), now);
        own.add(now, 1.5);
        let all = Ledger::new(Some(1.0), Zone::parse("Asia/Tokyo").unwrap(), now);
        let left = allowance(now, &own, &all).unwrap();
        assert_eq!(left.left_usd, 0.5);
        assert_eq!(left.until, at("2026-12-03T00:00:00Z"));
        assert_eq!(dollars(0.5), "0.5");
        assert_eq!(dollars(2.0), "2");
        assert_eq!(dollars(0.0), "0");
        assert_eq!(dollars(0.0077), "0.0077");
    }
}
