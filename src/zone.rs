//! Time zones, from the system's time zone database as cron, systemd and supercronic read it.
//!
//! Rules:
//! - Names are looked up in the database jiff finds at start: `TZDIR` when set, else the
//!   system's (`/usr/share/zoneinfo`), so a tzdata update applies without a rebuild; where the
//!   system has none (a minimal container), the copy bundled into the binary.
//! - A zone answers the three questions the cron rule asks (SPEC §2): the wall clock at an
//!   instant, the instants of a wall-clock time (one; two in a repeated hour; none in a gap,
//!   with the instant the gap ends), and the offset at an instant. jiff reads the POSIX rule
//!   at the end of "slim" zone files, so instants past the last explicit transition follow
//!   the zone's current DST rule.
//! - Instants stay `chrono::DateTime<Utc>` everywhere else; this module converts at its edge.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

/// A named time zone. Cheap to clone.
#[derive(Clone)]
pub struct Zone {
    name: Arc<str>,
    tz: jiff::tz::TimeZone,
}

/// The instants of one wall-clock time in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// The usual case: one instant.
    Single(DateTime<Utc>),
    /// A time that occurs twice (a fall-back transition): the first pass, then the second.
    Repeated(DateTime<Utc>, DateTime<Utc>),
    /// A time a spring-forward gap swallowed; `end` is the first instant after the gap.
    Gap { end: DateTime<Utc> },
}

impl Local {
    pub fn earliest(self) -> Option<DateTime<Utc>> {
        match self {
            Local::Single(t) | Local::Repeated(t, _) => Some(t),
            Local::Gap { .. } => None,
        }
    }

    pub fn latest(self) -> Option<DateTime<Utc>> {
        match self {
            Local::Single(t) | Local::Repeated(_, t) => Some(t),
            Local::Gap { .. } => None,
        }
    }
}

/// A name the database does not know, with the name that would have worked when the user
/// was close (wrong case, spaces for underscores, a bare city).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownZone {
    pub name: String,
    pub suggestion: Option<String>,
}

impl Zone {
    /// Coordinated Universal Time.
    pub fn utc() -> Zone {
        Zone {
            name: Arc::from("UTC"),
            tz: jiff::tz::TimeZone::UTC,
        }
    }

    /// Looks an IANA name up in the time zone database (see the module doc).
    pub fn parse(name: &str) -> Result<Zone, UnknownZone> {
        let trimmed = name.trim();
        if trimmed == "UTC" {
            return Ok(Zone::utc());
        }
        if let Ok(tz) = jiff::tz::db().get(trimmed) {
            // jiff matches names ignoring case; the name must be written as the database
            // writes it (as cron's and systemd's lookups of a file name require), and a
            // near miss gets the right spelling below.
            if tz.iana_name().is_none_or(|name| name == trimmed) {
                return Ok(Zone {
                    name: Arc::from(trimmed),
                    tz,
                });
            }
        }
        let wanted = trimmed.replace(' ', "_");
        let names: Vec<String> = jiff::tz::db()
            .available()
            .map(|n| n.as_str().to_string())
            .collect();
        let suggestion = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(&wanted))
            .or_else(|| {
                names.iter().find(|n| {
                    n.rsplit('/')
                        .next()
                        .is_some_and(|city| city.eq_ignore_ascii_case(&wanted))
                })
            })
            .cloned();
        Err(UnknownZone {
            name: name.to_string(),
            suggestion,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offset from UTC at `at`, in seconds.
    pub fn offset_seconds(&self, at: DateTime<Utc>) -> i32 {
        self.tz.to_offset(timestamp(at)).seconds()
    }

    /// The wall-clock time at `at`.
    pub fn wall_clock(&self, at: DateTime<Utc>) -> NaiveDateTime {
        at.naive_utc() + chrono::TimeDelta::seconds(i64::from(self.offset_seconds(at)))
    }

    /// The instants at which the wall clock shows `wall`.
    pub fn resolve(&self, wall: NaiveDateTime) -> Local {
        use jiff::tz::AmbiguousOffset;
        let Some(civil) = civil(wall) else {
            // Outside jiff's range (years beyond ±9999): read as UTC.
            return Local::Single(wall.and_utc());
        };
        let at = |offset: jiff::tz::Offset| {
            wall.and_utc() - chrono::TimeDelta::seconds(i64::from(offset.seconds()))
        };
        match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => Local::Single(at(offset)),
            AmbiguousOffset::Fold { before, after } => Local::Repeated(at(before), at(after)),
            AmbiguousOffset::Gap { before, after } => Local::Gap {
                end: self.transition_between(at(after), at(before)),
            },
        }
    }

    /// The first whole second in `(from, to]` whose offset differs from the offset at
    /// `from`: where a transition lies. A dozen look-ups by bisection.
    pub fn transition_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let old = self.offset_seconds(from);
        let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let offset = DateTime::from_timestamp(mid, 0).map(|t| self.offset_seconds(t));
            if offset == Some(old) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        DateTime::from_timestamp(hi, 0).unwrap_or(to)
    }

    /// `at` on this zone's wall clock, formatted with strftime directives (`%Z` is the
    /// abbreviation, `%:z` the offset).
    pub fn format(&self, at: DateTime<Utc>, format: &str) -> String {
        timestamp(at)
            .to_zoned_datetime(self.tz.clone())
            .strftime(format)
            .to_string()
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A zone's offset at one instant, as chrono's [`chrono::TimeZone`] needs it: the offset and
/// the zone it belongs to, so code written against chrono's trait (the agents' reset times)
/// reads the same database as the cron rule.
#[derive(Clone, Debug)]
pub struct ZoneOffset {
    zone: Zone,
    offset: chrono::FixedOffset,
}

impl chrono::Offset for ZoneOffset {
    fn fix(&self) -> chrono::FixedOffset {
        self.offset
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.offset)
    }
}

impl Zone {
    fn offset_value(&self, seconds: i32) -> ZoneOffset {
        ZoneOffset {
            zone: self.clone(),
            offset: chrono::FixedOffset::east_opt(seconds)
                .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero is valid")),
        }
    }
}

impl chrono::TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Zone {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> chrono::LocalResult<ZoneOffset> {
        self.offset_from_local_datetime(&local.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> chrono::LocalResult<ZoneOffset> {
        let offset_of = |at: DateTime<Utc>| self.offset_value(self.offset_seconds(at));
        match self.resolve(*local) {
            Local::Single(at) => chrono::LocalResult::Single(offset_of(at)),
            Local::Repeated(earlier, later) => {
                chrono::LocalResult::Ambiguous(offset_of(earlier), offset_of(later))
            }
            Local::Gap { .. } => chrono::LocalResult::None,
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_from_utc_datetime(&utc.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.offset_value(self.offset_seconds(utc.and_utc()))
    }
}

fn timestamp(at: DateTime<Utc>) -> jiff::Timestamp {
    jiff::Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos() as i32)
        .unwrap_or(jiff::Timestamp::MAX)
}

fn civil(wall: NaiveDateTime) -> Option<jiff::civil::DateTime> {
    let date: NaiveDate = wall.date();
    jiff::civil::DateTime::new(
        i16::try_from(date.year()).ok()?,
        date.month() as i8,
        date.day() as i8,
        wall.hour() as i8,
        wall.minute() as i8,
        wall.second() as i8,
        (wall.nanosecond() % 1_000_000_000) as i32,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn wall(s: &str) -> NaiveDateTime {
        s.parse().unwrap()
    }

    #[test]
    fn berlin_has_one_gap_and_one_fold_in_2026() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.resolve(wall("2026-03-29T02:30:00")),
            Local::Gap {
                end: utc("2026-03-29T01:00:00Z")
            }
        );
        assert_eq!(
            berlin.resolve(wall("2026-10-25T02:30:00")),
            Local::Repeated(utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z"))
        );
        assert_eq!(
            berlin.resolve(wall("2026-07-01T12:00:00")),
            Local::Single(utc("2026-07-01T10:00:00Z"))
        );
        assert_eq!(
            berlin.wall_clock(utc("2026-10-25T01:30:00Z")),
            wall("2026-10-25T02:30:00")
        );
        assert_eq!(
            berlin.format(utc("2026-01-15T11:00:00Z"), "%Y-%m-%d %H:%M:%S %Z (%:z)"),
            "2026-01-15 12:00:00 CET (+01:00)"
        );
    }

    /// Zone files end with a POSIX rule for the years after their last transition; a reader
    /// that ignores it gets every DST change after that wrong.
    #[test]
    fn dst_far_past_the_last_explicit_transition_follows_the_rule() {
        let new_york = Zone::parse("America/New_York").unwrap();
        // The second Sunday of March 2087 is the 9th; 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            new_york.resolve(wall("2087-03-09T02:30:00")),
            Local::Gap {
                end: utc("2087-03-09T07:00:00Z")
            }
        );
        assert_eq!(
            new_york.offset_seconds(utc("2087-07-04T12:00:00Z")),
            -4 * 3600
        );
        assert_eq!(
            new_york.offset_seconds(utc("2087-12-25T12:00:00Z")),
            -5 * 3600
        );
    }

    #[test]
    fn chronos_trait_reads_the_same_database() {
        use chrono::TimeZone;
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        let local = berlin
            .from_local_datetime(&wall("2026-07-01T12:00:00"))
            .single()
            .unwrap();
        assert_eq!(local.with_timezone(&Utc), utc("2026-07-01T10:00:00Z"));
        assert!(
            berlin
                .from_local_datetime(&wall("2026-03-29T02:30:00"))
                .single()
                .is_none()
        );
        assert!(matches!(
            berlin.from_local_datetime(&wall("2026-10-25T02:30:00")),
            chrono::LocalResult::Ambiguous(..)
        ));
        let back = utc("2026-01-15T11:00:00Z").with_timezone(&berlin);
        assert_eq!(back.naive_local(), wall("2026-01-15T12:00:00"));
    }

    #[test]
    fn near_misses_are_answered_with_the_name_that_works() {
        let err = Zone::parse("europe/berlin").unwrap_err();
        assert_eq!(err.suggestion.as_deref(), Some("Europe/Berlin"));
        let err = Zone::parse("new york").unwrap_err();
        assert_eq!(err.suggestion.as_deref(), Some("America/New_York"));
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::utc());
        assert!(
            Zone::parse("Mars/Olympus")
                .unwrap_err()
                .suggestion
                .is_none()
        );
    }
}
