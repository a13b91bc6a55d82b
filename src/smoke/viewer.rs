//! The built-in WHEP viewer, written with webrtc-rs: it POSTs a recvonly
//! offer over real HTTP, applies the answer, and records what arrives:
//! packets, bytes and losses per kind, the H.264 NAL types and picture size,
//! and when the first keyframe came. Used by `ffwhep smoke` and the tests.

use crate::engine::feedback::RtcpToApp;
use crate::h264::{self, nal};
use crate::rtp::SeqRange;
use anyhow::{Context, bail};
use rtc::interceptor::Slot;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

/// At most this much depacketized H.264 is kept for a decoder to check.
const MAX_KEPT_H264: usize = 16 << 20;

/// Packets, bytes and losses of one kind of media.
#[derive(Default, Debug, Clone, Serialize)]
pub struct TrackStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets missing from the sequence-number range seen.
    pub lost: u64,
    #[serde(skip)]
    pub mime: String,
    #[serde(skip)]
    seq: SeqRange,
}

impl TrackStats {
    /// Counts a packet; returns its extended sequence number.
    fn take(&mut self, seq: u16, bytes: usize, mime: &str) -> u64 {
        self.packets += 1;
        self.bytes += bytes as u64;
        if self.mime.is_empty() {
            self.mime = mime.to_owned();
        }
        let ext = self.seq.extend(seq);
        self.lost = self.seq.expected().saturating_sub(self.packets);
        ext
    }
}

/// What a viewer has received so far.
#[derive(Default, Debug, Clone)]
pub struct Received {
    pub video: TrackStats,
    pub audio: TrackStats,
    /// Annex B H.264 as depacketized (the first 16 MiB).
    pub h264: Vec<u8>,
    pub nal_types: Vec<u8>,
    /// Complete frames (marker bit) since the first IDR arrived.
    pub frames_since_idr: u64,
    /// The picture size of the last SPS.
    pub size: Option<(u32, u32)>,
    /// Time from the POST to the first IDR.
    pub first_keyframe_after: Option<Duration>,
    /// Each video packet by extended sequence number: its timestamp and
    /// marker bit (the first 100,000), to tell complete frames afterwards.
    pub video_packets: std::collections::BTreeMap<u64, (u32, bool)>,
    /// The last sender report per kind (video, audio): NTP time, RTP time,
    /// and when it arrived.
    pub sender_reports: [Option<(u64, u32, Instant)>; 2],
    /// The first and the last packet per kind (video, audio): RTP time and
    /// arrival.
    pub first_packet: [Option<(u32, Instant)>; 2],
    pub last_packet: [Option<(u32, Instant)>; 2],
}

impl Received {
    pub fn saw_nal(&self, t: u8) -> bool {
        self.nal_types.contains(&t)
    }

    /// Frames all of whose packets arrived (retransmissions included), from
    /// the first marker on: a frame is the packets after one marker up to
    /// the next, and counts when no sequence number between them is missing.
    pub fn complete_frames(&self) -> u64 {
        let mut complete = 0;
        let mut prev_marker: Option<u64> = None;
        for (&seq, &(_, marker)) in &self.video_packets {
            if !marker {
                continue;
            }
            if let Some(start) = prev_marker {
                let want = seq - start;
                let have = self.video_packets.range(start + 1..=seq).count() as u64;
                complete += u64::from(have == want);
            }
            prev_marker = Some(seq);
        }
        complete
    }

    /// SPS, PPS and an IDR have arrived: a decoder can start.
    pub fn decodable(&self) -> bool {
        self.saw_nal(nal::SPS) && self.saw_nal(nal::PPS) && self.saw_nal(nal::IDR)
    }

    fn take_video(
        &mut self,
        pkt: &rtc::rtp::Packet,
        mime: &str,
        depack: &mut h264::Depacketizer,
        t0: Instant,
    ) {
        let ext = self
            .video
            .take(pkt.header.sequence_number, pkt.payload.len(), mime);
        if self.video_packets.len() < 100_000 {
            self.video_packets
                .insert(ext, (pkt.header.timestamp, pkt.header.marker));
        }
        let mut annexb = Vec::new();
        depack.push(&pkt.payload, &mut annexb);
        if !annexb.is_empty() {
            for unit in h264::annexb_units(&annexb) {
                let Some(t) = h264::unit_type(unit) else {
                    continue;
                };
                if !self.nal_types.contains(&t) {
                    self.nal_types.push(t);
                }
                if t == nal::SPS {
                    self.size = h264::sps_dimensions(unit).or(self.size);
                }
                if t == nal::IDR && self.first_keyframe_after.is_none() {
                    self.first_keyframe_after = Some(t0.elapsed());
                }
            }
            if self.h264.len() + annexb.len() <= MAX_KEPT_H264 {
                self.h264.extend_from_slice(&annexb);
            }
        }
        if pkt.header.marker && self.saw_nal(nal::IDR) {
            self.frames_since_idr += 1;
        }
    }
}

type Shared = Arc<Mutex<Received>>;

fn lock(r: &Shared) -> MutexGuard<'_, Received> {
    // Updates are plain counter writes; a panic elsewhere cannot leave them torn.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// A receiving peer's events as its owner needs them: the connection state
/// (a watch), the end of ICE gathering (a notify), and each remote track
/// handed to `on_track`. Shared by the smoke viewer and the load clients.
pub struct PeerEvents {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: Arc<Notify>,
    on_track: Box<dyn Fn(Arc<dyn TrackRemote>) + Send + Sync>,
}

impl PeerEvents {
    /// The handler, the state's receiver and the gathering notify.
    pub fn new(
        on_track: impl Fn(Arc<dyn TrackRemote>) + Send + Sync + 'static,
    ) -> (
        PeerEvents,
        watch::Receiver<RTCPeerConnectionState>,
        Arc<Notify>,
    ) {
        let (state, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let gathered = Arc::new(Notify::new());
        let events = PeerEvents {
            state,
            gathered: gathered.clone(),
            on_track: Box::new(on_track),
        };
        (events, state_rx, gathered)
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerEvents {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        self.state.send_replace(s);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        (self.on_track)(track);
    }
}

/// Records what arrives on one track until it ends.
async fn record(track: Arc<dyn TrackRemote>, received: Shared, t0: Instant) {
    let mut depack = h264::Depacketizer::default();
    let mut mime: Option<String> = None;
    while let Some(evt) = track.poll().await {
        let pkt = match evt {
            TrackRemoteEvent::OnRtpPacket(pkt) => pkt,
            TrackRemoteEvent::OnRtcpPacket(rtcp) => {
                let video = track.kind().await == RtpCodecKind::Video;
                for p in &rtcp {
                    if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                        lock(&received).sender_reports[usize::from(!video)] =
                            Some((sr.ntp_time, sr.rtp_time, Instant::now()));
                    }
                }
                continue;
            }
            _ => continue,
        };
        // The negotiated codec, looked up once per track.
        if mime.is_none() {
            mime = track.codec(pkt.header.ssrc).await.map(|c| c.mime_type);
        }
        let Some(mime) = mime.as_deref() else {
            continue;
        };
        let mut r = lock(&received);
        let video = mime.eq_ignore_ascii_case(MIME_TYPE_H264);
        let seen = (pkt.header.timestamp, Instant::now());
        r.first_packet[usize::from(!video)].get_or_insert(seen);
        r.last_packet[usize::from(!video)] = Some(seen);
        if video {
            r.take_video(&pkt, mime, &mut depack, t0);
        } else {
            r.audio
                .take(pkt.header.sequence_number, pkt.payload.len(), mime);
        }
    }
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// VP8 first (as browsers list it), then H.264 and Opus under payload types
/// that differ from FFmpeg's, so the server must rewrite them.
fn engine() -> anyhow::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    let h264_fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
    m.register_codec(codec("video/VP8", 90000, 0, "", 96), RtpCodecKind::Video)?;
    m.register_codec(
        codec(MIME_TYPE_H264, 90000, 0, h264_fmtp, 125),
        RtpCodecKind::Video,
    )?;
    let opus_fmtp = "minptime=10;useinbandfec=1";
    m.register_codec(
        codec(MIME_TYPE_OPUS, 48000, 2, opus_fmtp, 109),
        RtpCodecKind::Audio,
    )?;
    Ok(m)
}

/// A recvonly peer with its offer, candidates gathered, not yet sent.
pub struct Offer {
    pub pc: Arc<dyn PeerConnection>,
    pub sdp: String,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: Shared,
}

impl Offer {
    pub async fn new() -> anyhow::Result<Offer> {
        Self::build(false).await
    }

    /// An offer that can also reach the server over ICE-TCP (active).
    pub async fn with_tcp() -> anyhow::Result<Offer> {
        Self::build(true).await
    }

    async fn build(tcp: bool) -> anyhow::Result<Offer> {
        let (pc, state, gathered, received) = peer(tcp).await?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            pc.add_transceiver_from_kind(kind, Some(init)).await?;
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = gathered_sdp(&*pc, &gathered).await?;
        Ok(Offer {
            pc,
            sdp,
            state,
            received,
        })
    }

    /// The same receiving peer on the other side of the exchange, as a WHIP
    /// endpoint is: it answers a sender's `offer` (`sdp` is its answer,
    /// candidates gathered) and records what arrives.
    pub async fn answering(offer: &str) -> anyhow::Result<Offer> {
        let (pc, state, gathered, received) = peer(false).await?;
        let desc =
            RTCSessionDescription::offer(offer.to_owned()).context("the offer is not SDP")?;
        pc.set_remote_description(desc).await?;
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        let sdp = gathered_sdp(&*pc, &gathered).await?;
        Ok(Offer {
            pc,
            sdp,
            state,
            received,
        })
    }

    /// What has arrived so far.
    pub fn received(&self) -> Received {
        lock(&self.received).clone()
    }

    /// Polls until `f` holds for what was received; false after `within`.
    pub async fn wait_until(&self, within: Duration, f: impl Fn(&Received) -> bool) -> bool {
        wait_received(&self.received, within, f).await
    }

    /// The connection's state now.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }
}

/// The local description once gathering is done (or after 5 s, with what
/// was gathered).
async fn gathered_sdp(pc: &dyn PeerConnection, gathered: &Notify) -> anyhow::Result<String> {
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.notified()).await;
    Ok(pc
        .local_description()
        .await
        .context("no local description")?
        .sdp)
}

/// Polls until `f` holds for `received`; false after `within`.
async fn wait_received(received: &Shared, within: Duration, f: impl Fn(&Received) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Checked under the lock: no copy of the kept H.264 per poll.
        if f(&lock(received)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A receiving peer on loopback (UDP, and ICE-TCP when `tcp`) that records
/// what arrives: the connection, its state, its gathering, its record.
async fn peer(
    tcp: bool,
) -> anyhow::Result<(
    Arc<dyn PeerConnection>,
    watch::Receiver<RTCPeerConnectionState>,
    Arc<Notify>,
    Shared,
)> {
    let mut m = engine()?;
    let registry = register_default_interceptors(Registry::new(), &mut m)?.with(
        Slot::from(14_000),
        RtcpToApp::new(|p| p.as_any().is::<SenderReport>()),
    );
    let received = Shared::default();
    let t0 = Instant::now();
    let on_track = {
        let received = received.clone();
        move |track| {
            tokio::spawn(record(track, received.clone(), t0));
        }
    };
    let (events, state, gathered) = PeerEvents::new(on_track);
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(events))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .with_tcp_addrs(if tcp {
                vec!["127.0.0.1:0".to_owned()]
            } else {
                Vec::new()
            })
            .build()
            .await?,
    );
    Ok((pc, state, gathered, received))
}

/// A viewer subscribed over WHEP.
pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: Shared,
    /// The session URL path the server gave (`Location`).
    pub location: String,
    pub answer: String,
}

impl Viewer {
    /// Subscribes to `url` over WHEP and waits until connected.
    pub async fn connect(url: &str) -> anyhow::Result<Viewer> {
        Self::connect_via(url, None, |s| s, |s| s).await
    }

    /// Like [`Viewer::connect`], with a bearer token when given, and the
    /// offer and the answer passed through `offer_fn` and `answer_fn` on
    /// their way (e.g. to route the media through a test's proxy).
    pub async fn connect_via(
        url: &str,
        token: Option<&str>,
        offer_fn: impl FnOnce(String) -> String,
        answer_fn: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Viewer> {
        Self::connect_with(Offer::new().await?, url, token, offer_fn, answer_fn).await
    }

    /// Like [`Viewer::connect_via`], with an offer made by the caller.
    pub async fn connect_with(
        offer: Offer,
        url: &str,
        token: Option<&str>,
        offer_fn: impl FnOnce(String) -> String,
        answer_fn: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Viewer> {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/sdp");
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let resp = request
            .body(offer_fn(offer.sdp.clone()))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            bail!("POST {url}: {status}: {}", answer.trim());
        }
        let location = location.context("201 without a Location header")?;
        let applied = answer_fn(answer.clone());
        let desc =
            RTCSessionDescription::answer(applied.clone()).context("the answer is not SDP")?;
        offer
            .pc
            .set_remote_description(desc)
            .await
            .context("applying the answer")?;
        // The webrtc crate connects to a passive ICE-TCP candidate only when
        // it is added as a trickled one, not from the description.
        let mid = applied
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(|m| m.trim().to_owned());
        for line in applied
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains("tcptype passive"))
        {
            let init = webrtc::peer_connection::RTCIceCandidateInit {
                candidate: line.trim().trim_start_matches("a=").to_owned(),
                sdp_mid: mid.clone(),
                sdp_mline_index: Some(0),
                username_fragment: None,
                url: None,
            };
            offer
                .pc
                .add_ice_candidate(init)
                .await
                .context("adding the answer's ICE-TCP candidate")?;
        }
        let mut v = Viewer {
            pc: offer.pc,
            state: offer.state,
            received: offer.received,
            location,
            answer,
        };
        if v.wait_state(Duration::from_secs(10), |s| {
            s == RTCPeerConnectionState::Connected
        })
        .await
        .is_none()
        {
            bail!(
                "the WebRTC connection did not come up within 10 s (state {})",
                v.state()
            );
        }
        Ok(v)
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
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

    pub fn received(&self) -> Received {
        lock(&self.received).clone()
    }

    /// Polls until `f` holds for what was received; false after `within`.
    pub async fn wait_until(&self, within: Duration, f: impl Fn(&Received) -> bool) -> bool {
        wait_received(&self.received, within, f).await
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// A one-line account of what was received, for messages.
pub fn summary(r: &Received) -> String {
    format!(
        "video_packets={} audio_packets={} nal_types={:?} size={:?} video_mime={} audio_mime={}",
        r.video.packets, r.audio.packets, r.nal_types, r.size, r.video.mime, r.audio.mime
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_frames_need_every_packet_between_markers() {
        let mut r = Received::default();
        // Frames: [10] marker, [11 12] marker, [13 (14 lost) 15] marker, [16] marker.
        for (seq, marker) in [
            (10, true),
            (11, false),
            (12, true),
            (13, false),
            (15, true),
            (16, true),
        ] {
            r.video_packets.insert(seq, (0, marker));
        }
        assert_eq!(r.complete_frames(), 2, "frames 11-12 and 16");
        r.video_packets.insert(14, (0, false)); // retransmitted late
        assert_eq!(r.complete_frames(), 3);
    }

    #[test]
    fn loss_counts_gaps_across_the_wrap() {
        let mut t = TrackStats::default();
        for seq in [65533u16, 65534, 65535, 0, 2, 3] {
            t.take(seq, 10, "audio/opus");
        }
        assert_eq!((t.packets, t.lost), (6, 1));
        // A late duplicate-free reordering does not count as loss.
        t.take(1, 10, "audio/opus");
        assert_eq!(t.lost, 0);
    }
}
