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
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
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
        let i = (d.as_micros() as u64 / BUCKET_US).min(BUCKETS as u64 - 1) as usize;
        self.buckets[i].fetch_add(1, Relaxed);
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
        let s = h.summary();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_ms, Some(0.15));
        assert_eq!(s.p99_ms, Some(3.05));
        assert_eq!(s.max_ms, Some(20.05));
    }
}
