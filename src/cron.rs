//! Cron expressions: parsing, and the fire instants of a schedule in its time zone.
//!
//! This module owns the cron dialect of `schedules.json` (SPEC §2) and the daylight-saving
//! rule. Matching is delegated to `croner` on *naive local* (wall-clock) times; this module
//! maps those wall-clock times to real instants with the system's time zone database
//! ([`crate::zone`]) and applies the rule below.
//!
//! # Accepted expressions
//!
//! - 6 fields, seconds first: `sec min hour dom month dow`;
//! - 5 fields, seconds = 0: `min hour dom month dow`;
//! - the macros `@hourly` (`0 0 * * * *`), `@daily` and `@midnight` (`0 0 0 * * *`),
//!   `@weekly` (`0 0 0 * * 0`), `@monthly` (`0 0 0 1 * *`), `@yearly` and `@annually`
//!   (`0 0 0 1 1 *`).
//!
//! Anything else (a year field, `@reboot`) is rejected. Weekdays count as in POSIX: 0 and 7
//! are Sunday; day and month names (`MON`, `JAN`) work in any case; croner's extensions
//! (`L`, `W`, `#` in the day fields) are accepted. Day of month and day of week combine as
//! in Vixie cron: when both fields are restricted (neither starts with `*`), a day matching
//! either one fires (`0 0 13 * 5` = every 13th and every Friday); when one of them starts with
//! `*`, a day must match both (`0 0 */2 * 1` = odd-numbered days that are Mondays).
//!
//! # Daylight saving time
//!
//! Schedules are evaluated on the wall clock of their time zone, with Debian/Vixie cron's
//! rule. A schedule is *fixed-time* when neither its minute nor its hour field starts with
//! `*` (`30 2 * * *`, `0 30 2,14 * * *`, `@daily`); every other schedule (`*/15 * * * *`,
//! `0 */10 * * * *`, `@hourly`) follows *elapsed time*. The 5- and 6-field forms behave alike.
//!
//! - A fixed-time schedule fires once for a local time that occurs twice, at its first pass,
//!   and a local time swallowed by a spring-forward gap fires at the first instant after the
//!   gap (the transition itself) — once, however many matching times the gap swallowed.
//! - An elapsed-time schedule fires whenever the wall clock shows a matching time: in both
//!   passes of a repeated hour, and not at all for the times a gap swallowed.
//!
//! Examples in `Europe/Berlin`, where 2026-03-29 jumps from 02:00 CET to 03:00 CEST and
//! 2026-10-25 falls back from 03:00 CEST to 02:00 CET:
//!
//! | schedule        | day        | fires at (local)                               | UTC                  |
//! |-----------------|------------|------------------------------------------------|----------------------|
//! | `30 2 * * *`    | 2026-03-29 | 03:00 CEST (02:30 does not exist)              | 01:00Z               |
//! | `30 2 * * *`    | 2026-10-25 | 02:30 CEST only (not again at 02:30 CET)       | 00:30Z               |
//! | `*/30 * * * *`  | 2026-03-29 | 01:00, 01:30 CET, 03:00, 03:30 CEST            | 00:00, 00:30, 01:00, 01:30Z |
//! | `*/30 * * * *`  | 2026-10-25 | 02:00, 02:30 CEST, 02:00, 02:30 CET, 03:00 CET | 00:00, 00:30, 01:00, 01:30, 02:00Z |
//!
//! So a job set for "half past two every night" runs exactly once each night, and a job
//! set for "every 30 minutes" runs every 30 minutes of real time, whatever the clocks do.
//!
//! # How
//!
//! `croner` enumerates matching wall-clock times; each one is resolved with
//! [`Zone::resolve`] (one instant, two in a repeated hour, none in a gap) and the rule
//! picks among them. The search starts at the wall-clock time of `after` and only looks
//! back when `after` lies in the first pass of a repeated hour (whose second pass is still
//! ahead), so the common case costs one `croner` step and three zone look-ups.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::zone::{Local, Zone};

/// What `parse` accepts, quoted by every "wrong shape" error.
const ACCEPTED: &str = "5 fields (min hour dom month dow), 6 fields (sec min hour dom month dow) \
                        or one of @hourly, @daily, @weekly, @monthly, @yearly";

/// Names and accepted values of the six fields, in 6-field order.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 (also L, W)"),
    ("month", "1-12 or JAN-DEC"),
    (
        "day-of-week",
        "0-7 (0 and 7 = Sunday) or SUN-SAT (also L, #)",
    ),
];

/// Upper bound on resolution steps in one search. Each step skips a whole gap or a
/// non-matching stretch, so a real zone needs a handful; the bound only stops a runaway.
const MAX_STEPS: u32 = 10_000;

/// Errors of cron expressions and time zone names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Nothing but whitespace.
    #[error("empty cron expression; expected {}", ACCEPTED)]
    Empty,
    /// Neither 5 nor 6 fields.
    #[error("cron expression \"{expr}\" has {found} fields; expected {}", ACCEPTED)]
    FieldCount { expr: String, found: usize },
    /// `@` followed by something other than the supported macros.
    #[error(
        "unknown cron macro \"{expr}\"; expected {} (also @annually, @midnight)",
        ACCEPTED
    )]
    UnknownMacro { expr: String },
    /// One field is malformed or out of range.
    #[error(
        "cron expression \"{expr}\": bad {field} field \"{value}\" ({reason}); expected {accepted}"
    )]
    Field {
        expr: String,
        field: &'static str,
        value: String,
        reason: String,
        accepted: &'static str,
    },
    /// `croner` rejected the expression without a single field to blame.
    #[error("cron expression \"{expr}\": {reason}; expected {}", ACCEPTED)]
    Pattern { expr: String, reason: String },
    /// Well-formed, but no date ever matches (`0 0 30 2 *`).
    #[error(
        "cron expression \"{expr}\" never fires: no date matches its day-of-month, month and day-of-week fields"
    )]
    NeverFires { expr: String },
    /// Not an IANA time zone name.
    #[error(
        "unknown time zone \"{name}\"{}; expected an IANA name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\"",
        suggestion_text(.suggestion)
    )]
    UnknownTimezone {
        name: String,
        suggestion: Option<String>,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean \"{name}\"?)"),
        None => String::new(),
    }
}

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct Cron {
    /// The expression as written (trimmed).
    expr: String,
    /// The 6-field pattern, matched against naive local times. Shared: a compiled pattern is
    /// ~5 KB (a bitfield spanning its years), and schedules are cloned into the service and
    /// into every fire.
    pattern: std::sync::Arc<croner::Cron>,
    /// SPEC §2: neither the minute nor the hour field starts with `*`.
    fixed_time: bool,
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Cron {}

impl std::hash::Hash for Cron {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cron::parse(s)
    }
}

impl Cron {
    /// Parses a 5-field, 6-field or macro expression (see the module documentation).
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        // Files with thousands of schedules repeat a few expressions; compiling each once
        // makes loading them ~3x faster. A copy shares the compiled pattern.
        thread_local! {
            static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Cron>> = Default::default();
        }
        if let Some(cron) = COMPILED.with(|c| c.borrow().get(expr).cloned()) {
            return Ok(cron);
        }
        let cron = Cron::compile_uncached(expr)?;
        COMPILED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= 1_024 {
                c.clear();
            }
            c.insert(expr.to_string(), cron.clone());
        });
        Ok(cron)
    }

    fn compile_uncached(expr: &str) -> Result<Cron, CronError> {
        let text = expr.trim();
        if text.is_empty() {
            return Err(CronError::Empty);
        }
        let fields: Vec<String> = if let Some(name) = text.strip_prefix('@') {
            let six = match name.to_ascii_lowercase().as_str() {
                "hourly" => "0 0 * * * *",
                "daily" | "midnight" => "0 0 0 * * *",
                "weekly" => "0 0 0 * * 0",
                "monthly" => "0 0 0 1 * *",
                "yearly" | "annually" => "0 0 0 1 1 *",
                _ => {
                    return Err(CronError::UnknownMacro {
                        expr: text.to_string(),
                    });
                }
            };
            six.split(' ').map(str::to_string).collect()
        } else {
            let given: Vec<&str> = text.split_whitespace().collect();
            match given.len() {
                5 => std::iter::once("0")
                    .chain(given)
                    .map(str::to_string)
                    .collect(),
                6 => given.into_iter().map(str::to_string).collect(),
                found => {
                    return Err(CronError::FieldCount {
                        expr: text.to_string(),
                        found,
                    });
                }
            }
        };

        let pattern = compile(&fields).map_err(|err| blame_field(text, &fields, err))?;
        let fixed_time = !fields[1].starts_with('*') && !fields[2].starts_with('*');
        let cron = Cron {
            expr: text.to_string(),
            pattern: std::sync::Arc::new(pattern),
            fixed_time,
        };
        // A pattern such as "0 0 30 2 *" is well-formed but would make every search run
        // croner's whole year range. The 28 years from 2000 hold every combination of day,
        // month, weekday and leap year, so a date that fits at all fits before 2029.
        let probe =
            chrono::NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|date| date.and_hms_opt(0, 0, 0));
        let fires = probe
            .and_then(|start| cron.next_naive(start, true))
            .is_some_and(|first| first.date() < start_of_year(2029));
        if !fires {
            return Err(CronError::NeverFires {
                expr: text.to_string(),
            });
        }
        Ok(cron)
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// SPEC §2: neither the minute nor the hour field starts with `*`. Such a schedule fires
    /// once for a repeated local time and late (at the transition) for a skipped one.
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// First fire instant strictly after `after`, evaluated in `tz` with the SPEC §2 DST rule.
    /// `None` only when no fire is left before croner's year limit.
    pub fn next_after(&self, after: DateTime<Utc>, tz: &Zone) -> Option<DateTime<Utc>> {
        let wall = tz.wall_clock(after);
        if self.fixed_time {
            self.next_fixed(after, wall, tz)
        } else {
            self.next_elapsed(after, wall, tz)
        }
    }

    /// Successive fire instants strictly after `after`, in increasing order.
    pub fn iter_after<'a>(
        &'a self,
        after: DateTime<Utc>,
        tz: &'a Zone,
    ) -> impl Iterator<Item = DateTime<Utc>> + 'a {
        std::iter::successors(self.next_after(after, tz), move |prev| {
            self.next_after(*prev, tz)
        })
    }

    /// The first matching wall-clock time after `from` (or at it, when `inclusive`).
    /// `from` must be a whole second when `inclusive`: croner drops sub-seconds.
    fn next_naive(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.pattern.find_next_occurrence(&from, inclusive).ok()
    }

    /// Fixed-time rule: each matching wall-clock time fires once, at its only instant, at the
    /// first pass of a repeated time, or at the end of the gap that swallowed it. Those
    /// instants never decrease as the wall-clock time grows, so the first one past `after`
    /// wins.
    fn next_fixed(
        &self,
        after: DateTime<Utc>,
        wall: NaiveDateTime,
        tz: &Zone,
    ) -> Option<DateTime<Utc>> {
        let mut wall_time = match tz.resolve(wall) {
            // In the second pass of a repeated hour, what is left of that hour already fired
            // in the first pass: resume where the repetition ends.
            Local::Repeated(earlier, later) if earlier != after => {
                let (_, end) = fold_bounds(earlier, later, tz);
                self.next_naive(end, true)?
            }
            _ => self.next_naive(wall, false)?,
        };
        for _ in 0..MAX_STEPS {
            let fire = match tz.resolve(wall_time) {
                Local::Single(instant) | Local::Repeated(instant, _) => instant,
                Local::Gap { end } => end,
            };
            if fire > after {
                return Some(fire);
            }
            wall_time = self.next_naive(wall_time, false)?;
        }
        None
    }

    /// Elapsed-time rule: every instant whose wall-clock time matches fires, so a repeated
    /// matching time fires twice and a swallowed one never.
    fn next_elapsed(
        &self,
        after: DateTime<Utc>,
        wall: NaiveDateTime,
        tz: &Zone,
    ) -> Option<DateTime<Utc>> {
        let next = self.next_naive(wall, false);
        if let Local::Repeated(earlier, later) = tz.resolve(wall)
            && earlier == after
        {
            // `after` is in the first pass of a repeated hour. A match later in that pass
            // comes first; failing that, the second pass replays the whole repeated range,
            // including the part before `after`'s wall clock.
            let (start, end) = fold_bounds(earlier, later, tz);
            if let Some(wall_time) = next.filter(|wall_time| *wall_time < end) {
                return tz.resolve(wall_time).earliest();
            }
            let replayed = self
                .next_naive(start, true)
                .filter(|wall_time| *wall_time < end);
            if let Some(wall_time) = replayed {
                return tz.resolve(wall_time).latest();
            }
        }
        let mut wall_time = next?;
        for _ in 0..MAX_STEPS {
            match tz.resolve(wall_time) {
                Local::Single(instant) if instant > after => return Some(instant),
                // Reached before the repetition ends only from its second pass, where the
                // first-pass instant is already behind `after`.
                Local::Repeated(earlier, later) => {
                    if earlier > after {
                        return Some(earlier);
                    }
                    if later > after {
                        return Some(later);
                    }
                }
                Local::Gap { end } => {
                    // Skip the whole gap instead of stepping through what it swallowed.
                    let resume = tz.wall_clock(end);
                    if resume > wall_time {
                        wall_time = self.next_naive(resume, true)?;
                        continue;
                    }
                }
                Local::Single(_) => {}
            }
            wall_time = self.next_naive(wall_time, false)?;
        }
        None
    }
}

/// The wall-clock range `[start, end)` that a fall-back transition repeats, given the two
/// instants of one wall-clock time inside it. The transition lies in `(earlier, later]`.
fn fold_bounds(
    earlier: DateTime<Utc>,
    later: DateTime<Utc>,
    tz: &Zone,
) -> (NaiveDateTime, NaiveDateTime) {
    let old = tz.offset_seconds(earlier);
    let new = tz.offset_seconds(later);
    let transition = tz.transition_between(earlier, later).naive_utc();
    let start = transition + TimeDelta::seconds(i64::from(new));
    let end = transition + TimeDelta::seconds(i64::from(old));
    (start, end)
}

fn start_of_year(year: i32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or(chrono::NaiveDate::MAX)
}

/// Builds croner's pattern from six fields. Vixie cron ANDs day of month and day of week
/// when either field starts with `*` (even `*/2`), and ORs them otherwise; croner only
/// treats a bare `*` as unrestricted, so the AND is requested explicitly.
fn compile(fields: &[String]) -> Result<croner::Cron, croner::errors::CronError> {
    let starred = |field: &str| field.starts_with('*') || field.starts_with('?');
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(starred(&fields[3]) || starred(&fields[5]))
        .build()
        .parse(&fields.join(" "))
}

/// Turns croner's error into one that names the guilty field: each field is parsed alone,
/// the others held at `*`, and the first that fails is blamed.
fn blame_field(expr: &str, fields: &[String], err: croner::errors::CronError) -> CronError {
    for (index, (field, accepted)) in FIELDS.iter().enumerate() {
        let mut probe = vec!["*".to_string(); FIELDS.len()];
        probe[index] = fields[index].clone();
        if let Err(field_err) = compile(&probe) {
            return CronError::Field {
                expr: expr.to_string(),
                field,
                value: fields[index].clone(),
                reason: croner_reason(&field_err),
                accepted,
            };
        }
    }
    CronError::Pattern {
        expr: expr.to_string(),
        reason: croner_reason(&err),
    }
}

/// croner's messages are sentences ("Component error: Number out of bounds."); this keeps
/// the part after the category, lowercased and without the full stop. croner upper-cases the
/// pattern before it complains about characters, so that message is replaced.
fn croner_reason(err: &croner::errors::CronError) -> String {
    if let croner::errors::CronError::IllegalCharacters(_) = err {
        return "illegal character".to_string();
    }
    let text = err.to_string();
    let detail = text
        .split_once(": ")
        .map_or(text.as_str(), |(_, rest)| rest)
        .trim_end_matches('.');
    let mut chars = detail.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Parses an IANA time zone name (see [`Zone::parse`]). A near miss (wrong case, spaces for
/// underscores, a bare city) is answered with the name that would have worked.
pub fn parse_timezone(name: &str) -> Result<Zone, CronError> {
    Zone::parse(name).map_err(|err| CronError::UnknownTimezone {
        name: err.name,
        suggestion: err.suggestion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};
    use std::collections::BTreeSet;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn zone(name: &str) -> Zone {
        parse_timezone(name).expect("test zone")
    }

    /// The same zone from chrono-tz's compiled-in tables: the oracle's own source, so a
    /// mistake in reading the system's database cannot pass.
    fn chrono_zone(zone: &Zone) -> chrono_tz::Tz {
        zone.name().parse().expect("chrono-tz knows the zone")
    }

    fn cron(expr: &str) -> Cron {
        Cron::parse(expr).expect("test expression")
    }

    fn text(instant: DateTime<Utc>) -> String {
        instant.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Fires in `(from, to]`, as RFC 3339 UTC strings.
    fn fires(expr: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
        let to = utc(to);
        cron(expr)
            .iter_after(utc(from), &zone(tz))
            .take_while(|instant| *instant <= to)
            .map(text)
            .collect()
    }

    /// Brute force over every second of `[from, to]`: the instants the SPEC §2 rule fires
    /// at, found without the search's jumps, fold arithmetic or chrono-tz's gap lookup.
    fn oracle(cron: &Cron, tz: &Zone, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeSet<i64> {
        use chrono::{LocalResult, TimeZone};
        let tz = chrono_zone(tz);
        let matches = |wall: &NaiveDateTime| cron.pattern.is_time_matching(wall).expect("match");
        let mut out = BTreeSet::new();
        if cron.is_fixed_time() {
            // Walk wall-clock seconds; a margin covers offsets that move the instant away.
            let margin = TimeDelta::hours(4);
            let mut wall = from.with_timezone(&tz).naive_local() - margin;
            let last = to.with_timezone(&tz).naive_local() + margin;
            while wall <= last {
                if matches(&wall) {
                    let instant = match tz.from_local_datetime(&wall) {
                        LocalResult::Single(instant) => instant,
                        LocalResult::Ambiguous(earlier, _) => earlier,
                        LocalResult::None => {
                            let mut after_gap = wall;
                            loop {
                                after_gap += TimeDelta::seconds(1);
                                if let Some(instant) = tz.from_local_datetime(&after_gap).earliest()
                                {
                                    break instant;
                                }
                            }
                        }
                    };
                    out.insert(instant.timestamp());
                }
                wall += TimeDelta::seconds(1);
            }
        } else {
            let mut instant = from;
            while instant <= to {
                if matches(&instant.with_timezone(&tz).naive_local()) {
                    out.insert(instant.timestamp());
                }
                instant += TimeDelta::seconds(1);
            }
        }
        out.retain(|t| *t >= from.timestamp() && *t <= to.timestamp());
        out
    }

    /// Checks `next_after` from many starting points of `[from, to]` (whole and fractional
    /// seconds, inside both passes of a repeated hour, inside gaps) against the oracle, and
    /// the iterator over the whole window.
    fn check_against_oracle(expr: &str, tz: &str, from: &str, to: &str) {
        let (cron, tz, from, to) = (cron(expr), zone(tz), utc(from), utc(to));
        let expected = oracle(&cron, &tz, from, to);
        assert!(!expected.is_empty(), "{expr}: window without fires");
        let listed: Vec<i64> = cron
            .iter_after(from - TimeDelta::seconds(1), &tz)
            .take_while(|instant| *instant <= to)
            .map(|instant| instant.timestamp())
            .collect();
        assert_eq!(
            listed,
            expected.iter().copied().collect::<Vec<_>>(),
            "{expr} in {tz}: iterated fires differ from the brute-force rule"
        );
        let mut start = from;
        while start < to {
            for nudge in [TimeDelta::zero(), TimeDelta::milliseconds(500)] {
                let after = start + nudge;
                let want = expected.range(after.timestamp() + 1..).next().copied();
                let got = cron
                    .next_after(after, &tz)
                    .map(|instant| instant.timestamp());
                if want.is_some() {
                    assert_eq!(got, want, "{expr} in {tz}: next_after({after})");
                }
            }
            start += TimeDelta::seconds(7 * 60 + 13);
        }
    }

    // --- DST: Europe/Berlin, spring 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z) ---

    #[test]
    fn berlin_spring_fixed_time_fires_at_the_end_of_the_gap() {
        assert_eq!(
            fires(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T00:00:00Z",
                "2026-03-31T00:00:00Z"
            ),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        check_against_oracle(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T22:00:00Z",
            "2026-03-29T04:00:00Z",
        );
    }

    #[test]
    fn berlin_spring_fixed_time_fires_once_for_several_swallowed_times() {
        // 02:00, 02:20 and 02:40 all fall in the gap: one fire at 03:00 CEST.
        assert_eq!(
            fires(
                "0,20,40 2 * * *",
                "Europe/Berlin",
                "2026-03-29T00:00:00Z",
                "2026-03-30T00:00:00Z"
            ),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
        );
        // 02:00 is swallowed and 03:00 matches on its own: still a single fire.
        assert_eq!(
            fires(
                "0 2,3 * * *",
                "Europe/Berlin",
                "2026-03-29T00:00:00Z",
                "2026-03-29T23:00:00Z"
            ),
            ["2026-03-29T01:00:00Z"]
        );
        // The 6-field form follows the same rule: a seconds list is still fixed-time.
        assert_eq!(
            fires(
                "*/20 30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T00:00:00Z",
                "2026-03-29T23:00:00Z"
            ),
            ["2026-03-29T01:00:00Z"]
        );
        check_against_oracle(
            "0,20,40 2 * * *",
            "Europe/Berlin",
            "2026-03-28T23:00:00Z",
            "2026-03-29T03:00:00Z",
        );
        check_against_oracle(
            "*/20 30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T23:00:00Z",
            "2026-03-29T03:00:00Z",
        );
    }

    #[test]
    fn berlin_spring_elapsed_time_adds_nothing_for_the_gap() {
        assert_eq!(
            fires(
                "*/15 * * * *",
                "Europe/Berlin",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:30:00Z"
            ),
            [
                "2026-03-29T00:45:00Z", // 01:45 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST; 02:00-02:45 never happened
                "2026-03-29T01:15:00Z",
                "2026-03-29T01:30:00Z",
            ]
        );
        check_against_oracle(
            "*/15 * * * *",
            "Europe/Berlin",
            "2026-03-28T23:00:00Z",
            "2026-03-29T03:00:00Z",
        );
        check_against_oracle(
            "0 * * * * *",
            "Europe/Berlin",
            "2026-03-29T00:00:00Z",
            "2026-03-29T02:00:00Z",
        );
    }

    // --- DST: Europe/Berlin, fall 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z) ---

    #[test]
    fn berlin_fall_fixed_time_fires_at_the_first_pass_only() {
        assert_eq!(
            fires(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T00:00:00Z",
                "2026-10-27T00:00:00Z"
            ),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
        // From inside the second pass, before 02:30 CET: the first pass already fired.
        assert_eq!(
            cron("30 2 * * *").next_after(utc("2026-10-25T01:10:00Z"), &zone("Europe/Berlin")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        check_against_oracle(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T22:00:00Z",
            "2026-10-25T04:00:00Z",
        );
        check_against_oracle(
            "*/20 30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T22:00:00Z",
            "2026-10-25T04:00:00Z",
        );
    }

    #[test]
    fn berlin_fall_elapsed_time_fires_in_both_passes() {
        let expected: Vec<String> = (0..12)
            .map(|step| text(utc("2026-10-24T23:45:00Z") + TimeDelta::minutes(15 * step)))
            .collect();
        let got = fires(
            "*/15 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:30:00Z",
            "2026-10-25T02:30:00Z",
        );
        assert_eq!(
            got, expected,
            "every 15 minutes of elapsed time, nothing doubled"
        );
        let walls: Vec<String> = got
            .iter()
            .map(|t| zone("Europe/Berlin").format(utc(t), "%H:%M"))
            .collect();
        for repeated in ["02:00", "02:15", "02:30", "02:45"] {
            assert_eq!(
                walls.iter().filter(|w| *w == repeated).count(),
                2,
                "{repeated} twice"
            );
        }
        check_against_oracle(
            "*/15 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:00:00Z",
            "2026-10-25T03:00:00Z",
        );
        check_against_oracle(
            "0 * * * * *",
            "Europe/Berlin",
            "2026-10-25T00:00:00Z",
            "2026-10-25T02:00:00Z",
        );
    }

    #[test]
    fn berlin_fall_hourly_fires_at_both_two_oclocks() {
        assert_eq!(
            fires(
                "@hourly",
                "Europe/Berlin",
                "2026-10-24T23:30:00Z",
                "2026-10-25T02:00:00Z"
            ),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
        // From the first pass, after its 02:00: the second 02:00 is next.
        assert_eq!(
            cron("@hourly").next_after(utc("2026-10-25T00:40:00Z"), &zone("Europe/Berlin")),
            Some(utc("2026-10-25T01:00:00Z"))
        );
    }

    #[test]
    fn berlin_fall_fixed_time_list_of_hours() {
        assert!(cron("0 30 2,14 * * *").is_fixed_time());
        assert_eq!(
            fires(
                "0 30 2,14 * * *",
                "Europe/Berlin",
                "2026-10-25T00:00:00Z",
                "2026-10-26T00:00:00Z"
            ),
            ["2026-10-25T00:30:00Z", "2026-10-25T13:30:00Z"]
        );
        check_against_oracle(
            "0 30 2,14 * * *",
            "Europe/Berlin",
            "2026-10-24T20:00:00Z",
            "2026-10-25T04:00:00Z",
        );
    }

    #[test]
    fn module_doc_examples_hold() {
        let day = |expr, date: &str| {
            let from = format!("{date}T00:00:00+01:00");
            let to = format!("{date}T03:00:00+01:00");
            fires(expr, "Europe/Berlin", &from, &to)
        };
        // Window (local midnight, 03:00 CET]: 23:00Z the day before to 02:00Z.
        assert_eq!(day("30 2 * * *", "2026-03-29"), ["2026-03-29T01:00:00Z"]);
        assert_eq!(day("30 2 * * *", "2026-10-25"), ["2026-10-25T00:30:00Z"]);
        assert_eq!(
            day("*/30 * * * *", "2026-03-29"),
            [
                "2026-03-28T23:30:00Z", // 00:30 CET
                "2026-03-29T00:00:00Z", // 01:00 CET
                "2026-03-29T00:30:00Z", // 01:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST
                "2026-03-29T01:30:00Z", // 03:30 CEST
                "2026-03-29T02:00:00Z", // 04:00 CEST
            ]
        );
        assert_eq!(
            day("*/30 * * * *", "2026-10-25"),
            [
                "2026-10-24T23:30:00Z", // 01:30 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
    }

    // --- DST: America/New_York, 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z) and
    //     2026-11-01 02:00 EDT -> 01:00 EST (06:00Z) ---

    #[test]
    fn new_york_spring_fixed_and_elapsed() {
        assert_eq!(
            fires(
                "30 2 * * *",
                "America/New_York",
                "2026-03-07T00:00:00Z",
                "2026-03-10T00:00:00Z"
            ),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        assert_eq!(
            fires(
                "*/30 * * * *",
                "America/New_York",
                "2026-03-08T06:00:00Z",
                "2026-03-08T08:00:00Z"
            ),
            [
                "2026-03-08T06:30:00Z", // 01:30 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT
                "2026-03-08T07:30:00Z",
                "2026-03-08T08:00:00Z",
            ]
        );
        check_against_oracle(
            "30 2 * * *",
            "America/New_York",
            "2026-03-08T04:00:00Z",
            "2026-03-08T10:00:00Z",
        );
        check_against_oracle(
            "*/15 * * * *",
            "America/New_York",
            "2026-03-08T05:00:00Z",
            "2026-03-08T09:00:00Z",
        );
    }

    #[test]
    fn new_york_fall_fixed_and_elapsed() {
        // 01:30 is the repeated time in New York.
        assert_eq!(
            fires(
                "30 1 * * *",
                "America/New_York",
                "2026-10-31T00:00:00Z",
                "2026-11-03T00:00:00Z"
            ),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        assert_eq!(
            fires(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T04:45:00Z",
                "2026-11-01T07:00:00Z"
            ),
            [
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
            ]
        );
        check_against_oracle(
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T03:00:00Z",
            "2026-11-01T09:00:00Z",
        );
        check_against_oracle(
            "*/15 * * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            "2026-11-01T08:00:00Z",
        );
    }

    // --- DST: Australia/Lord_Howe, a 30-minute shift. 2026-04-05 02:00 +11 -> 01:30 +10:30
    //     (2026-04-04T15:00Z) and 2026-10-04 02:00 +10:30 -> 02:30 +11 (2026-10-03T15:30Z) ---

    #[test]
    fn lord_howe_transitions_are_where_the_tests_expect_them() {
        let tz = zone("Australia/Lord_Howe");
        let wall = |y, m, d, h, min| {
            chrono::NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|date| date.and_hms_opt(h, min, 0))
                .expect("wall time")
        };
        assert!(matches!(
            tz.resolve(wall(2026, 4, 5, 1, 45)),
            Local::Repeated(..)
        ));
        assert!(matches!(
            tz.resolve(wall(2026, 4, 5, 2, 0)),
            Local::Single(_)
        ));
        assert!(matches!(
            tz.resolve(wall(2026, 10, 4, 2, 15)),
            Local::Gap { .. }
        ));
        assert!(matches!(
            tz.resolve(wall(2026, 10, 4, 2, 30)),
            Local::Single(_)
        ));
    }

    #[test]
    fn lord_howe_fall_fixed_and_elapsed() {
        assert_eq!(
            fires(
                "45 1 * * *",
                "Australia/Lord_Howe",
                "2026-04-03T00:00:00Z",
                "2026-04-06T00:00:00Z"
            ),
            [
                "2026-04-03T14:45:00Z",
                "2026-04-04T14:45:00Z",
                "2026-04-05T15:15:00Z"
            ]
        );
        assert_eq!(
            fires(
                "*/15 * * * *",
                "Australia/Lord_Howe",
                "2026-04-04T14:00:00Z",
                "2026-04-04T15:30:00Z"
            ),
            [
                "2026-04-04T14:15:00Z", // 01:15 +11
                "2026-04-04T14:30:00Z", // 01:30 +11
                "2026-04-04T14:45:00Z", // 01:45 +11
                "2026-04-04T15:00:00Z", // 01:30 +10:30
                "2026-04-04T15:15:00Z", // 01:45 +10:30
                "2026-04-04T15:30:00Z", // 02:00 +10:30
            ]
        );
        check_against_oracle(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T12:00:00Z",
            "2026-04-04T18:00:00Z",
        );
        check_against_oracle(
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2026-04-04T13:00:00Z",
            "2026-04-04T17:00:00Z",
        );
        check_against_oracle(
            "0 * * * * *",
            "Australia/Lord_Howe",
            "2026-04-04T14:00:00Z",
            "2026-04-04T16:00:00Z",
        );
    }

    #[test]
    fn lord_howe_spring_fixed_and_elapsed() {
        assert_eq!(
            fires(
                "15 2 * * *",
                "Australia/Lord_Howe",
                "2026-10-02T00:00:00Z",
                "2026-10-05T00:00:00Z"
            ),
            [
                "2026-10-02T15:45:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-04T15:15:00Z"
            ]
        );
        assert_eq!(
            fires(
                "*/15 * * * *",
                "Australia/Lord_Howe",
                "2026-10-03T14:30:00Z",
                "2026-10-03T16:00:00Z"
            ),
            [
                "2026-10-03T14:45:00Z", // 01:15 +10:30
                "2026-10-03T15:00:00Z", // 01:30 +10:30
                "2026-10-03T15:15:00Z", // 01:45 +10:30
                "2026-10-03T15:30:00Z", // 02:30 +11; 02:00 and 02:15 never happened
                "2026-10-03T15:45:00Z",
                "2026-10-03T16:00:00Z",
            ]
        );
        check_against_oracle(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T12:00:00Z",
            "2026-10-03T18:00:00Z",
        );
        check_against_oracle(
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2026-10-03T13:00:00Z",
            "2026-10-03T17:00:00Z",
        );
    }

    #[test]
    fn every_second_steps_by_one_second_across_both_transitions() {
        let every_second = cron("*/1 * * * * *");
        for start in ["2026-10-25T00:30:00Z", "2026-03-29T00:30:00Z"] {
            let start = utc(start);
            let mut previous = start;
            let mut count = 0;
            for instant in every_second
                .iter_after(start, &zone("Europe/Berlin"))
                .take(10_000)
            {
                assert_eq!(
                    instant - previous,
                    TimeDelta::seconds(1),
                    "after {previous}"
                );
                previous = instant;
                count += 1;
            }
            assert_eq!(count, 10_000);
        }
    }

    // --- Forms, macros, fields ---

    #[test]
    fn five_fields_mean_seconds_zero() {
        let tz = zone("Europe/Berlin");
        let start = utc("2026-03-20T00:00:00Z");
        let five: Vec<_> = cron("30 2 * * *").iter_after(start, &tz).take(40).collect();
        let six: Vec<_> = cron("0 30 2 * * *")
            .iter_after(start, &tz)
            .take(40)
            .collect();
        assert_eq!(five, six);
        assert_eq!(
            fires(
                "*/20 * * * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z"
            ),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
    }

    #[test]
    fn macros_expand_to_their_usual_schedules() {
        let start = utc("2026-01-01T00:00:00Z"); // a Thursday
        let cases = [
            ("@hourly", "2026-01-01T01:00:00Z"),
            ("@daily", "2026-01-02T00:00:00Z"),
            ("@midnight", "2026-01-02T00:00:00Z"),
            ("@weekly", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-02-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@DAILY", "2026-01-02T00:00:00Z"),
        ];
        for (expr, next) in cases {
            let parsed = cron(expr);
            assert_eq!(
                parsed.next_after(start, &Zone::utc()),
                Some(utc(next)),
                "{expr}"
            );
            assert_eq!(parsed.expr(), expr);
        }
        // @daily is fixed-time: in Berlin it is 00:00 local, 23:00Z the day before in winter.
        assert_eq!(
            cron("@daily").next_after(start, &zone("Europe/Berlin")),
            Some(utc("2026-01-01T23:00:00Z"))
        );
    }

    #[test]
    fn utc_schedule_has_no_transitions() {
        assert_eq!(
            fires(
                "0 30 2,14 * * *",
                "UTC",
                "2026-10-25T00:00:00Z",
                "2026-10-26T23:59:59Z"
            ),
            [
                "2026-10-25T02:30:00Z",
                "2026-10-25T14:30:00Z",
                "2026-10-26T02:30:00Z",
                "2026-10-26T14:30:00Z",
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        let days: Vec<chrono::NaiveDate> = cron("0 0 13 * 5")
            .iter_after(utc("2026-01-31T12:00:00Z"), &Zone::utc())
            .take_while(|t| *t < utc("2026-05-01T00:00:00Z"))
            .map(|t| t.date_naive())
            .collect();
        let expected: Vec<chrono::NaiveDate> = chrono::NaiveDate::from_ymd_opt(2026, 2, 1)
            .expect("date")
            .iter_days()
            .take_while(|d| d.month() < 5)
            .filter(|d| d.day() == 13 || d.weekday() == Weekday::Fri)
            .collect();
        assert_eq!(days, expected);
        // 2026-04-13 is a Monday: it fires for the 13th alone.
        assert!(days.contains(&chrono::NaiveDate::from_ymd_opt(2026, 4, 13).expect("date")));
    }

    #[test]
    fn day_of_month_and_day_of_week_when_one_starts_with_star() {
        // Vixie cron: "*/2" makes the day-of-month field unrestricted, so both must match:
        // odd days that are Mondays.
        let days: Vec<chrono::NaiveDate> = cron("0 0 */2 * 1")
            .iter_after(utc("2026-01-01T00:00:00Z"), &Zone::utc())
            .take(6)
            .map(|t| t.date_naive())
            .collect();
        assert_eq!(days.len(), 6);
        for day in days {
            assert!(day.weekday() == Weekday::Mon && day.day() % 2 == 1, "{day}");
        }
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        let start = utc("2026-01-01T00:00:00Z");
        let sundays =
            |expr: &str| -> Vec<_> { cron(expr).iter_after(start, &Zone::utc()).take(5).collect() };
        let zero = sundays("0 0 * * 0");
        assert_eq!(zero, sundays("0 0 * * 7"));
        assert_eq!(zero, sundays("0 0 * * sun"));
        assert!(zero.iter().all(|t| t.weekday() == Weekday::Sun));
        let weekdays: Vec<_> = cron("0 0 * * 1-5")
            .iter_after(start, &Zone::utc())
            .take(10)
            .collect();
        assert!(
            weekdays
                .iter()
                .all(|t| !matches!(t.weekday(), Weekday::Sat | Weekday::Sun))
        );
    }

    #[test]
    fn iter_after_is_strictly_increasing() {
        for (expr, tz) in [
            ("*/7 * * * *", "Europe/Berlin"),
            ("30 2 * * *", "America/New_York"),
            ("0 */10 * * * *", "Australia/Lord_Howe"),
            ("@weekly", "Europe/Berlin"),
        ] {
            let fired: Vec<_> = cron(expr)
                .iter_after(utc("2026-01-01T00:00:00Z"), &zone(tz))
                .take(2_000)
                .collect();
            assert_eq!(fired.len(), 2_000, "{expr}");
            assert!(
                fired.windows(2).all(|pair| pair[0] < pair[1]),
                "{expr} in {tz}"
            );
        }
    }

    #[test]
    fn fixed_time_means_minute_and_hour_do_not_start_with_star() {
        for (expr, fixed) in [
            ("*/10 * * * *", false),
            ("30 2 * * *", true),
            ("0 */10 * * * *", false),
            ("0 30 2,14 * * *", true),
            ("*/20 30 2 * * *", true),
            ("30 * * * *", false),
            ("* 2 * * *", false),
            ("0-59/5 2 * * *", true),
            ("@daily", true),
            ("@weekly", true),
            ("@monthly", true),
            ("@yearly", true),
            ("@hourly", false),
        ] {
            assert_eq!(cron(expr).is_fixed_time(), fixed, "{expr}");
        }
    }

    #[test]
    fn text_round_trips_and_equality_is_by_text() {
        let parsed: Cron = " 30 2 * * * ".parse().expect("parse");
        assert_eq!(parsed.to_string(), "30 2 * * *");
        assert_eq!(parsed.expr(), "30 2 * * *");
        assert_eq!(parsed, cron("30 2 * * *"));
        assert_ne!(parsed, cron("0 30 2 * * *"));
    }

    #[test]
    fn wrong_shapes_are_rejected_with_what_is_accepted() {
        for (expr, says) in [
            ("", "empty cron expression"),
            ("   ", "empty cron expression"),
            ("* * * *", "has 4 fields"),
            ("0 0 0 1 1 * 2026", "has 7 fields"),
            ("@reboot", "unknown cron macro \"@reboot\""),
            ("@every 5m", "unknown cron macro"),
        ] {
            let message = Cron::parse(expr).expect_err(expr).to_string();
            assert!(message.contains(says), "{expr}: {message}");
            assert!(message.contains(ACCEPTED), "{expr}: {message}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        for (expr, field) in [
            ("60 * * * * *", "bad second field \"60\""),
            ("61 * * * *", "bad minute field \"61\""),
            ("0 24 * * *", "bad hour field \"24\""),
            ("0 0 32 * *", "bad day-of-month field \"32\""),
            ("0 0 * 13 *", "bad month field \"13\""),
            ("0 0 * * 8", "bad day-of-week field \"8\""),
            ("x * * * *", "bad minute field \"x\" (illegal character)"),
            ("5/5 * * * *", "bad minute field \"5/5\""),
        ] {
            let message = Cron::parse(expr).expect_err(expr).to_string();
            assert!(message.contains(field), "{expr}: {message}");
            assert!(message.contains("expected"), "{expr}: {message}");
        }
    }

    #[test]
    fn impossible_dates_are_rejected() {
        let err = Cron::parse("0 0 30 2 *").expect_err("february 30th");
        assert!(matches!(err, CronError::NeverFires { .. }), "{err}");
        // February 29th does exist.
        assert_eq!(
            cron("0 0 29 2 *").next_after(utc("2026-01-01T00:00:00Z"), &Zone::utc()),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn time_zone_names_are_checked_with_a_suggestion() {
        assert_eq!(
            parse_timezone("Europe/Berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(parse_timezone("UTC"), Ok(Zone::utc()));
        for (name, suggestion) in [
            ("europe/berlin", Some("Europe/Berlin")),
            ("America/New York", Some("America/New_York")),
            ("Berlin", Some("Europe/Berlin")),
            ("Mars/Olympus", None),
        ] {
            let err = parse_timezone(name).expect_err(name);
            let CronError::UnknownTimezone {
                suggestion: got, ..
            } = &err
            else {
                panic!("{name}: {err:?}");
            };
            assert_eq!(got.as_deref(), suggestion, "{name}");
            assert!(err.to_string().contains("Europe/Berlin"), "{err}");
        }
    }
}
