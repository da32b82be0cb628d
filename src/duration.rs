//! Human durations in config files: `90s`, `20m`, `1h`, `1h 30m`.
//!
//! Parsed with `humantime` at deserialize time, so a bad value is reported by serde with the
//! position of the value in the file.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration written as text in schedules.json or a mode's front matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `20m`, `1h`, `1h 30m`, `500ms`.
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|err| {
                format!(
                    "bad duration {text:?}: {err} (expected a number with a unit: 90s, 20m, 1h)"
                )
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"20m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Formats a duration for people: `12.3s`, `850ms`, `4m 05s`.
pub fn short(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        let secs = duration.as_secs();
        if secs < 3_600 {
            format!("{}m {:02}s", secs / 60, secs % 60)
        } else {
            format!("{}h {:02}m", secs / 3_600, (secs % 3_600) / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            HumanDuration::parse("90s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            HumanDuration::parse("20m").unwrap().0,
            Duration::from_secs(1_200)
        );
        assert_eq!(
            HumanDuration::parse("1h").unwrap().0,
            Duration::from_secs(3_600)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().0,
            Duration::from_secs(5_400)
        );
    }

    #[test]
    fn rejects_numbers_without_units() {
        let err = HumanDuration::parse("90").unwrap_err();
        assert!(err.contains("expected a number with a unit"), "{err}");
        assert!(HumanDuration::parse("soon").is_err());
    }

    #[test]
    fn short_forms() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_millis(12_300)), "12.3s");
        assert_eq!(short(Duration::from_secs(245)), "4m 05s");
    }
}
