//! One load viewer: a webrtc-rs peer that receives a relay's stream and
//! counts it (packets and sequence gaps per kind, and the hop of sampled
//! packets against the tap), without depacketizing or decoding. Subscribes
//! over WHEP (it offers) or over Janus's HTTP API (Janus offers).

use crate::tap::Tap;
use anyhow::{Context, bail};
use ffwhep::rtp::SeqRange;
use ffwhep::smoke::viewer::PeerEvents;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCPeerConnectionState,
    RTCSessionDescription, Registry, register_default_interceptors,
};

/// One packet in this many per track is timed against the tap.
const HOP_SAMPLE_EVERY: u64 = 8;

/// Packets received and expected (by sequence-number span) for one kind.
#[derive(Default)]
pub struct Counts {
    pub packets: AtomicU64,
    pub expected: AtomicU64,
}

/// Counts one track's packets until it ends: received, and the span of
/// sequence numbers (so gaps are losses); times 1 video packet in
/// [`HOP_SAMPLE_EVERY`] against the tap.
async fn count(track: Arc<dyn TrackRemote>, counts: Arc<[Counts; 2]>, tap: Arc<Tap>) {
    let kind = usize::from(track.kind().await != RtpCodecKind::Video);
    let c = &counts[kind];
    let mut span = SeqRange::default();
    let mut n = 0u64;
    while let Some(evt) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(pkt) = evt else {
            continue;
        };
        n += 1;
        span.extend(pkt.header.sequence_number);
        c.packets.store(n, Relaxed);
        c.expected.store(span.expected(), Relaxed);
        if kind == 0 && n.is_multiple_of(HOP_SAMPLE_EVERY) {
            tap.hop(&pkt.payload);
        }
    }
}

fn engine() -> anyhow::Result<MediaEngine> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(m)
}

/// How a viewer leaves.
enum Leave {
    Whep(String),
    Janus(String),
}

pub struct Viewer {
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    gathered: Arc<Notify>,
    /// Video, audio.
    pub counts: Arc<[Counts; 2]>,
    leave: Option<Leave>,
}

impl Viewer {
    /// A peer whose ICE host candidate is on `bind_ip`.
    async fn new(tap: Arc<Tap>, bind_ip: &str) -> anyhow::Result<Viewer> {
        let mut m = engine()?;
        let registry = register_default_interceptors(Registry::new(), &mut m)?;
        let counts: Arc<[Counts; 2]> = Arc::default();
        let on_track = {
            let counts = counts.clone();
            move |track| {
                tokio::spawn(count(track, counts.clone(), tap.clone()));
            }
        };
        let (events, state, gathered) = PeerEvents::new(on_track);
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_media_engine(m)
                .with_interceptor_registry(registry)
                .with_handler(Arc::new(events))
                .with_udp_addrs(vec![format!("{bind_ip}:0")])
                .build()
                .await?,
        );
        Ok(Viewer {
            pc,
            state,
            gathered,
            counts,
            leave: None,
        })
    }

    /// Sets the local description and returns it with every candidate.
    async fn local_sdp(&self, desc: RTCSessionDescription) -> anyhow::Result<String> {
        let gathered = self.gathered.notified();
        self.pc.set_local_description(desc).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered).await;
        Ok(self
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp)
    }

    async fn connected(mut self) -> anyhow::Result<Viewer> {
        let ok = tokio::time::timeout(
            Duration::from_secs(15),
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !ok {
            bail!("not connected within 15 s (state {})", *self.state.borrow());
        }
        Ok(self)
    }

    /// Subscribes over WHEP: POST a recvonly offer, apply the answer.
    pub async fn whep(http: &reqwest::Client, url: &str, tap: Arc<Tap>) -> anyhow::Result<Viewer> {
        let mut v = Viewer::new(tap, "127.0.0.1").await?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            v.pc.add_transceiver_from_kind(kind, Some(init)).await?;
        }
        let offer = v.pc.create_offer(None).await?;
        let sdp = v.local_sdp(offer).await?;
        let resp = http
            .post(url)
            .header("content-type", "application/sdp")
            .body(sdp)
            .send()
            .await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await?;
        if status != reqwest::StatusCode::CREATED {
            bail!("POST {url}: {status}: {}", body.trim());
        }
        let base = url.split("/whep/").next().unwrap_or_default();
        v.leave = location.map(|l| Leave::Whep(format!("{base}{l}")));
        v.pc.set_remote_description(RTCSessionDescription::answer(body)?)
            .await?;
        v.connected().await
    }

    /// Subscribes to a Janus streaming mountpoint over Janus's HTTP API:
    /// create a session, attach the plugin, `watch`, take Janus's offer from
    /// the event long-poll, answer with `start`.
    pub async fn janus(
        http: &reqwest::Client,
        base: &str,
        mountpoint: u64,
        tap: Arc<Tap>,
    ) -> anyhow::Result<Viewer> {
        let session = janus_call(http, base, json!({"janus": "create"})).await?["data"]["id"]
            .as_u64()
            .context("create: no session id")?;
        let s_url = format!("{base}/{session}");
        let handle = janus_call(
            http,
            &s_url,
            json!({"janus": "attach", "plugin": "janus.plugin.streaming"}),
        )
        .await?["data"]["id"]
            .as_u64()
            .context("attach: no handle id")?;
        let h_url = format!("{s_url}/{handle}");
        let watch = json!({"janus": "message", "body": {"request": "watch", "id": mountpoint}});
        janus_call(http, &h_url, watch).await?;
        let offer = janus_offer(http, &s_url).await?;
        // Janus gathers on the machine's interfaces, never on loopback:
        // take its first IPv4 host candidate's address for ours.
        let ip = host_ipv4(&offer).context("no IPv4 host candidate in Janus's offer")?;
        let mut v = Viewer::new(tap, &ip).await?;
        v.leave = Some(Leave::Janus(s_url));
        v.pc.set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = v.pc.create_answer(None).await?;
        let sdp = v.local_sdp(answer).await?;
        let start = json!({"janus": "message", "body": {"request": "start"},
                           "jsep": {"type": "answer", "sdp": sdp}});
        janus_call(http, &h_url, start).await?;
        v.connected().await
    }

    /// Leaves the way it joined (WHEP DELETE or Janus `destroy`), then closes.
    pub async fn close(&self, http: &reqwest::Client) {
        match &self.leave {
            Some(Leave::Whep(url)) => {
                let _ = http.delete(url).send().await;
            }
            Some(Leave::Janus(url)) => {
                let _ = janus_call(http, url, json!({"janus": "destroy"})).await;
            }
            None => {}
        }
        let _ = self.pc.close().await;
    }
}

/// One Janus API request; fails on a Janus `error` reply.
async fn janus_call(http: &reqwest::Client, url: &str, mut body: Value) -> anyhow::Result<Value> {
    body["transaction"] = json!(format!("{:016x}", rand::random::<u64>()));
    let text = http
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?
        .text()
        .await?;
    let reply: Value = serde_json::from_str(&text).with_context(|| format!("{url}: {text}"))?;
    if reply["janus"] == "error" {
        bail!("{url}: {}", reply["error"]);
    }
    Ok(reply)
}

/// Long-polls the session's events until one carries an SDP offer.
async fn janus_offer(http: &reqwest::Client, session_url: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let text = http
            .get(format!("{session_url}?maxev=1"))
            .send()
            .await?
            .text()
            .await?;
        let events: Value = serde_json::from_str(&text)?;
        let events = events.as_array().cloned().unwrap_or_else(|| vec![events]);
        for e in events {
            if let Some(sdp) = e["jsep"]["sdp"].as_str() {
                return Ok(sdp.to_owned());
            }
            if e["plugindata"]["data"]["error"].is_string() {
                bail!("janus: {}", e["plugindata"]["data"]["error"]);
            }
        }
    }
    bail!("no offer from Janus within 15 s")
}

/// The address of the first IPv4 UDP host candidate in an SDP.
fn host_ipv4(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| {
        let f: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        let ipv4 = f.get(4)?.parse::<std::net::Ipv4Addr>().ok()?;
        (f.get(2)?.eq_ignore_ascii_case("udp") && f.get(7) == Some(&"host"))
            .then(|| ipv4.to_string())
    })
}
