//! Relay latency: the time from a packet's arrival on a source socket to the
//! kernel taking its datagram toward a viewer (`sendmmsg`), sampled (one
//! packet in [`SAMPLE_EVERY`]) into a shared histogram: 10 µs buckets below
//! 1 ms, 50 µs buckets up to 20 ms, 1 ms buckets up to 200 ms. Recording is
//! a few atomic adds.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One packet in this many is timed.
pub const SAMPLE_EVERY: u64 = 32;
/// The tiers of buckets: (up to this many µs, buckets this wide). One more
/// bucket holds everything above the last.
const TIERS: [(u64, u64); 3] = [(1000, 10), (20_000, 50), (200_000, 1000)];
const fn tier_buckets(i: usize) -> usize {
    let from = if i == 0 { 0 } else { TIERS[i - 1].0 };
    ((TIERS[i].0 - from) / TIERS[i].1) as usize
}
const BUCKETS: usize = tier_buckets(0) + tier_buckets(1) + tier_buckets(2) + 1;
/// The top of the last tier: samples above count only in the total.
const TOP_US: u64 = TIERS[TIERS.len() - 1].0;

/// The bucket a sample of `us` falls in.
fn bucket_of(us: u64) -> usize {
    let mut first = 0;
    let mut from = 0;
    for (i, (to, width)) in TIERS.iter().enumerate() {
        if us < *to {
            return first + ((us - from) / width) as usize;
        }
        first += tier_buckets(i);
        from = *to;
    }
    BUCKETS - 1
}

/// The upper bound of bucket `i`, in µs (the last, open-ended one is
/// reported one step of the last tier above the top).
fn upper_us(i: usize) -> u64 {
    let mut first = 0;
    let mut from = 0;
    for (t, (to, width)) in TIERS.iter().enumerate() {
        if i < first + tier_buckets(t) {
            return from + (i - first + 1) as u64 * width;
        }
        first += tier_buckets(t);
        from = *to;
    }
    TOP_US + TIERS[TIERS.len() - 1].1
}

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
/// bound of the recording buckets, so the counts are exact.
pub const EXPOSED_BOUNDS_S: [f64; 16] = [
    0.00002, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.015,
    0.02, 0.05, 0.1, 0.2,
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
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts at or below each exposed bound (a sample in recording
    /// bucket `i` is below its upper bound; the last bucket, everything from
    /// 200 ms up, counts only in the total).
    pub fn cumulative(&self) -> Cumulative {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let bounds_s = EXPOSED_BOUNDS_S
            .iter()
            .map(|&b| {
                let bound_us = (b * 1e6).round() as u64;
                let within = (0..BUCKETS - 1).take_while(|&i| upper_us(i) <= bound_us);
                (b, within.map(|i| counts[i]).sum())
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
        let upper_ms = |i: usize| upper_us(i) as f64 / 1000.0;
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
            h.record(Duration::from_micros(120)); // bucket 120-130 µs
        }
        h.record(Duration::from_millis(3)); // bucket 3000-3050 µs
        h.record(Duration::from_secs(1)); // beyond 200 ms: the last bucket
        let c = h.cumulative();
        assert_eq!(c.count, 100);
        assert_eq!(c.bounds_s[2], (0.0001, 0), "120 µs is above 100 µs");
        assert_eq!(c.bounds_s[3], (0.0002, 98));
        assert_eq!(c.bounds_s[9], (0.005, 99), "3 ms is at or below 5 ms");
        assert_eq!(c.bounds_s[15], (0.2, 99), "1 s only in the total");
        assert!((c.sum_s - (98.0 * 120e-6 + 3e-3 + 1.0)).abs() < 1e-9);
        let s = h.summary();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_ms, Some(0.13));
        assert_eq!(s.p99_ms, Some(3.05));
        assert_eq!(s.max_ms, Some(201.0));
    }

    #[test]
    fn below_a_millisecond_buckets_are_ten_microseconds() {
        let h = Histogram::default();
        for us in [5, 15, 15, 25, 999, 1000, 1049, 1050, 19_999] {
            h.record(Duration::from_micros(us));
        }
        let ups: Vec<u64> = [
            5u64, 15, 25, 999, 1000, 1049, 1050, 19_999, 20_000, 20_999, 199_999,
        ]
        .iter()
        .map(|&us| upper_us(bucket_of(us)))
        .collect();
        assert_eq!(
            ups,
            [
                10, 20, 30, 1000, 1050, 1050, 1100, 20_000, 21_000, 21_000, 200_000
            ]
        );
        assert_eq!(bucket_of(200_000), BUCKETS - 1);
        let c = h.cumulative();
        assert_eq!(c.bounds_s[0], (0.00002, 3), "5, 15 and 15 µs");
        assert_eq!(c.bounds_s[1], (0.00005, 4));
        assert_eq!(c.bounds_s[7], (0.001, 5), "999 µs, not 1000");
        assert_eq!(c.bounds_s[12], (0.02, 9));
        assert_eq!(h.summary().p50_ms, Some(1.0), "the 5th of 9: 999 µs");
        // Every exposed bound is a bucket bound: its count is exact.
        for b in EXPOSED_BOUNDS_S {
            let us = (b * 1e6).round() as u64;
            assert!(
                (0..BUCKETS).any(|i| upper_us(i) == us),
                "{b} s is no bucket bound"
            );
        }
    }
}
