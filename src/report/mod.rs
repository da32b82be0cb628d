//! `report`: what task_timing.tsv says about a period (SPEC §10), as data.
//!
//! This module owns the figures: per schedule and mode the runs, ok %, failures and
//! duration percentiles and cost; per schedule the fire lateness, cycles per day, the
//! longest failure streak and today's cost against a budget; and the series the page
//! draws (a timeline of cycles, a lateness histogram, cost per day). [`text`] and [`html`]
//! only render a [`Report`]; `--json` is its serde form.
//!
//! # Rules
//! - One pass over the file through [`reader`] (the format rules of `timing.rs`): bad
//!   lines are counted and named with their line numbers, never fatal. Only I/O fails.
//! - The window is the rows whose `started_at` is at or after `since`; bad lines are
//!   counted over the whole file (their time is unknown).
//! - Runs and durations count every row of a mode; the `cycle` pseudo-mode is the cycle
//!   rows (a cycle's status and whole duration). Cost is summed over mode rows only: a
//!   cycle row repeats the sum of its modes' costs.
//! - Lateness is `started_at - scheduled_at` of cycle rows that have a `scheduled_at`.
//! - The longest failure streak counts consecutive cycle rows for which
//!   [`crate::timing::counts_as_failure`] (a rate limit does not); `ok` and `escalated` end a
//!   streak, `skipped` and `interrupted` neither count nor end it (as `status` counts one).
//! - Percentiles are exact, by nearest rank, over every kept value.
//! - Days are UTC days (the file's times are UTC); "today" is the UTC day of `now`.

pub mod html;
pub mod reader;
pub mod text;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use crate::timing::{BadLine, Status, TimingError};
use reader::{RowRef, Sink, Totals};

/// Bad lines named in a report; the rest are counted.
pub const BAD_LINES_NAMED: usize = 1_000;
const DAY_MS: i64 = 86_400_000;
/// Days without cost listed between the first and the last day of the window's rows.
const MAX_EMPTY_DAYS: i64 = 3_660;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows that started before this are left out.
    pub since: DateTime<Utc>,
    /// Only this schedule.
    pub schedule: Option<String>,
    /// `max_cost_usd_per_day` per schedule id, where one is set.
    pub budgets: BTreeMap<String, f64>,
}

/// The start of the window as given to `--since`: a duration back from now, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(std::time::Duration),
    At(DateTime<Utc>),
}

/// What `--since` accepts, for its help and its error.
pub const SINCE_FORMS: &str = "a duration back from now (7d, 36h, 90m, 1h 30m), a date \
                               (2026-11-20, midnight UTC) or an RFC 3339 time \
                               (2026-11-20T08:00:00Z)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown --since {0:?}: expected {SINCE_FORMS}")]
pub struct SinceError(pub String);

impl FromStr for Since {
    type Err = SinceError;

    fn from_str(text: &str) -> Result<Since, SinceError> {
        let trimmed = text.trim();
        if let Ok(date) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
            return Ok(Since::At(date.and_time(chrono::NaiveTime::MIN).and_utc()));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(trimmed) {
            return Ok(Since::At(time.with_timezone(&Utc)));
        }
        humantime::parse_duration(trimmed)
            .map(Since::Ago)
            .map_err(|_| SinceError(text.to_owned()))
    }
}

impl Since {
    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Since::At(at) => at,
            Since::Ago(ago) => TimeDelta::from_std(ago)
                .ok()
                .and_then(|ago| now.checked_sub_signed(ago))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }
}

/// Everything `report` shows. The serde form is the `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub now: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub schedule_filter: Option<String>,
    /// Lines in the file, the header and bad lines included.
    pub lines: usize,
    /// Rows that parsed, in the whole file.
    pub rows: usize,
    /// Rows in the window (and of the schedule asked for).
    pub rows_in_window: u64,
    /// The earliest `started_at` and the latest `finished_at` of the window's rows.
    pub first_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub bad_lines: usize,
    /// The first [`BAD_LINES_NAMED`] bad lines.
    pub bad_lines_named: Vec<NamedBadLine>,
    pub schedules: Vec<ScheduleReport>,
    pub cost_per_day: Vec<DayCost>,
    pub lateness_histogram: Vec<LatenessBin>,
    /// The window's cycle rows, for the page's timeline; not in the JSON.
    #[serde(skip)]
    pub timeline: Timeline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedBadLine {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleReport {
    pub schedule: String,
    pub rows: u64,
    /// Cycle rows.
    pub cycles: u64,
    /// Cycle rows per UTC day, over the window from this schedule's first cycle in it
    /// (at least one day).
    pub cycles_per_day: f64,
    /// Over cycle rows with a `scheduled_at`; `None` without any.
    pub lateness_ms: Option<Lateness>,
    pub longest_failure_streak: Option<Streak>,
    pub cost_usd: f64,
    pub cost_today_usd: f64,
    /// `max_cost_usd_per_day` of the schedule, when set.
    pub budget_usd_per_day: Option<f64>,
    /// In the order the modes first appear, the `cycle` pseudo-mode last.
    pub modes: Vec<ModeReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lateness {
    pub samples: usize,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Streak {
    pub cycles: u32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub runs: u64,
    pub ok: u64,
    pub failed: u64,
    pub timeout: u64,
    pub blocked: u64,
    pub skipped: u64,
    pub interrupted: u64,
    pub escalated: u64,
    pub ok_percent: f64,
    pub duration_ms: Durations,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Durations {
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayCost {
    pub date: NaiveDate,
    pub total_usd: f64,
    /// Per schedule id, the schedules with a cost that day.
    pub by_schedule: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatenessBin {
    /// Inclusive lower bound in milliseconds; `None` for the bin of negative lateness.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound; `None` for the last bin.
    pub to_ms: Option<i64>,
    pub label: &'static str,
    pub count: u64,
    /// Per schedule, in the order of [`Report::schedules`].
    pub by_schedule: Vec<u64>,
}

/// The window's cycle rows in file order, small enough to keep a million of.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub cycles: Vec<CycleMark>,
    /// Distinct notes; a mark names one by index.
    pub notes: Vec<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleMark {
    /// Index into [`Report::schedules`].
    pub schedule: u32,
    pub status: Status,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    pub note: u32,
}

/// Lateness bins: (lower bound, label); each bin ends where the next begins.
const LATENESS_BINS: [(i64, &str); 19] = [
    (0, "< 1 ms"),
    (1, "1–2 ms"),
    (2, "2–5 ms"),
    (5, "5–10 ms"),
    (10, "10–20 ms"),
    (20, "20–50 ms"),
    (50, "50–100 ms"),
    (100, "0.1–0.2 s"),
    (200, "0.2–0.5 s"),
    (500, "0.5–1 s"),
    (1_000, "1–2 s"),
    (2_000, "2–5 s"),
    (5_000, "5–10 s"),
    (10_000, "10–30 s"),
    (30_000, "30–60 s"),
    (60_000, "1–5 min"),
    (300_000, "5–15 min"),
    (900_000, "15–60 min"),
    (3_600_000, "≥ 1 h"),
];

/// Reads the timing file at `path` (missing: an empty report) and reports on it.
pub fn build_file(
    path: &Path,
    options: &Options,
    now: DateTime<Utc>,
) -> Result<Report, TimingError> {
    let mut acc = Accumulator::new(options);
    let totals = reader::read_file(path, &mut acc)?;
    Ok(acc.finish(path.display().to_string(), totals, options, now))
}

/// Reports on a timing file's bytes read from `input`, named `file` in the report.
pub fn build(
    input: impl Read,
    file: &str,
    options: &Options,
    now: DateTime<Utc>,
) -> io::Result<Report> {
    let mut acc = Accumulator::new(options);
    let totals = reader::read(input, &mut acc)?;
    Ok(acc.finish(file.to_owned(), totals, options, now))
}

/// Reports on rows already read (`report --cluster`: the cluster's `timing_rows`, every
/// node's rows in one stream), named `file` in the report.
pub fn build_rows<'r>(
    rows: impl IntoIterator<Item = &'r crate::timing::Row>,
    file: &str,
    options: &Options,
    now: DateTime<Utc>,
) -> Report {
    let mut acc = Accumulator::new(options);
    let mut totals = Totals::default();
    for row in rows {
        acc.row(&RowRef::from(row));
        totals.rows += 1;
        totals.lines += 1;
    }
    acc.finish(file.to_owned(), totals, options, now)
}

fn status_index(status: Status) -> usize {
    match status {
        Status::Ok => 0,
        Status::Failed => 1,
        Status::Timeout => 2,
        Status::Blocked => 3,
        Status::Skipped => 4,
        Status::Interrupted => 5,
        Status::Escalated => 6,
    }
}

struct ModeAcc {
    mode: String,
    counts: [u64; 7],
    durations: Vec<u64>,
    cost: f64,
}

struct ScheduleAcc {
    id: String,
    rows: u64,
    /// A handful per schedule: a scan beats hashing.
    modes: Vec<ModeAcc>,
    cycle: Option<ModeAcc>,
    lateness: Vec<i64>,
    first_cycle_ms: Option<i64>,
    streak: u32,
    streak_from_ms: i64,
    longest: Option<(u32, i64, i64)>,
    cost: f64,
    cost_by_day: BTreeMap<i64, f64>,
}

impl ScheduleAcc {
    fn new(id: &str) -> ScheduleAcc {
        ScheduleAcc {
            id: id.to_owned(),
            rows: 0,
            modes: Vec::new(),
            cycle: None,
            lateness: Vec::new(),
            first_cycle_ms: None,
            streak: 0,
            streak_from_ms: 0,
            longest: None,
            cost: 0.0,
            cost_by_day: BTreeMap::new(),
        }
    }
}

fn new_mode(mode: &str) -> ModeAcc {
    ModeAcc {
        mode: mode.to_owned(),
        counts: [0; 7],
        durations: Vec::new(),
        cost: 0.0,
    }
}

struct Accumulator<'o> {
    since_ms: i64,
    only: Option<&'o str>,
    schedules: Vec<ScheduleAcc>,
    index: hashbrown::HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    last: Option<u32>,
    bad: Vec<NamedBadLine>,
    rows_in_window: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    timeline: Timeline,
    note_index: hashbrown::HashMap<Box<str>, u32, foldhash::fast::RandomState>,
}

impl<'o> Accumulator<'o> {
    fn new(options: &'o Options) -> Accumulator<'o> {
        Accumulator {
            since_ms: options.since.timestamp_millis(),
            only: options.schedule.as_deref(),
            schedules: Vec::new(),
            index: Default::default(),
            last: None,
            bad: Vec::new(),
            rows_in_window: 0,
            first_ms: None,
            last_ms: None,
            timeline: Timeline::default(),
            note_index: Default::default(),
        }
    }

    fn schedule(&mut self, id: &str) -> u32 {
        if let Some(i) = self.last
            && *self.schedules[i as usize].id == *id
        {
            return i;
        }
        let i = match self.index.get(id) {
            Some(&i) => i,
            None => {
                let i = self.schedules.len() as u32;
                self.schedules.push(ScheduleAcc::new(id));
                self.index.insert(id.into(), i);
                i
            }
        };
        self.last = Some(i);
        i
    }

    fn note(&mut self, note: &str) -> u32 {
        if let Some(&i) = self.note_index.get(note) {
            return i;
        }
        let i = self.timeline.notes.len() as u32;
        self.timeline.notes.push(note.into());
        self.note_index.insert(note.into(), i);
        i
    }
}

impl Sink for Accumulator<'_> {
    fn row(&mut self, row: &RowRef<'_>) {
        if row.started_at_ms < self.since_ms || self.only.is_some_and(|id| id != row.schedule) {
            return;
        }
        self.rows_in_window += 1;
        self.first_ms = Some(
            self.first_ms
                .map_or(row.started_at_ms, |t| t.min(row.started_at_ms)),
        );
        self.last_ms = Some(
            self.last_ms
                .map_or(row.finished_at_ms, |t| t.max(row.finished_at_ms)),
        );
        let index = self.schedule(row.schedule);
        let cycle = row.is_cycle();
        let note = if cycle { self.note(row.note) } else { 0 };
        let s = &mut self.schedules[index as usize];
        s.rows += 1;
        let mode = if cycle {
            s.cycle.get_or_insert_with(|| new_mode(row.mode))
        } else {
            match s.modes.iter().position(|m| m.mode == row.mode) {
                Some(i) => &mut s.modes[i],
                None => {
                    s.modes.push(new_mode(row.mode));
                    s.modes.last_mut().expect("just pushed")
                }
            }
        };
        mode.counts[status_index(row.status)] += 1;
        mode.durations.push(row.duration_ms);
        if let Some(cost) = row.cost_usd {
            mode.cost += cost;
            if !cycle {
                s.cost += cost;
                *s.cost_by_day
                    .entry(row.started_at_ms.div_euclid(DAY_MS))
                    .or_default() += cost;
            }
        }
        if !cycle {
            return;
        }
        s.first_cycle_ms.get_or_insert(row.started_at_ms);
        if let Some(scheduled) = row.scheduled_at_ms {
            s.lateness.push(row.started_at_ms - scheduled);
        }
        if crate::timing::counts_as_failure(row.status, row.note) {
            if s.streak == 0 {
                s.streak_from_ms = row.started_at_ms;
            }
            s.streak += 1;
            if s.longest.is_none_or(|(n, _, _)| s.streak > n) {
                s.longest = Some((s.streak, s.streak_from_ms, row.finished_at_ms));
            }
        } else if matches!(row.status, Status::Ok | Status::Escalated) {
            s.streak = 0;
        }
        self.timeline.cycles.push(CycleMark {
            schedule: index,
            status: row.status,
            started_at_ms: row.started_at_ms,
            duration_ms: row.duration_ms,
            note,
        });
    }

    fn bad_line(&mut self, bad: BadLine) {
        if self.bad.len() < BAD_LINES_NAMED {
            self.bad.push(NamedBadLine {
                line: bad.line,
                reason: bad.reason,
            });
        }
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn date(day: i64) -> NaiveDate {
    time(day.saturating_mul(DAY_MS)).date_naive()
}

/// Nearest-rank percentiles of `values` (reordered), for `ps` in ascending order.
fn percentiles<T: Ord + Copy>(values: &mut [T], ps: &[f64]) -> Vec<T> {
    let n = values.len();
    let mut out = vec![values[0]; ps.len()];
    let mut upto = n;
    // From the highest rank down, each selection within the part left of the last.
    for (slot, p) in ps.iter().enumerate().rev() {
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let k = rank.clamp(1, n) - 1;
        let (_, value, _) = values[..upto.max(k + 1)].select_nth_unstable(k);
        out[slot] = *value;
        upto = k + 1;
    }
    out
}

impl Accumulator<'_> {
    fn finish(self, file: String, totals: Totals, options: &Options, now: DateTime<Utc>) -> Report {
        let now_ms = now.timestamp_millis();
        let today = now_ms.div_euclid(DAY_MS);
        let mut order: Vec<usize> = (0..self.schedules.len()).collect();
        order.sort_by(|&a, &b| self.schedules[a].id.cmp(&self.schedules[b].id));
        // Marks name schedules by their index in the report, which is sorted by id.
        let mut new_index = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u32;
        }
        let mut timeline = self.timeline;
        for mark in &mut timeline.cycles {
            mark.schedule = new_index[mark.schedule as usize];
        }

        let mut accs: Vec<Option<ScheduleAcc>> = self.schedules.into_iter().map(Some).collect();
        let mut histogram: Vec<LatenessBin> = Vec::with_capacity(LATENESS_BINS.len() + 1);
        histogram.push(LatenessBin {
            from_ms: None,
            to_ms: Some(0),
            label: "< 0 (early)",
            count: 0,
            by_schedule: vec![0; order.len()],
        });
        for (i, (from, label)) in LATENESS_BINS.iter().enumerate() {
            histogram.push(LatenessBin {
                from_ms: Some(*from),
                to_ms: LATENESS_BINS.get(i + 1).map(|b| b.0),
                label,
                count: 0,
                by_schedule: vec![0; order.len()],
            });
        }
        let mut days: BTreeMap<i64, DayCost> = BTreeMap::new();
        let mut schedules = Vec::with_capacity(order.len());
        for (new, &old) in order.iter().enumerate() {
            let mut s = accs[old].take().expect("each schedule once");
            for &late in &s.lateness {
                let bin = if late < 0 {
                    0
                } else {
                    LATENESS_BINS.partition_point(|(from, _)| *from <= late)
                };
                histogram[bin].count += 1;
                histogram[bin].by_schedule[new] += 1;
            }
            for (&day, &cost) in &s.cost_by_day {
                let entry = days.entry(day).or_insert_with(|| DayCost {
                    date: date(day),
                    total_usd: 0.0,
                    by_schedule: BTreeMap::new(),
                });
                entry.total_usd += cost;
                entry.by_schedule.insert(s.id.clone(), cost);
            }
            let lateness_ms = (!s.lateness.is_empty()).then(|| {
                let p = percentiles(&mut s.lateness, &[50.0, 99.0, 100.0]);
                Lateness {
                    samples: s.lateness.len(),
                    p50: p[0],
                    p99: p[1],
                    max: p[2],
                }
            });
            let cycles = s.cycle.as_ref().map_or(0, |c| c.durations.len() as u64);
            let span_days = s.first_cycle_ms.map_or(1.0, |first| {
                ((now_ms - first) as f64 / DAY_MS as f64).max(1.0)
            });
            let modes = s
                .modes
                .into_iter()
                .chain(s.cycle)
                .map(mode_report)
                .collect();
            schedules.push(ScheduleReport {
                cost_today_usd: s.cost_by_day.get(&today).copied().unwrap_or(0.0),
                budget_usd_per_day: options.budgets.get(&s.id).copied(),
                schedule: s.id,
                rows: s.rows,
                cycles,
                cycles_per_day: cycles as f64 / span_days,
                lateness_ms,
                longest_failure_streak: s.longest.map(|(cycles, from, to)| Streak {
                    cycles,
                    from: time(from),
                    to: time(to),
                }),
                cost_usd: s.cost,
                modes,
            });
        }
        // Every day of the window's data, those without cost as zero, so a chart of them
        // shows quiet days as gaps; only the days with a cost when rows far apart (a clock
        // gone wrong) would make that millions of days.
        let mut cost_per_day = Vec::new();
        if let (Some(first), Some(last)) = (self.first_ms, self.last_ms) {
            let span = first.div_euclid(DAY_MS)..=last.div_euclid(DAY_MS);
            if span.end() - span.start() <= MAX_EMPTY_DAYS {
                for day in span {
                    cost_per_day.push(days.remove(&day).unwrap_or_else(|| DayCost {
                        date: date(day),
                        total_usd: 0.0,
                        by_schedule: BTreeMap::new(),
                    }));
                }
            }
        }
        cost_per_day.extend(days.into_values());
        Report {
            file,
            now,
            since: options.since,
            schedule_filter: options.schedule.clone(),
            lines: totals.lines,
            rows: totals.rows,
            rows_in_window: self.rows_in_window,
            first_started_at: self.first_ms.map(time),
            last_finished_at: self.last_ms.map(time),
            bad_lines: totals.bad_lines,
            bad_lines_named: self.bad,
            schedules,
            cost_per_day,
            lateness_histogram: histogram,
            timeline,
        }
    }
}

fn mode_report(mut m: ModeAcc) -> ModeReport {
    let runs = m.durations.len() as u64;
    let duration_ms = if m.durations.is_empty() {
        Durations::default()
    } else {
        let p = percentiles(&mut m.durations, &[50.0, 95.0, 100.0]);
        Durations {
            p50: p[0],
            p95: p[1],
            max: p[2],
        }
    };
    let [
        ok,
        failed,
        timeout,
        blocked,
        skipped,
        interrupted,
        escalated,
    ] = m.counts;
    ModeReport {
        mode: m.mode,
        runs,
        ok,
        failed,
        timeout,
        blocked,
        skipped,
        interrupted,
        escalated,
        ok_percent: if runs == 0 {
            0.0
        } else {
            ok as f64 * 100.0 / runs as f64
        },
        duration_ms,
        cost_usd: m.cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn since_accepts_durations_dates_and_times() {
        let now = t("2026-11-21T10:00:00Z");
        let at = |s: &str| s.parse::<Since>().unwrap().resolve(now);
        assert_eq!(at("7d"), t("2026-11-14T10:00:00Z"));
        assert_eq!(at("36h"), t("2026-11-19T22:00:00Z"));
        assert_eq!(at("90m"), t("2026-11-21T08:30:00Z"));
        assert_eq!(at("1h 30m"), t("2026-11-21T08:30:00Z"));
        assert_eq!(at("2026-11-20"), t("2026-11-20T00:00:00Z"));
        assert_eq!(at("2026-11-20T08:00:00+02:00"), t("2026-11-20T06:00:00Z"));
        assert_eq!(at("1000000y"), DateTime::<Utc>::MIN_UTC);
        for bad in ["yesterday", "7", "2026-13-01", "2026-11-20 08:00", ""] {
            let err = bad.parse::<Since>().unwrap_err().to_string();
            assert!(err.contains("7d") && err.contains("2026-11-20"), "{err}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v, &[50.0, 95.0, 100.0]), vec![50, 95, 100]);
        assert_eq!(
            percentiles(&mut [7u64], &[50.0, 99.0, 100.0]),
            vec![7, 7, 7]
        );
        let mut v = vec![3i64, -1, 2];
        assert_eq!(percentiles(&mut v, &[50.0, 99.0]), vec![2, 3]);
    }

    const HEAD: &str = "scheduled_at\tstarted_at\tfinished_at\tduration_ms\tpriority\tschedule\tcycle\tmode\tattempt\tstatus\texit_code\tcost_usd\tnote";

    fn line(
        sched: &str,
        start: &str,
        dur: u64,
        schedule: &str,
        mode: &str,
        status: &str,
        cost: &str,
    ) -> String {
        let started = t(start);
        let finished = started + TimeDelta::milliseconds(dur as i64);
        let f = |d: DateTime<Utc>| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let scheduled = if sched.is_empty() {
            String::new()
        } else {
            f(t(sched))
        };
        format!(
            "{scheduled}\t{}\t{}\t{dur}\tschedule\t{schedule}\tc\t{mode}\t1\t{status}\t\t{cost}\tnote of {status}\n",
            f(started),
            f(finished)
        )
    }

    fn options(since: &str) -> Options {
        Options {
            since: t(since),
            schedule: None,
            budgets: BTreeMap::new(),
        }
    }

    /// A rate limit says nothing about the work (SPEC §8): the report's streak follows the
    /// one rule `status` and the service follow.
    #[test]
    fn a_rate_limited_cycle_neither_counts_nor_ends_a_streak() {
        let cycle = |start: &str, status: &str, note: &str| {
            line(start, start, 10, "a", "cycle", status, "")
                .replace(&format!("note of {status}"), note)
        };
        let file = [
            HEAD.to_string() + "\n",
            cycle("2026-11-20T10:00:00Z", "failed", "2 modes: 1 failed"),
            cycle(
                "2026-11-20T11:00:00Z",
                "failed",
                "rate limited until 2026-11-20T12:00:00Z",
            ),
            cycle("2026-11-20T12:00:00Z", "failed", "rate limited"),
            cycle("2026-11-20T13:00:00Z", "timeout", "x"),
        ]
        .concat();
        let report = build(
            file.as_bytes(),
            "t.tsv",
            &options("2026-11-20T00:00:00Z"),
            t("2026-11-21T00:00:00Z"),
        )
        .unwrap();
        let longest = report.schedules[0].longest_failure_streak.as_ref().unwrap();
        assert_eq!(longest.cycles, 2);
    }

    #[test]
    fn streaks_lateness_cost_and_window() {
        let rows = [
            // Before the window: not counted.
            line(
                "2026-11-19T23:00:00Z",
                "2026-11-19T23:00:00Z",
                5,
                "a",
                "cycle",
                "failed",
                "",
            ),
            line("", "2026-11-20T10:00:00Z", 1000, "a", "impl", "ok", "0.5"),
            line(
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:00:00.010Z",
                1000,
                "a",
                "cycle",
                "ok",
                "0.5",
            ),
            line(
                "2026-11-20T11:00:00Z",
                "2026-11-20T11:00:02Z",
                10,
                "a",
                "cycle",
                "failed",
                "",
            ),
            line(
                "2026-11-20T12:00:00Z",
                "2026-11-20T12:00:00Z",
                10,
                "a",
                "cycle",
                "skipped",
                "",
            ),
            line(
                "2026-11-20T13:00:00Z",
                "2026-11-20T12:59:59.990Z",
                10,
                "a",
                "cycle",
                "timeout",
                "",
            ),
            line(
                "2026-11-20T14:00:00Z",
                "2026-11-20T14:00:00.001Z",
                10,
                "a",
                "cycle",
                "escalated",
                "",
            ),
            line(
                "2026-11-20T15:00:00Z",
                "2026-11-20T15:00:00Z",
                10,
                "a",
                "cycle",
                "blocked",
                "",
            ),
            line(
                "",
                "2026-11-21T09:00:00Z",
                3000,
                "a",
                "impl",
                "failed",
                "0.25",
            ),
            line("", "2026-11-21T09:00:00Z", 2000, "b", "impl", "ok", "1"),
        ];
        let text = format!("{HEAD}\n{}", rows.concat());
        let mut opts = options("2026-11-20T00:00:00Z");
        opts.budgets.insert("a".into(), 2.0);
        let report = build(text.as_bytes(), "t.tsv", &opts, t("2026-11-21T10:00:00Z")).unwrap();
        assert_eq!(
            (report.rows, report.rows_in_window, report.bad_lines),
            (10, 9, 0)
        );
        let a = &report.schedules[0];
        assert_eq!(a.schedule, "a");
        assert_eq!(a.cycles, 6);
        let streak = a.longest_failure_streak.unwrap();
        assert_eq!(
            streak.cycles, 2,
            "failed, skipped (neutral), timeout; escalated ends it"
        );
        assert_eq!(streak.from, t("2026-11-20T11:00:02Z"));
        let late = a.lateness_ms.unwrap();
        assert_eq!(
            (late.samples, late.p50, late.p99, late.max),
            (6, 0, 2000, 2000)
        );
        assert_eq!(a.cost_usd, 0.75, "mode rows only");
        assert_eq!(a.cost_today_usd, 0.25);
        assert_eq!(a.budget_usd_per_day, Some(2.0));
        let modes: Vec<&str> = a.modes.iter().map(|m| m.mode.as_str()).collect();
        assert_eq!(modes, ["impl", "cycle"]);
        let imp = &a.modes[0];
        assert_eq!(
            (imp.runs, imp.ok, imp.failed, imp.ok_percent),
            (2, 1, 1, 50.0)
        );
        assert_eq!(
            imp.duration_ms,
            Durations {
                p50: 1000,
                p95: 3000,
                max: 3000
            }
        );
        assert_eq!(report.schedules[1].budget_usd_per_day, None);
        let days: Vec<(String, f64)> = report
            .cost_per_day
            .iter()
            .map(|d| (d.date.to_string(), d.total_usd))
            .collect();
        assert_eq!(
            days,
            [("2026-11-20".into(), 0.5), ("2026-11-21".into(), 1.25)]
        );
        let early = &report.lateness_histogram[0];
        assert_eq!((early.count, early.by_schedule.clone()), (1, vec![1, 0]));
        let total: u64 = report.lateness_histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 6);
        assert_eq!(report.timeline.cycles.len(), 6);
        assert_eq!(
            report.timeline.notes[report.timeline.cycles[1].note as usize].as_ref(),
            "note of failed"
        );
    }

    #[test]
    fn one_schedule_and_an_empty_file() {
        let text = format!(
            "{HEAD}\n{}{}",
            line("", "2026-11-20T10:00:00Z", 1, "a", "cycle", "ok", ""),
            line("", "2026-11-20T10:00:00Z", 1, "b", "cycle", "ok", "")
        );
        let mut opts = options("2026-01-01T00:00:00Z");
        opts.schedule = Some("b".into());
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let report = build(text.as_bytes(), "t", &opts, now).unwrap();
        assert_eq!(report.schedules.len(), 1);
        assert_eq!(report.schedules[0].schedule, "b");
        assert_eq!(report.timeline.cycles[0].schedule, 0);
        let empty = build(&b""[..], "t", &opts, now).unwrap();
        assert!(empty.schedules.is_empty() && empty.cost_per_day.is_empty());
    }
}
