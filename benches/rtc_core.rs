//! Step zero of the media engine: what one delivered packet costs the `rtc`
//! sans-IO core, without sockets.
//!
//! Pairs of cores are connected in memory (ICE and DTLS done by handing each
//! one's datagrams to the other), then each iteration writes one RTP packet
//! with a 1,100-byte H.264 payload on a sender (round-robin over the pairs)
//! and drains that sender's `poll_write`: the protected datagram that would
//! go to the socket. The sender is set up as ffwhep's viewers are: H.264 and
//! Opus, a send-only track with its own SSRC; with and without the RTCP
//! report interceptors.
//!
//! Run: `cargo bench --bench rtc_core` (criterion; release build).

#[path = "support/pairs.rs"]
mod pairs;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pairs::{PAYLOAD_BYTES, Pair};
use rtc::sansio::Protocol;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn per_packet(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x41u8; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("write_rtp+poll_write");
    group.throughput(Throughput::Elements(1));
    for reports in [true, false] {
        for n in [1u16, 10, 100, 300] {
            let mut pairs: Vec<Pair> = (0..n).map(|i| Pair::connect(i, reports)).collect();
            // The receivers are not read in the loop: keep them from
            // growing by draining them once here.
            for p in &mut pairs {
                while p.receiver.pc.poll_write().is_some() {}
            }
            let label = if reports {
                "reports"
            } else {
                "no_interceptors"
            };
            let count = pairs.len();
            let mut next = 0usize;
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    let now = Instant::now();
                    let p = &mut pairs[next % count];
                    next = next.wrapping_add(1);
                    black_box(p.send(&payload, now))
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_packet
}
criterion_main!(benches);
