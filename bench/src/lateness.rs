//! Fire lateness, shared by both sides of figures 1 and 2: what a fire is, and how a list of
//! fires over a window becomes lateness samples, missed and doubled counts.
//!
//! Lateness of a fire is measured against the whole second it was meant for. Per job and per
//! second of the window, no fire is a *missed* fire and every fire beyond the first is
//! *doubled*. Seconds at the edges of the window are left out, so start-up and shutdown do
//! not count.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use crate::stats::Samples;

/// One fire: which job, the second it was meant for (unix seconds), how late it began.
#[derive(Debug, Clone, Copy)]
pub struct Fire {
    pub job: usize,
    pub second: i64,
    pub lateness_ms: f64,
    /// Recorded as `skipped` (overlap): the instant was handled, nothing started.
    pub skipped: bool,
}

/// Fires of `jobs` jobs over the whole seconds of `window`.
#[derive(Debug, Clone)]
pub struct FireStats {
    /// Of the fires that started (skipped ones have no start).
    pub lateness: Samples,
    pub missed: usize,
    pub doubled: usize,
    pub skipped: usize,
    pub expected: usize,
}

pub fn analyse(fires: &[Fire], jobs: usize, window: Range<i64>) -> FireStats {
    let mut counts: HashMap<(usize, i64), usize> = HashMap::new();
    let mut lateness = Vec::new();
    let mut skipped = 0;
    for fire in fires.iter().filter(|f| window.contains(&f.second)) {
        *counts.entry((fire.job, fire.second)).or_default() += 1;
        if fire.skipped {
            skipped += 1;
        } else {
            lateness.push(fire.lateness_ms);
        }
    }
    let seconds = (window.end - window.start).max(0) as usize;
    let mut missed = 0;
    let mut doubled = 0;
    for job in 0..jobs {
        for second in window.clone() {
            match counts.get(&(job, second)).copied().unwrap_or(0) {
                0 => missed += 1,
                n => doubled += n - 1,
            }
        }
    }
    FireStats {
        lateness: Samples::new(lateness),
        missed,
        doubled,
        skipped,
        expected: jobs * seconds,
    }
}

/// A fire seen at `now` by a callback: meant for the second `now` falls in.
pub fn fire_at(job: usize, now: DateTime<Utc>) -> Fire {
    Fire {
        job,
        second: now.timestamp(),
        lateness_ms: f64::from(now.nanosecond() % 1_000_000_000) / 1e6,
        skipped: false,
    }
}

/// Sleeps until the wall clock reaches `unix_second` (plus `extra`).
pub fn sleep_until_second(unix_second: i64, extra: Duration) {
    let now = Utc::now();
    let target_ms = unix_second * 1000 - now.timestamp_millis();
    if target_ms > 0 {
        std::thread::sleep(Duration::from_millis(target_ms as u64));
    }
    std::thread::sleep(extra);
}

/// The measurement window for a run that is ready now: from the next whole second at
/// least 300 ms away, for `secs` whole seconds.
pub fn window_from_now(secs: u64) -> Range<i64> {
    let now = Utc::now();
    let start = now.timestamp()
        + if now.timestamp_subsec_millis() < 700 {
            1
        } else {
            2
        };
    start..start + secs as i64
}

/// A minute of the hour that is not within the next half hour, so hourly jobs never
/// come due during the measurement.
pub fn far_minute() -> u32 {
    (Utc::now().minute() + 30) % 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(job: usize, second: i64) -> Fire {
        Fire {
            job,
            second,
            lateness_ms: 1.0,
            skipped: false,
        }
    }

    #[test]
    fn missed_and_doubled_are_counted_per_job_and_second() {
        // Job 0 fires in 10 and twice in 11; job 1 only in 11; 9 and 12 are outside.
        let fires = [
            fire(0, 9),
            fire(0, 10),
            fire(0, 11),
            fire(0, 11),
            fire(1, 11),
            fire(1, 12),
        ];
        let stats = analyse(&fires, 2, 10..12);
        assert_eq!(stats.expected, 4);
        assert_eq!(stats.missed, 1);
        assert_eq!(stats.doubled, 1);
        assert_eq!(stats.lateness.len(), 4);
        let skip = Fire {
            skipped: true,
            ..fire(1, 10)
        };
        let stats = analyse(&[fire(0, 10), skip], 2, 10..11);
        assert_eq!(
            (stats.missed, stats.skipped, stats.lateness.len()),
            (0, 1, 1)
        );
    }

    #[test]
    fn lateness_is_measured_from_the_whole_second() {
        let now = DateTime::from_timestamp(100, 3_500_000).unwrap();
        let f = fire_at(7, now);
        assert_eq!((f.job, f.second), (7, 100));
        assert!((f.lateness_ms - 3.5).abs() < 1e-9);
    }
}
