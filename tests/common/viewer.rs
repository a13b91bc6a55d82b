//! A WHEP viewer for tests, written with webrtc-rs: it POSTs an offer,
//! applies the answer, and records what arrives. Video is depacketized to an
//! Annex B H.264 file that a real decoder (ffprobe) can check.

use bytes::Bytes;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry,
    Registry, StatsSelector, register_default_interceptors,
};

/// What a viewer has received so far.
#[derive(Default, Debug, Clone)]
pub struct Received {
    pub video_packets: u64,
    pub audio_packets: u64,
    pub audio_bytes: u64,
    pub video_mime: String,
    pub audio_mime: String,
    /// Annex B H.264, as depacketized.
    pub h264: Vec<u8>,
    pub nal_types: Vec<u8>,
    /// Complete frames (marker bit) since the first IDR arrived.
    pub frames_since_idr: u64,
}

impl Received {
    pub fn saw_nal(&self, t: u8) -> bool {
        self.nal_types.contains(&t)
    }
}

pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub received: Arc<Mutex<Received>>,
    pub location: String,
    pub status: u16,
}

struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: Arc<Notify>,
    received: Arc<Mutex<Received>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        self.state.send_replace(s);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let mut h264 = H264Packet::default();
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
                    continue;
                };
                let mime = match track.codec(pkt.header.ssrc).await {
                    Some(c) => c.mime_type,
                    None => continue,
                };
                let mut r = received.lock().unwrap();
                if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
                    r.video_packets += 1;
                    r.video_mime = mime;
                    if let Ok(annexb) = h264.depacketize(&pkt.payload) {
                        record_nals(&mut r, &annexb);
                        r.h264.extend_from_slice(&annexb);
                    }
                    if pkt.header.marker && r.saw_nal(5) {
                        r.frames_since_idr += 1;
                    }
                } else {
                    r.audio_packets += 1;
                    r.audio_bytes += pkt.payload.len() as u64;
                    r.audio_mime = mime;
                }
            }
        });
    }
}

fn record_nals(r: &mut Received, annexb: &Bytes) {
    let b = &annexb[..];
    let mut i = 0;
    while i + 3 < b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            let t = b[i + 3] & 0x1f;
            if !r.nal_types.contains(&t) {
                r.nal_types.push(t);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
}

fn engine() -> MediaEngine {
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                ..Default::default()
            },
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )
    .unwrap();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90000,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                ..Default::default()
            },
            // Deliberately not ffwhep's 102: the server must rewrite.
            payload_type: 125,
        },
        RtpCodecKind::Video,
    )
    .unwrap();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                ..Default::default()
            },
            payload_type: 109,
        },
        RtpCodecKind::Audio,
    )
    .unwrap();
    m
}

/// Builds a recvonly offer with candidates gathered.
pub async fn offer() -> (
    Arc<dyn PeerConnection>,
    watch::Receiver<RTCPeerConnectionState>,
    Arc<Mutex<Received>>,
    String,
) {
    let mut m = engine();
    let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let gathered = Arc::new(Notify::new());
    let received = Arc::new(Mutex::new(Received::default()));
    let events = Arc::new(Events {
        state: state_tx,
        gathered: gathered.clone(),
        received: received.clone(),
    });
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .with_handler(events)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .unwrap(),
    );
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    }
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), gathered.notified())
        .await
        .ok();
    let sdp = pc.local_description().await.unwrap().sdp;
    (pc, state, received, sdp)
}

impl Viewer {
    /// Subscribes to `url` over WHEP and waits until connected.
    pub async fn connect(url: &str) -> Viewer {
        let (pc, state, received, sdp) = offer().await;
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/sdp")
            .body(sdp)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 201, "POST {url}: {:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(resp.headers().contains_key("etag"));
        assert_eq!(resp.headers()["content-type"], "application/sdp");
        let answer = resp.text().await.unwrap();
        assert!(
            answer.contains("a=sendonly"),
            "answer is not sendonly:\n{answer}"
        );
        assert!(
            answer.contains("a=candidate:"),
            "answer has no candidates:\n{answer}"
        );
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        let mut v = Viewer {
            pc,
            state,
            received,
            location,
            status,
        };
        v.wait_state(Duration::from_secs(10), |s| {
            s == RTCPeerConnectionState::Connected
        })
        .await
        .expect("viewer did not connect");
        v
    }

    /// Waits until the state satisfies `f`; `None` on timeout.
    pub async fn wait_state(
        &mut self,
        within: Duration,
        f: impl Fn(RTCPeerConnectionState) -> bool,
    ) -> Option<RTCPeerConnectionState> {
        tokio::time::timeout(within, self.state.wait_for(|s| f(*s)))
            .await
            .ok()?
            .ok()
            .map(|s| *s)
    }

    /// Waits until the server has ended the connection: its DTLS transport
    /// closed by the server's close_notify, or the connection closed, failed
    /// or disconnected. Returns how it ended, or `None` after `within`.
    pub async fn wait_hung_up(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let state = *self.state.borrow();
            if matches!(
                state,
                RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Disconnected
            ) {
                return Some(format!("connection {state}"));
            }
            if self
                .dtls_states()
                .await
                .iter()
                .any(|s| s == "dtls closed" || s == "receiver dtls Ok(Closed)")
            {
                return Some("DTLS closed by the server".to_owned());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The DTLS transport states from this viewer's stats, and its
    /// connection state, for hang-up detection and diagnostics.
    pub async fn dtls_states(&self) -> Vec<String> {
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        let mut v: Vec<String> = report
            .iter()
            .filter_map(|e| match e {
                RTCStatsReportEntry::Transport(t) => Some(format!("dtls {}", t.dtls_state)),
                _ => None,
            })
            .collect();
        for receiver in self.pc.get_receivers().await {
            if let Ok(Some(t)) = receiver.transport().await {
                v.push(format!("receiver dtls {:?}", t.state().await));
            }
        }
        v.push(format!("pc {}", *self.state.borrow()));
        v
    }

    pub fn received(&self) -> Received {
        self.received.lock().unwrap().clone()
    }

    /// Polls until `f` holds for what was received; panics after `within`.
    pub async fn wait_for(&self, within: Duration, what: &str, f: impl Fn(&Received) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !f(&self.received()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                summary(&self.received())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

pub fn summary(r: &Received) -> String {
    format!(
        "video_packets={} audio_packets={} nal_types={:?} h264_bytes={} video_mime={} audio_mime={}",
        r.video_packets,
        r.audio_packets,
        r.nal_types,
        r.h264.len(),
        r.video_mime,
        r.audio_mime
    )
}
