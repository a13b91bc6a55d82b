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
//! For comparison, the short path a connection of ffwhep's own could take
//! once it is up: rewrite the source packet's header (PT, sequence number,
//! timestamp, SSRC) in a reused buffer and protect it with an `rtc-srtp`
//! context directly, per viewer round-robin, with either SRTP profile.
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

fn short_path(c: &mut Criterion) {
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    let mut source = vec![0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    source.extend(std::iter::repeat_n(0x41u8, PAYLOAD_BYTES));
    let mut group = c.benchmark_group("rewrite+srtp");
    group.throughput(Throughput::Elements(1));
    let profiles = [
        ("aead_aes128_gcm", ProtectionProfile::AeadAes128Gcm),
        (
            "aes128_cm_hmac_sha1_80",
            ProtectionProfile::Aes128CmHmacSha1_80,
        ),
    ];
    for (label, profile) in profiles {
        for n in [1u32, 100, 300] {
            let mut viewers: Vec<(Context, u32, u16)> = (0..n)
                .map(|i| {
                    let key = vec![i as u8; profile.key_len()];
                    let salt = vec![7u8; profile.salt_len()];
                    let ctx = Context::new(&key, &salt, profile, None, None, provider.crypto())
                        .expect("an SRTP context");
                    (ctx, 0x1000 + i, 0)
                })
                .collect();
            let mut buf = Vec::with_capacity(1500);
            let mut next = 0usize;
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    let (ctx, ssrc, seq) = &mut viewers[next % n as usize];
                    next = next.wrapping_add(1);
                    *seq = seq.wrapping_add(1);
                    let ts = u32::from(*seq) * 3000;
                    buf.clear();
                    buf.extend_from_slice(&source);
                    buf[1] = (buf[1] & 0x80) | 102;
                    buf[2..4].copy_from_slice(&seq.to_be_bytes());
                    buf[4..8].copy_from_slice(&ts.to_be_bytes());
                    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    let header = rtc::rtp::Header {
                        version: 2,
                        payload_type: 102,
                        sequence_number: *seq,
                        timestamp: ts,
                        ssrc: *ssrc,
                        ..Default::default()
                    };
                    black_box(
                        ctx.encrypt_rtp_with_header(&buf, &header)
                            .expect("protected"),
                    )
                })
            });
        }
    }
    group.finish();
}

/// What answering an offer costs a new core (ffwhep's per-join work on the
/// shard's side, before any datagram): building it, taking the offer,
/// answering; with a DTLS certificate made for it (what a core does when
/// given none) or one shared by every core.
fn answer(c: &mut Criterion) {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    let mut offerer = pairs::Side::new(30_000, true);
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        offerer
            .pc
            .add_transceiver_from_kind(kind, None)
            .expect("a transceiver");
    }
    offerer.add_host_candidate();
    let offer = offerer.pc.create_offer(None).expect("an offer");
    offerer
        .pc
        .set_local_description(Instant::now(), offer.clone())
        .expect("apply the offer");
    let shared = pairs::certificate();
    let mut group = c.benchmark_group("answer");
    for (label, certificate) in [
        ("own_certificate", None),
        ("shared_certificate", Some(shared)),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let now = Instant::now();
                let mut s = pairs::Side::with_certificate(30_001, true, certificate.clone());
                s.pc.set_remote_description(now, offer.clone())
                    .expect("take the offer");
                s.add_host_candidate();
                let answer = s.pc.create_answer(None).expect("an answer");
                s.pc.set_local_description(now, answer).expect("apply it");
                black_box(s)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_packet, short_path, answer
}
criterion_main!(benches);
