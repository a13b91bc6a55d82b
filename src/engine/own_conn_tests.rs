//! A viewer that is `rtc`'s own peer connection (what webrtc-rs viewers
//! run) against the transport: the answer is written by `rtc` as today,
//! then the transport alone carries ICE, DTLS and media in memory.

use super::*;
use crate::engine::answer::{self, Credentials};
use crate::engine::identity::Identity;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::time::SystemTime;

fn host(addr: SocketAddr) -> Candidate {
    CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .unwrap()
}

/// A datagram as its receiver sees it: the sender's addresses swapped.
fn arrived(d: TaggedBytesMut, now: Instant) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: d.transport.peer_addr,
            peer_addr: d.transport.local_addr,
            ..d.transport
        },
        message: d.message,
    }
}

#[test]
fn an_rtc_viewer_gets_media_from_the_short_path() {
    assert_eq!(
        super::abs_send_time(Duration::from_millis(1500)),
        [0x06, 0x00, 0x00]
    );
    assert_eq!(
        super::abs_send_time(Duration::from_secs(64) + Duration::from_millis(250)),
        [0x01, 0x00, 0x00],
        "6.18 fixed point, wrapping every 64 s"
    );
    let now = Instant::now();
    let (viewer_addr, our_addr): (SocketAddr, SocketAddr) = (
        "127.0.0.1:40001".parse().unwrap(),
        "127.0.0.1:40002".parse().unwrap(),
    );
    // The viewer: rtc's peer connection, offering to receive video.
    let mut engine = MediaEngine::default();
    crate::engine::codecs::register_codecs(&mut engine).unwrap();
    // It hands sender reports to the test.
    let registry = rtc::interceptor::Registry::new().with(
        rtc::interceptor::Slot::from(14_000),
        crate::engine::feedback::RtcpToApp::new(|p| {
            p.as_any().is::<rtc::rtcp::sender_report::SenderReport>()
        }),
    );
    let mut viewer = RTCPeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .unwrap();
    viewer
        .add_transceiver_from_kind(RtpCodecKind::Video, None)
        .unwrap();
    let init = RTCIceCandidate::from(&host(viewer_addr)).to_json().unwrap();
    viewer.add_local_candidate(init).unwrap();
    let offer = viewer.create_offer(None).unwrap();
    viewer.set_local_description(now, offer.clone()).unwrap();

    // Our answer, written by rtc's core as today; the core is then dropped.
    let id = Credentials {
        ufrag: "ourufragourufrag".into(),
        pwd: "ourpwdourpwdourpwdourpwd".into(),
        certificate: Identity::new().unwrap().certificate(SystemTime::now()),
    };
    let answered = answer::answer(
        &offer.sdp,
        &[RtpCodecKind::Video],
        &id,
        &[answer::Local::Udp(our_addr)],
        now,
    )
    .unwrap();
    let (_, _, pt, ssrc) = answered.tracks[0];

    drop(answered.core);
    let desc =
        rtc::peer_connection::sdp::RTCSessionDescription::answer(answered.answer.clone()).unwrap();
    viewer.set_remote_description(now, desc).unwrap();

    let remote = Remote::parse(&offer.sdp).unwrap();
    let local = super::Local {
        ufrag: &id.ufrag,
        pwd: &id.pwd,
        certificate: &id.certificate,
        candidates: vec![host(our_addr)],
        controlling: false,
    };
    let mut ours = Transport::new(now, local, &remote).unwrap();
    ours.add_track(ssrc, 90_000);
    // Its packets carry their send time, as the answer maps it.
    let ext = crate::sdp::extmap::extension_id(
        &answered.answer,
        "video",
        crate::sdp::extmap::ABS_SEND_TIME,
    )
    .expect("abs-send-time agreed on");
    ours.stamp_send_time(ssrc, ext);
    let t0 = now;
    let mut stamped = 0;

    let mut received = 0;
    let mut reports = 0;
    let mut seq = 0u16;
    // A clock of the test's own, 5 ms a round: both sides are sans-IO and
    // take the time from their caller.
    for round in 0..2000u64 {
        let now = now + Duration::from_millis(5 * round);
        while let Some(d) = viewer.poll_write() {
            ours.handle_read(arrived(d, now));
        }
        while let Some(d) = ours.poll_write() {
            let _ = viewer.handle_read(arrived(d, now));
        }
        if ours.poll_timeout().is_some_and(|t| t <= now) {
            ours.handle_timeout(now);
        }
        if viewer.poll_timeout().is_some_and(|t| t <= now) {
            let _ = viewer.handle_timeout(now);
        }
        if ours.state() == rtc::peer_connection::state::RTCPeerConnectionState::Connected {
            seq = seq.wrapping_add(1);
            let mut packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 3000,
                    ssrc,
                    marker: true,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(&[0x65, 0x88, 0x84, 0x00, 0x33]),
            };
            ours.with_send_time(&mut packet, now);
            assert!(ours.write_rtp(&packet));
        }
        while let Some(m) = viewer.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(_, p) => {
                    assert_eq!(p.header.ssrc, ssrc);
                    received += 1;
                    // Sent in the round before the one it arrives in.
                    let sent_at = now.duration_since(t0) - Duration::from_millis(5);
                    let sent = super::abs_send_time(sent_at);
                    if p.header.get_extension(ext).as_deref() == Some(&sent[..]) {
                        stamped += 1;
                    }
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in packets {
                        if let Some(sr) = p
                            .as_any()
                            .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                        {
                            assert_eq!(sr.ssrc, ssrc);
                            assert!(sr.packet_count > 0);
                            reports += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        while viewer.poll_event().is_some() {}
        // A second of media brings a sender report.
        if received >= 10 && reports >= 1 {
            assert_eq!(stamped, received, "every packet bears its send time");
            // Hung up: a DTLS alert (close_notify) goes out.
            ours.close(now);
            let mut alert = false;
            while let Some(d) = ours.poll_write() {
                alert |= d.message.first() == Some(&21);
                let _ = viewer.handle_read(arrived(d, now));
            }
            assert!(alert, "no close_notify");
            return;
        }
    }
    panic!(
        "the viewer got {received} packets and {reports} reports; ICE {:?}, keys {}",
        ours.ice,
        ours.srtp.is_some()
    );
}
