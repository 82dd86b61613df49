//! Latencies, recorded in an HdrHistogram: memory bounded however many calls
//! a measurement makes, and rounds and workers merge by adding.

use hdrhistogram::Histogram;

use crate::BoxError;

/// Latencies in nanoseconds, to three significant digits (the percentiles
/// read back are at most 0.1 % high).
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // Auto-resizing, so that no latency is out of range.
        Latencies(Histogram::new(3).expect("3 significant digits are within 0..=5"))
    }
}

impl Latencies {
    pub fn record(&mut self, nanos: u64) {
        // `record` grows the histogram; `saturating_record` would clamp to
        // its current range (2 ns at first) instead.
        if self.0.record(nanos).is_err() {
            self.0.saturating_record(nanos);
        }
    }

    pub fn merge(&mut self, other: &Latencies) -> Result<(), BoxError> {
        self.0
            .add(&other.0)
            .map_err(|e| format!("cannot pool latencies: {e:?}").into())
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The nearest-rank percentile, in microseconds; NaN when empty.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(quantile) as f64 / 1e3
    }

    /// The largest, in microseconds; NaN when empty.
    pub fn max_us(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.max() as f64 / 1e3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(micros: impl IntoIterator<Item = u64>) -> Latencies {
        let mut latencies = Latencies::default();
        for us in micros {
            latencies.record(us * 1000);
        }
        latencies
    }

    fn close(actual: f64, expected: f64) -> bool {
        actual >= expected && actual <= expected * 1.001
    }

    #[test]
    fn nearest_rank_percentiles_within_a_tenth_of_a_percent() {
        let latencies = of(1..=1000);
        assert_eq!(latencies.count(), 1000);
        assert!(close(latencies.quantile_us(0.50), 500.0));
        assert!(close(latencies.quantile_us(0.99), 990.0));
        assert!(close(latencies.max_us(), 1000.0));
        // Nearest rank: the 99th of 100 values is p99, not an interpolation.
        let hundred = of(1..=100);
        assert!(close(hundred.quantile_us(0.99), 99.0));
        assert!(close(of([7]).quantile_us(0.5), 7.0));
    }

    #[test]
    fn merged_rounds_are_one_population() {
        let mut pooled = of(1..=500);
        pooled.merge(&of(501..=1000)).expect("merges");
        assert_eq!(pooled.count(), 1000);
        assert!(close(pooled.quantile_us(0.50), 500.0));
    }

    #[test]
    fn empty_is_nan() {
        let empty = Latencies::default();
        assert_eq!(empty.count(), 0);
        assert!(empty.quantile_us(0.5).is_nan());
        assert!(empty.max_us().is_nan());
    }
}
