//! Small statistics over samples: medians and percentiles by nearest rank, and the
//! formatting every table cell uses. Samples are plain `f64`s in the unit the caller
//! chose (milliseconds for durations).

use std::time::Duration;

/// Sorted samples with nearest-rank percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    pub fn new(mut values: Vec<f64>) -> Samples {
        values.sort_by(f64::total_cmp);
        Samples { sorted: values }
    }

    pub fn from_durations_ms(values: &[Duration]) -> Samples {
        Samples::new(values.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile (`p` in 0..=100); NaN without samples.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(f64::NAN)
    }
}

/// Milliseconds with a precision that suits the size.
pub fn ms(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else if value >= 0.1 {
        format!("{value:.2} ms")
    } else {
        format!("{:.1} µs", value * 1e3)
    }
}

/// A rate, e.g. appends per second.
pub fn per_s(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1} k/s", value / 1e3)
    } else {
        format!("{value:.0} /s")
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `ours / baseline`, guarded against a zero or missing baseline.
pub fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && ours.is_finite() && baseline.is_finite()).then(|| ours / baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.median(), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.max(), 100.0);
        assert_eq!(Samples::new(vec![7.0]).percentile(99.0), 7.0);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn ratio_needs_a_positive_baseline() {
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
