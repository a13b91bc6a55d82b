//! Relay latency: the time from a packet's arrival on a source socket to its
//! hand-off toward a viewer, sampled (one packet in [`SAMPLE_EVERY`]) into a
//! shared histogram of 50 µs buckets. Recording is a few atomic adds.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One packet in this many is timed.
pub const SAMPLE_EVERY: u64 = 32;
const BUCKET_US: u64 = 50;
/// 50 µs buckets up to 20 ms; one more for everything above.
const BUCKETS: usize = 401;

pub struct Histogram {
    buckets: Vec<AtomicU64>,
    /// The sum of every sample, in µs (for a Prometheus histogram's `_sum`).
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The upper bounds, in seconds, of the buckets `/metrics` exposes: each a
/// multiple of the 50 µs recording bucket, so the counts are exact.
pub const EXPOSED_BOUNDS_S: [f64; 9] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02,
];

/// Cumulative counts at [`EXPOSED_BOUNDS_S`], the total and the sum, as a
/// Prometheus histogram wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cumulative {
    pub bounds_s: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_s: f64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({:?})", self.summary())
    }
}

/// Percentiles of what was recorded, in milliseconds (bucket upper bounds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = (us / BUCKET_US).min(BUCKETS as u64 - 1) as usize;
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts at or below each exposed bound (a sample in recording
    /// bucket `i` is below `(i + 1) * 50 µs`; the last bucket, everything
    /// from 20 ms up, counts only in the total).
    pub fn cumulative(&self) -> Cumulative {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let bounds_s = EXPOSED_BOUNDS_S
            .iter()
            .map(|&b| {
                let upto = ((b * 1e6).round() as u64 / BUCKET_US) as usize;
                (b, counts[..upto.min(BUCKETS)].iter().sum())
            })
            .collect();
        Cumulative {
            bounds_s,
            count: counts.iter().sum(),
            sum_s: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let samples: u64 = counts.iter().sum();
        let upper_ms = |i: usize| ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
        let at = |q: f64| -> Option<f64> {
            let want = ((samples as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts.iter().enumerate().find_map(|(i, c)| {
                seen += c;
                (seen >= want).then(|| upper_ms(i))
            })
        };
        if samples == 0 {
            return Summary::default();
        }
        let max = counts.iter().rposition(|c| *c > 0).map(upper_ms);
        Summary {
            samples,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets() {
        let h = Histogram::default();
        assert_eq!(h.summary(), Summary::default());
        for _ in 0..98 {
            h.record(Duration::from_micros(120)); // bucket 100-150 µs
        }
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(1)); // beyond 20 ms: the last bucket
        let c = h.cumulative();
        assert_eq!(c.count, 100);
        assert_eq!(c.bounds_s[0], (0.0001, 0), "120 µs is above 100 µs");
        assert_eq!(c.bounds_s[1], (0.00025, 98));
        assert_eq!(c.bounds_s[5], (0.005, 99), "3 ms is at or below 5 ms");
        assert_eq!(c.bounds_s[8], (0.02, 99), "1 s only in the total");
        assert!((c.sum_s - (98.0 * 120e-6 + 3e-3 + 1.0)).abs() < 1e-9);
        let s = h.summary();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_ms, Some(0.15));
        assert_eq!(s.p99_ms, Some(3.05));
        assert_eq!(s.max_ms, Some(20.05));
    }
}
