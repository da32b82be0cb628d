//! Rate limits, usage limits, quotas and overload, as each agent words them, and when they
//! end.
//!
//! Recognised by status (429, 529, 503 where the agent gives one) and by wording. Error texts
//! the agent itself reported are matched loosely ([`is_limit_error`]: `rate_limit_error` in a
//! JSON body counts); free text such as the last lines of stderr only by whole phrases
//! ([`is_limit_line`]), so a test named `rate_limit_pause` in a build's output does not.
//!
//! Reset times, as the agents print them (sources in tests/fixtures/agents/README.md):
//! - an epoch after a bar: `Claude AI usage limit reached|1762952400` (seconds or ms);
//! - a wall-clock time, with or without a date and a zone: `resets 3pm (America/New_York)`,
//!   `resets Apr 23 at 4pm (Europe/Berlin)`, `try again at 3:05 PM.`, `Try again at Dec 29th,
//!   2026 10:15 PM.`; without a zone it is read in the given local zone (codex formats it in
//!   the machine's zone), and without a date it is the next such time after `now`;
//! - a duration: `try again in 1h12m`, `resets in 2h`, `wait 90 seconds`, `Your quota will reset after 2h36m24s.`, `Please retry
//!   in 32.5s`, `retry after 60 seconds`;
//! - an RFC 3339 instant after the same words.
//!
//! The result is an absolute UTC instant after `now` and at most [`MAX_AHEAD`] later; any
//! other reading is no reset time (the schedule then pauses for its `rate_limit_pause`).

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use regex::Regex;

/// The longest pause a reset time may ask for: a monthly allowance resets within a month.
pub const MAX_AHEAD: Duration = Duration::days(32);

/// Statuses that mean "too many requests" or "overloaded".
const LIMIT_STATUSES: [u16; 3] = [429, 529, 503];

/// Wording of the agents' limit and overload messages, lowercase.
const LOOSE_WORDS: [&str; 27] = [
    "rate limit",
    "rate_limit",
    "ratelimit",
    "rate-limit",
    "too many requests",
    "usage limit",
    "session limit",
    "weekly limit",
    "spend limit",
    "hit your limit",
    "limit reached",
    "limit will reset",
    "quota exceeded",
    "exceeded your current quota",
    "exceeded your quota",
    "quota will reset",
    "exhausted your capacity",
    "exhausted your daily quota",
    "resource_exhausted",
    "resource has been exhausted",
    "quota exhausted",
    "overloaded",
    "at capacity",
    "no capacity",
    "capacity exceeded",
    "model_capacity_exhausted",
    "experiencing high demand",
];

/// Whole phrases for free text: words separated by spaces, so identifiers do not match.
static STRICT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(rate limit(ed|s)?|too many requests|usage limit|session limit|weekly limit|spend limit|hit your (\w+ )?limit|limit reached|quota (exceeded|exhausted)|exceeded your (current )?quota|exhausted your (capacity|daily quota)|resource has been exhausted|RESOURCE_EXHAUSTED|overloaded|at capacity|no capacity available)\b",
    )
    .expect("the limit phrase pattern compiles")
});

/// A status code in text: `status 429`, `error: 529`, `"code": 429`, `(429)`, `429 Too Many`.
static STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:\b(?:status(?:\s*code)?|error|code|http)["':\s]*(\d{3})\b|\((\d{3})\)|\b(\d{3})\s+(?:too many requests|overloaded|service unavailable))"#,
    )
    .expect("the status pattern compiles")
});

/// Whether an error the agent reported (with its status, if it gave one) is a limit.
pub fn is_limit_error(status: Option<u16>, text: &str) -> bool {
    if status.is_some_and(|s| LIMIT_STATUSES.contains(&s)) {
        return true;
    }
    let lower = text.to_lowercase();
    LOOSE_WORDS.iter().any(|w| lower.contains(w)) || status_in(text).is_some()
}

/// Whether a line of free text words a limit (whole phrases or a limit status).
pub fn is_limit_line(line: &str) -> bool {
    STRICT.is_match(line) || status_in(line).is_some()
}

/// A limit status named in the text.
fn status_in(text: &str) -> Option<u16> {
    STATUS.captures_iter(text).find_map(|caps| {
        let code: u16 = (1..=3).find_map(|i| caps.get(i))?.as_str().parse().ok()?;
        LIMIT_STATUSES.contains(&code).then_some(code)
    })
}

/// Words after which a reset time follows.
static KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(resets?|reset at|try again|retry|again at|available again|until|wait)\b")
        .expect("the keyword pattern compiles")
});

static EPOCH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\|\s*(\d{10}|\d{13})\b").expect("the epoch pattern compiles"));

static RFC3339: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[\s:·∙,\-–—]*(?:(?:at|on|after)\s+)?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(Z|UTC|[+-]\d{2}:?\d{2})?",
    )
    .expect("the RFC 3339 pattern compiles")
});

/// Longest first, so that `minutes` is not read as `m`; no word boundary after a unit, as
/// `1h12m` runs its parts together.
const UNIT: &str = r"(?:milliseconds?|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)";

static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^[\s:·∙,\-–—]*(?:(?:in|after|for)\s+)?((?:\d+(?:\.\d+)?\s*{UNIT}[\s,]*(?:and\s+)?)+)"
    ))
    .expect("the duration pattern compiles")
});

static DURATION_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)(\d+(?:\.\d+)?)\s*({UNIT})"))
        .expect("the duration part pattern compiles")
});

static CLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^[\s:·∙,\-–—]*(?:(?:at|on)\s+)?
        (?:(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s*(\d{4}))?(?:,|\s+at)?\s+)?
        (?:(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?\b|(\d{1,2}):(\d{2})\b)
        (?:\s*\(([A-Za-z_]+(?:/[A-Za-z0-9_+\-]+)*)\)|\s+(UTC|GMT)\b)?",
    )
    .expect("the clock pattern compiles")
});

/// When the limit worded in `text` ends, as an instant after `now`.
pub fn reset_at<Z: TimeZone>(text: &str, now: DateTime<Utc>, local: &Z) -> Option<DateTime<Utc>> {
    let within = |at: DateTime<Utc>| (at > now && at - now <= MAX_AHEAD).then_some(at);
    if let Some(caps) = EPOCH.captures(text) {
        let digits = caps.get(1)?.as_str();
        let value: i64 = digits.parse().ok()?;
        let at = if digits.len() == 13 {
            DateTime::from_timestamp_millis(value)
        } else {
            DateTime::from_timestamp(value, 0)
        };
        if let Some(at) = at.and_then(within) {
            return Some(at);
        }
    }
    for keyword in KEYWORD.find_iter(text) {
        let rest = &text[keyword.end()..];
        let window = match rest.char_indices().nth(120) {
            Some((end, _)) => &rest[..end],
            None => rest,
        };
        let found = instant(window, local)
            .or_else(|| duration(window).and_then(|d| now.checked_add_signed(d)))
            .or_else(|| clock(window, now, local));
        if let Some(at) = found.and_then(within) {
            return Some(at);
        }
    }
    None
}

fn instant<Z: TimeZone>(window: &str, local: &Z) -> Option<DateTime<Utc>> {
    let caps = RFC3339.captures(window)?;
    let text = caps.get(1)?.as_str().replace(' ', "T");
    let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M"))
        .ok()?;
    match caps.get(2).map(|m| m.as_str()) {
        None => in_zone(local, naive),
        Some("Z" | "UTC") => Some(naive.and_utc()),
        Some(offset) => {
            let offset = offset.replace(':', "");
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let hours: i64 = offset.get(1..3)?.parse().ok()?;
            let minutes: i64 = offset.get(3..5)?.parse().ok()?;
            let shift = Duration::minutes(sign * (hours * 60 + minutes));
            Some(naive.and_utc() - shift)
        }
    }
}

fn duration(window: &str) -> Option<Duration> {
    let caps = DURATION.captures(window)?;
    let mut total_ms: f64 = 0.0;
    for part in DURATION_PART.captures_iter(caps.get(1)?.as_str()) {
        let amount: f64 = part.get(1)?.as_str().parse().ok()?;
        let unit = part.get(2)?.as_str().to_ascii_lowercase();
        let ms = match unit.as_str() {
            "ms" | "millisecond" | "milliseconds" => 1.0,
            u if u.starts_with('s') => 1_000.0,
            u if u.starts_with('m') => 60_000.0,
            u if u.starts_with('h') => 3_600_000.0,
            _ => 86_400_000.0,
        };
        total_ms += amount * ms;
    }
    if !(total_ms.is_finite() && total_ms > 0.0 && total_ms < 1e12) {
        return None;
    }
    Some(Duration::milliseconds(total_ms.round() as i64))
}

fn clock<Z: TimeZone>(window: &str, now: DateTime<Utc>, local: &Z) -> Option<DateTime<Utc>> {
    let caps = CLOCK.captures(window)?;
    let (hour, minute) = if let Some(h) = caps.get(4) {
        let h: u32 = h.as_str().parse().ok()?;
        let m: u32 = caps.get(5).map_or(Some(0), |m| m.as_str().parse().ok())?;
        if !(1..=12).contains(&h) {
            return None;
        }
        let pm = caps.get(6)?.as_str().eq_ignore_ascii_case("p");
        ((h % 12) + if pm { 12 } else { 0 }, m)
    } else {
        (
            caps.get(7)?.as_str().parse().ok()?,
            caps.get(8)?.as_str().parse().ok()?,
        )
    };
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    let zone: Option<crate::zone::Zone> = match (caps.get(9), caps.get(10)) {
        (Some(name), _) => crate::zone::Zone::parse(name.as_str()).ok(),
        (None, Some(_)) => Some(crate::zone::Zone::utc()),
        (None, None) => None,
    };
    match zone {
        Some(tz) => resolve(&tz, caps, time, now),
        None => resolve(local, caps, time, now),
    }
}

/// The instant of a wall-clock `time` in `zone`: on the date given, else the next one after
/// `now`; a date without a year is this year's, or next year's once a day past.
fn resolve<Z: TimeZone>(
    zone: &Z,
    caps: regex::Captures<'_>,
    time: NaiveTime,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let today = now.with_timezone(zone).date_naive();
    let Some(month) = caps.get(1) else {
        let at = in_zone(zone, today.and_time(time))?;
        return if at > now {
            Some(at)
        } else {
            in_zone(zone, today.succ_opt()?.and_time(time))
        };
    };
    let month = match &month.as_str().to_ascii_lowercase()[..3] {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        _ => 12,
    };
    let day: u32 = caps.get(2)?.as_str().parse().ok()?;
    if let Some(year) = caps.get(3) {
        let date = NaiveDate::from_ymd_opt(year.as_str().parse().ok()?, month, day)?;
        return in_zone(zone, date.and_time(time));
    }
    let at = in_zone(
        zone,
        NaiveDate::from_ymd_opt(today.year(), month, day)?.and_time(time),
    )?;
    if now - at > Duration::days(1) {
        in_zone(
            zone,
            NaiveDate::from_ymd_opt(today.year() + 1, month, day)?.and_time(time),
        )
    } else {
        Some(at)
    }
}

/// A local time's instant; in a spring-forward gap, the first instant after it.
fn in_zone<Z: TimeZone>(zone: &Z, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// 2026-12-02 10:00 UTC, 05:00 in New York.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
    }

    fn at(text: &str) -> Option<DateTime<Utc>> {
        reset_at(
            text,
            now(),
            &crate::zone::Zone::parse("Europe/Berlin").unwrap(),
        )
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn wording_and_statuses() {
        for text in [
            "You've hit your session limit · resets 3pm (America/New_York)",
            "Claude AI usage limit reached|1762952400",
            "API Error: Repeated 529 Overloaded errors",
            "exceeded retry limit, last status: 429 Too Many Requests",
            "Quota exceeded. Check your plan and billing details.",
            "[{\"error\": {\"code\": 429, \"status\": \"RESOURCE_EXHAUSTED\"}}]",
            "litellm.RateLimitError: AnthropicException - {\"type\":\"rate_limit_error\"}",
            "Selected model is at capacity. Please try a different model.",
            "API Error: Request rejected (429) · Rate limited",
            "503 Service Unavailable",
        ] {
            assert!(is_limit_error(None, text), "{text}");
        }
        assert!(is_limit_error(Some(429), "anything"));
        assert!(!is_limit_error(Some(400), "Bad Request"));
        assert!(!is_limit_error(None, "Not logged in · Please run /login"));
        assert!(!is_limit_error(None, "line 429 of the file"));
    }

    #[test]
    fn free_text_needs_whole_phrases() {
        assert!(is_limit_line(
            "You've hit your limit · resets 1pm (Europe/Lisbon)"
        ));
        assert!(is_limit_line(
            "Attempt 1 failed with status 429. Retrying with backoff..."
        ));
        assert!(!is_limit_line(
            "test agent::limit::tests::rate_limit_pause ... ok"
        ));
        assert!(!is_limit_line("    tests::overloaded_handler"));
        assert!(!is_limit_line("Finished in 429 ms"));
    }

    #[test]
    fn epoch_seconds_and_millis() {
        let text = "Claude AI usage limit reached|1796212800";
        assert_eq!(at(text), Some(utc(2026, 12, 2, 12, 0, 0)));
        assert_eq!(
            at("limit reached|1796212800000"),
            Some(utc(2026, 12, 2, 12, 0, 0))
        );
        // In the past: nothing to wait for.
        assert_eq!(at("Claude AI usage limit reached|1762952400"), None);
    }

    #[test]
    fn wall_clock_with_zone() {
        // 3pm in New York on 2 December is 20:00 UTC.
        assert_eq!(
            at("You've hit your session limit · resets 3pm (America/New_York)"),
            Some(utc(2026, 12, 2, 20, 0, 0))
        );
        assert_eq!(
            at("You've hit your limit · resets 3:30am (Europe/Moscow)"),
            Some(utc(2026, 12, 3, 0, 30, 0)),
            "03:30 Moscow time has passed today, so tomorrow's"
        );
        assert_eq!(
            at("Claude usage limit reached. Your limit will reset at 9am (America/Chicago)."),
            Some(utc(2026, 12, 2, 15, 0, 0))
        );
        assert_eq!(
            at("You've hit your limit · resets Dec 23 at 4pm (America/Recife)"),
            Some(utc(2026, 12, 23, 19, 0, 0))
        );
        assert_eq!(
            at("limit reached, resets 18:00 UTC"),
            Some(utc(2026, 12, 2, 18, 0, 0))
        );
    }

    #[test]
    fn wall_clock_without_zone_is_local() {
        // Berlin is UTC+1 in December.
        assert_eq!(
            at("You've hit your usage limit. Try again at 3:05 PM."),
            Some(utc(2026, 12, 2, 14, 5, 0))
        );
        assert_eq!(
            at("5-hour limit reached ∙ resets 9am"),
            Some(utc(2026, 12, 3, 8, 0, 0)),
            "9am Berlin has passed (it is 11:00 there)"
        );
        assert_eq!(
            at("You've hit your usage limit. Try again at Dec 29th, 2026 10:15 PM."),
            Some(utc(2026, 12, 29, 21, 15, 0))
        );
        assert_eq!(
            at("try again at Jan 3rd 9:00 AM"),
            Some(utc(2027, 1, 3, 8, 0, 0)),
            "a date without a year that has passed is next year's"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            at("try again in 1h12m"),
            Some(now() + Duration::minutes(72))
        );
        assert_eq!(
            at(
                "You have exhausted your capacity on this model. Your quota will reset after 2h36m24s."
            ),
            Some(now() + Duration::seconds(2 * 3600 + 36 * 60 + 24))
        );
        assert_eq!(
            at("Please retry in 32.5s"),
            Some(now() + Duration::milliseconds(32_500))
        );
        assert_eq!(
            at("retry after 30 seconds"),
            Some(now() + Duration::seconds(30))
        );
        assert_eq!(
            at("try again in 1 hour and 5 minutes"),
            Some(now() + Duration::minutes(65))
        );
        assert_eq!(
            at("Suggested retry after 60s."),
            Some(now() + Duration::seconds(60))
        );
    }

    #[test]
    fn durations_without_a_preposition() {
        assert_eq!(
            at("please wait 90 seconds"),
            Some(now() + Duration::seconds(90))
        );
        assert_eq!(
            at("You've hit your fast limit · resets in 2h"),
            Some(now() + Duration::hours(2))
        );
    }

    #[test]
    fn instants() {
        assert_eq!(
            at("rate limited until 2026-12-02T13:00:00Z"),
            Some(utc(2026, 12, 2, 13, 0, 0))
        );
        assert_eq!(
            at("resets at 2026-12-02 15:00:00+02:00"),
            Some(utc(2026, 12, 2, 13, 0, 0))
        );
    }

    #[test]
    fn no_time_named() {
        assert_eq!(at("Try again in a moment."), None);
        assert_eq!(at("Try again later or check your quotas."), None);
        assert_eq!(
            at("Retrying in 0.2 seconds..."),
            None,
            "aider's own backoff"
        );
        assert_eq!(at("resets 13pm"), None);
        assert_eq!(at("try again in 400 days"), None, "beyond a month ahead");
    }
}
