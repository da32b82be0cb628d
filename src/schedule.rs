//! One entry of schedules.json: what fires, when, and through which modes.
//!
//! `ScheduleFields` is the text as written (every field optional, unknown fields rejected);
//! `Schedule` is the resolved entry after the file's `defaults` and the built-in defaults
//! are applied. Judging what the types cannot (duplicate ids, unknown modes) is config's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::zone::Zone;
use serde::{Deserialize, Deserializer, de};

use crate::agent::Usd;
use crate::cron::Cron;
use crate::duration::HumanDuration;

/// The pipeline every schedule runs unless it names its own.
pub const DEFAULT_MODES: [&str; 5] = [
    "implementation",
    "validation",
    "quality",
    "integration",
    "planning",
];
/// Every 10 minutes, at second 0.
pub const DEFAULT_CRON: &str = "0 */10 * * * *";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3_600);
pub const DEFAULT_MAX_FAILURES: u32 = 3;
/// How long a schedule pauses after its agents were rate limited without a reset time.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(15 * 60);

/// What a fire does when the schedule's previous cycle still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Record a `skipped` cycle row and wait for the next instant.
    Skip,
    /// Run once after the running cycle ends (further fires meanwhile collapse into that one).
    Queue,
    /// Run alongside.
    Parallel,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Parallel => "parallel",
        })
    }
}

/// A cron expression, checked while the file is read so the error carries its position.
#[derive(Debug, Clone)]
pub struct CronField(pub Cron);

impl<'de> Deserialize<'de> for CronField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cron::parse(&text).map(CronField).map_err(de::Error::custom)
    }
}

/// An IANA time zone name, checked while the file is read.
#[derive(Debug, Clone)]
pub struct ZoneField(pub Zone);

impl<'de> Deserialize<'de> for ZoneField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::cron::parse_timezone(&text)
            .map(ZoneField)
            .map_err(de::Error::custom)
    }
}

/// A schedule entry, or the `defaults` object, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFields {
    pub id: Option<String>,
    pub task: Option<String>,
    pub cron: Option<CronField>,
    pub timezone: Option<ZoneField>,
    pub modes: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub timeout: Option<HumanDuration>,
    pub overlap: Option<Overlap>,
    pub max_failures: Option<u32>,
    pub on_escalate: Option<Vec<String>>,
    pub catch_up: Option<bool>,
    pub jitter: Option<HumanDuration>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<PathBuf>,
    pub rate_limit_pause: Option<HumanDuration>,
    pub max_cost_usd_per_day: Option<Usd>,
}

/// A resolved schedule: every field has its value.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub task: String,
    pub cron: Cron,
    pub timezone: Zone,
    pub modes: Vec<String>,
    pub enabled: bool,
    /// Limit of each mode run (a mode's own, smaller limit wins).
    pub timeout: Duration,
    pub overlap: Overlap,
    pub max_failures: u32,
    pub on_escalate: Option<Vec<String>>,
    pub catch_up: bool,
    pub jitter: Duration,
    pub env: BTreeMap<String, String>,
    /// Working directory of the modes; relative paths are resolved against the instance.
    pub cwd: PathBuf,
    /// Pause after a rate limit whose end the agent did not say.
    pub rate_limit_pause: Duration,
    /// Fires are skipped once the day's cost reaches this (in the schedule's time zone).
    pub max_cost_usd_per_day: Option<f64>,
    /// The entry and the defaults as canonical JSON: equal exactly when the entry's effect is
    /// equal. A reload reschedules a schedule whose fingerprint changed, and an escalation
    /// lasts until it does.
    pub fingerprint: String,
}

impl Schedule {
    /// Applies `defaults` (from the file) and then the built-in defaults to `fields`.
    /// `id` and `task` must be present; the caller has checked that.
    pub fn resolve(
        fields: ScheduleFields,
        defaults: &ScheduleFields,
        file_timezone: Zone,
        instance: &std::path::Path,
    ) -> Schedule {
        let d = defaults.clone();
        let cron = fields
            .cron
            .or(d.cron)
            .map(|c| c.0)
            .unwrap_or_else(|| Cron::parse(DEFAULT_CRON).expect("the built-in cron parses"));
        let cwd = fields.cwd.or(d.cwd).map_or_else(
            || instance.to_path_buf(),
            |p| if p.is_absolute() { p } else { instance.join(p) },
        );
        let mut env = d.env.unwrap_or_default();
        env.extend(fields.env.unwrap_or_default());
        Schedule {
            id: fields.id.unwrap_or_default(),
            task: fields.task.unwrap_or_default(),
            cron,
            timezone: fields
                .timezone
                .or(d.timezone)
                .map_or(file_timezone, |z| z.0),
            modes: fields
                .modes
                .or(d.modes)
                .unwrap_or_else(|| DEFAULT_MODES.iter().map(|m| m.to_string()).collect()),
            enabled: fields.enabled.or(d.enabled).unwrap_or(true),
            timeout: fields
                .timeout
                .or(d.timeout)
                .map_or(DEFAULT_TIMEOUT, |t| t.0),
            overlap: fields.overlap.or(d.overlap).unwrap_or(Overlap::Skip),
            max_failures: fields
                .max_failures
                .or(d.max_failures)
                .unwrap_or(DEFAULT_MAX_FAILURES),
            on_escalate: fields.on_escalate.or(d.on_escalate),
            catch_up: fields.catch_up.or(d.catch_up).unwrap_or(false),
            jitter: fields.jitter.or(d.jitter).map_or(Duration::ZERO, |j| j.0),
            env,
            cwd,
            rate_limit_pause: fields
                .rate_limit_pause
                .or(d.rate_limit_pause)
                .map_or(DEFAULT_RATE_LIMIT_PAUSE, |p| p.0),
            max_cost_usd_per_day: fields
                .max_cost_usd_per_day
                .or(d.max_cost_usd_per_day)
                .map(|u| u.0),
            fingerprint: String::new(),
        }
    }
}

/// Two schedules are equal when their id and their effect (the fingerprint) are.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.fingerprint == other.fingerprint
    }
}

/// Ids and mode slugs: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
pub fn is_slug(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && text.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("main-loop"));
        assert!(is_slug("a1_b"));
        assert!(!is_slug("Main"));
        assert!(!is_slug("-x"));
        assert!(!is_slug(""));
        assert!(!is_slug("a b"));
        assert!(!is_slug("../x"));
    }

    #[test]
    fn schedule_fields_win_over_defaults() {
        let defaults: ScheduleFields = serde_json::from_str(
            r#"{"timeout": "20m", "max_failures": 5, "env": {"A": "1", "B": "1"}}"#,
        )
        .unwrap();
        let fields: ScheduleFields = serde_json::from_str(
            r#"{"id": "x", "task": "t", "timeout": "90s", "env": {"B": "2"}}"#,
        )
        .unwrap();
        let s = Schedule::resolve(fields, &defaults, Zone::utc(), std::path::Path::new("inst"));
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert_eq!(s.max_failures, 5);
        assert_eq!(s.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(s.env.get("B").map(String::as_str), Some("2"));
        assert_eq!(s.modes.len(), 5);
        assert_eq!(s.overlap, Overlap::Skip);
        assert_eq!(s.cwd, std::path::Path::new("inst"));
        assert_eq!(s.rate_limit_pause, DEFAULT_RATE_LIMIT_PAUSE);
        assert_eq!(s.max_cost_usd_per_day, None);
        let defaults: ScheduleFields =
            serde_json::from_str(r#"{"rate_limit_pause": "5m", "max_cost_usd_per_day": 2}"#)
                .unwrap();
        let fields: ScheduleFields =
            serde_json::from_str(r#"{"id": "x", "task": "t", "max_cost_usd_per_day": 0.5}"#)
                .unwrap();
        let s = Schedule::resolve(fields, &defaults, Zone::utc(), std::path::Path::new("inst"));
        assert_eq!(s.rate_limit_pause, Duration::from_secs(300));
        assert_eq!(s.max_cost_usd_per_day, Some(0.5));
    }
}
