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

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SSRC: u32 = 0x1234_5678;
const PAYLOAD_BYTES: usize = 1100;

fn h264() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 102,
    }
}

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

/// One side of a pair: its core and the address it says it has.
struct Side {
    pc: RTCPeerConnection,
    addr: SocketAddr,
}

impl Side {
    fn new(port: u16, reports: bool) -> Self {
        let mut engine = MediaEngine::default();
        engine
            .register_codec(h264(), RtpCodecKind::Video)
            .expect("register H.264");
        engine
            .register_codec(opus(), RtpCodecKind::Audio)
            .expect("register Opus");
        let registry = if reports {
            configure_rtcp_reports(Registry::new())
        } else {
            Registry::new()
        };
        let pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("build a core");
        Self {
            pc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Announces its (in-memory) address as its one host candidate, and
    /// ends gathering.
    fn add_host_candidate(&mut self) {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.addr.ip().to_string(),
                port: self.addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("a host candidate");
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .expect("candidate as JSON");
        self.pc
            .add_local_candidate(init)
            .expect("add the candidate");
    }

    fn connected(&mut self) -> bool {
        let mut up = false;
        while let Some(e) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = e {
                up = s == RTCPeerConnectionState::Connected;
            }
        }
        up
    }
}

/// Hands every datagram `from` wants to send to `to`.
fn deliver(from: &mut Side, to: &mut Side, now: Instant) {
    while let Some(out) = from.pc.poll_write() {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: to.addr,
                peer_addr: from.addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(&out.message[..]),
        };
        // A datagram the other side refuses is part of the handshake's
        // normal give and take, not a failure of the pair.
        let _ = to.pc.handle_read(msg);
    }
}

/// A sender (ffwhep's side, answering) and a receiver (the viewer,
/// offering), connected.
struct Pair {
    sender: Side,
    receiver: Side,
    track: RTCRtpSenderId,
    pt: u8,
    seq: u16,
}

impl Pair {
    fn connect(n: u16, reports: bool) -> Self {
        let mut receiver = Side::new(20_000 + 2 * n, true);
        let mut sender = Side::new(20_001 + 2 * n, reports);
        let _ = receiver
            .pc
            .add_transceiver_from_kind(RtpCodecKind::Video, None)
            .expect("a video transceiver");
        let track = sender
            .pc
            .add_track(MediaStreamTrack::new(
                "bench".to_owned(),
                "bench-video".to_owned(),
                "bench video".to_owned(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(SSRC),
                        ..Default::default()
                    },
                    codec: h264().rtp_codec,
                    ..Default::default()
                }],
            ))
            .expect("add the track");
        // Candidates first, so each description carries its side's.
        receiver.add_host_candidate();
        sender.add_host_candidate();
        let now = Instant::now();
        let offer = receiver.pc.create_offer(None).expect("an offer");
        receiver
            .pc
            .set_local_description(now, offer.clone())
            .expect("apply the offer");
        sender
            .pc
            .set_remote_description(now, offer)
            .expect("take the offer");
        let answer = sender.pc.create_answer(None).expect("an answer");
        sender
            .pc
            .set_local_description(now, answer.clone())
            .expect("apply the answer");
        receiver
            .pc
            .set_remote_description(now, answer)
            .expect("take the answer");
        let (mut up_s, mut up_r) = (false, false);
        let started = Instant::now();
        while !(up_s && up_r) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pair {n} did not connect"
            );
            let now = Instant::now();
            deliver(&mut receiver, &mut sender, now);
            deliver(&mut sender, &mut receiver, now);
            for side in [&mut sender, &mut receiver] {
                if side.pc.poll_timeout().is_some_and(|t| t <= now) {
                    side.pc.handle_timeout(now).expect("a timeout");
                }
            }
            up_s |= sender.connected();
            up_r |= receiver.connected();
        }
        let pt = sender
            .pc
            .rtp_sender(track)
            .and_then(|mut s| {
                s.get_parameters()
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type)
            })
            .unwrap_or(102);
        let mut pair = Self {
            sender,
            receiver,
            track,
            pt,
            seq: 0,
        };
        // What is measured must be real: one protected datagram per packet.
        let payload = Bytes::from(vec![0x41u8; PAYLOAD_BYTES]);
        let sent = pair.send(&payload, Instant::now());
        assert!(
            sent > PAYLOAD_BYTES + 12,
            "pair {n}: {sent} bytes out for one packet"
        );
        pair
    }

    /// Writes one packet and drains what the sender would put on the wire;
    /// returns the bytes.
    fn send(&mut self, payload: &Bytes, now: Instant) -> usize {
        self.seq = self.seq.wrapping_add(1);
        let packet = rtc::rtp::packet::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: self.seq.is_multiple_of(8),
                payload_type: self.pt,
                sequence_number: self.seq,
                timestamp: u32::from(self.seq / 8) * 3000,
                ssrc: SSRC,
                ..Default::default()
            },
            payload: payload.clone(),
        };
        self.sender
            .pc
            .rtp_sender(self.track)
            .expect("the track's sender")
            .write_rtp(now, packet)
            .expect("write_rtp");
        let mut bytes = 0;
        while let Some(out) = self.sender.pc.poll_write() {
            bytes += out.message.len();
        }
        bytes
    }
}

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
