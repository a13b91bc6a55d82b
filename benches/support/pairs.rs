//! Pairs of `rtc` sans-IO cores connected in memory, set up as ffwhep's
//! viewers are (a send-only H.264 track on the sender): shared by
//! `benches/rtc_core.rs` (time per packet) and
//! `examples/rtc-core-memory.rs` (heap per connection).

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const SSRC: u32 = 0x1234_5678;
pub const PAYLOAD_BYTES: usize = 1100;

pub fn h264() -> RTCRtpCodecParameters {
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

pub fn opus() -> RTCRtpCodecParameters {
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
pub struct Side {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
}

/// One ECDSA P-256 certificate, for cores that share one.
pub fn certificate() -> RTCCertificate {
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["ffwhep".to_owned()]).expect("certificate parameters"),
    )
    .expect("a certificate")
}

impl Side {
    pub fn new(port: u16, reports: bool) -> Self {
        Self::with_certificate(port, reports, None)
    }

    /// A side with `certificate`, or (none) one of its own made now, as a
    /// core makes when given none.
    pub fn with_certificate(port: u16, reports: bool, certificate: Option<RTCCertificate>) -> Self {
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
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(certificate.into_iter().collect())
                    .build(),
            )
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
    pub fn add_host_candidate(&mut self) {
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

    pub fn connected(&mut self) -> bool {
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
pub fn deliver(from: &mut Side, to: &mut Side, now: Instant) {
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
pub struct Pair {
    pub sender: Side,
    pub receiver: Side,
    pub track: RTCRtpSenderId,
    pub pt: u8,
    pub seq: u16,
}

impl Pair {
    pub fn connect(n: u16, reports: bool) -> Self {
        Self::connect_with(n, reports, None)
    }

    /// A pair whose sender has `certificate` (shared with others).
    pub fn connect_with(n: u16, reports: bool, certificate: Option<RTCCertificate>) -> Self {
        let mut receiver = Side::new(20_000 + 2 * n, true);
        let mut sender = Side::with_certificate(20_001 + 2 * n, reports, certificate);
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
    pub fn send(&mut self, payload: &Bytes, now: Instant) -> usize {
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
