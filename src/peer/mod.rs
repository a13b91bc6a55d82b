//! A WebRTC viewer made from an SDP offer. The only module that touches the
//! webrtc crate.
//!
//! Each viewer gets its own H.264 and Opus tracks. Once its connection is up,
//! one forwarder per track takes packets from that kind's source and rewrites
//! them to the payload type the viewer negotiated and the viewer's own SSRC.

pub mod feedback;
pub mod forward;
pub mod mux;
mod renumber;
mod report;

pub use report::ViewerReport;

use crate::offer::{OfferError, Offered};
use crate::source::{DropCount, SourceHandle};
use feedback::{RtcpToApp, TrackSink};
use forward::Forwarder;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    configure_rtcp_reports,
};
use webrtc::rtp_transceiver::RtpSender;

/// How a viewer's peer connections are set up.
#[derive(Debug)]
pub struct PeerConfig {
    /// Local UDP addresses the viewer's ICE agent binds (port 0: ephemeral).
    pub ice_addrs: Vec<SocketAddr>,
    /// The longest wait for candidate gathering before answering.
    pub gather_timeout: Duration,
    /// A session whose connection is not up this long after the answer is
    /// dropped and its resources freed.
    pub setup_timeout: Duration,
    /// STUN/TURN servers for the server's agent (also advertised to viewers).
    pub ice_servers: Vec<IceServer>,
    /// Public addresses (NAT 1:1) put in the host candidates instead of the
    /// local ones.
    pub nat_ips: Vec<std::net::IpAddr>,
    /// Ports for viewers' UDP sockets (for firewalls), instead of ephemeral.
    pub port_range: Option<PortRange>,
    /// Local TCP addresses for ICE-TCP (passive) candidates, when wanted.
    pub ice_tcp_addrs: Vec<SocketAddr>,
    /// One UDP socket for every viewer, instead of one each.
    pub udp_mux: Option<Arc<mux::UdpMux>>,
}

/// A range of UDP ports handed out in turn.
#[derive(Debug)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
    next: std::sync::atomic::AtomicU16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Self {
        Self {
            first,
            last,
            next: std::sync::atomic::AtomicU16::new(first),
        }
    }

    /// A port of the range that is free on `ip` right now, trying each once
    /// from where the last search ended.
    pub fn take(&self, ip: std::net::IpAddr) -> Option<u16> {
        let span = u32::from(self.last - self.first) + 1;
        for _ in 0..span {
            let port = self.next.fetch_add(1, Relaxed);
            let port = if port < self.first || port > self.last {
                self.next.store(self.first + 1, Relaxed);
                self.first
            } else {
                port
            };
            if std::net::UdpSocket::bind((ip, port)).is_ok() {
                return Some(port);
            }
        }
        None
    }
}

/// The addresses a viewer's agent binds: ports from the range when one is set.
fn viewer_addrs(cfg: &PeerConfig) -> Result<Vec<SocketAddr>, PeerError> {
    let Some(range) = &cfg.port_range else {
        return Ok(cfg.ice_addrs.clone());
    };
    cfg.ice_addrs
        .iter()
        .map(|a| match a.port() {
            0 => range
                .take(a.ip())
                .map(|p| SocketAddr::new(a.ip(), p))
                .ok_or_else(|| {
                    PeerError::Internal(anyhow::anyhow!(
                        "no free UDP port in {}-{}",
                        range.first,
                        range.last
                    ))
                }),
            _ => Ok(*a),
        })
        .collect()
}

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// The `Link` header value that advertises this server (WHEP §4.6).
    pub fn link(&self) -> String {
        let mut v = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(u), Some(c)) = (&self.username, &self.credential) {
            v.push_str(&format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            ));
        }
        v
    }
}

/// The sources of one stream, by kind.
#[derive(Clone, Default)]
pub struct StreamMedia {
    pub video: Option<SourceHandle>,
    pub audio: Option<SourceHandle>,
    /// Relay latency of the stream's sampled packets.
    pub latency: Arc<crate::latency::Histogram>,
}

/// What one viewer was sent, as plain numbers that add up across viewers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SentTotals {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub nacks: u64,
    pub retransmitted: u64,
    pub keyframe_requests: u64,
    pub resyncs: u64,
}

impl std::ops::AddAssign for SentTotals {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.dropped += o.dropped;
        self.nacks += o.nacks;
        self.retransmitted += o.retransmitted;
        self.keyframe_requests += o.keyframe_requests;
        self.resyncs += o.resyncs;
    }
}

impl ViewerCounters {
    pub fn totals(&self) -> SentTotals {
        SentTotals {
            packets: self.packets_sent.load(Relaxed),
            bytes: self.bytes_sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            nacks: self.nacks.load(Relaxed),
            retransmitted: self.retransmitted.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
        }
    }
}

/// Packets and bytes written toward one viewer, and packets dropped because
/// its queue was full. Each viewer counts only its own (no counter shared
/// across viewers on the per-packet path); stream totals are summed.
#[derive(Debug, Default)]
pub struct ViewerCounters {
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Packets the viewer asked to have again.
    pub nacks: AtomicU64,
    pub retransmitted: AtomicU64,
    /// PLI and FIR received.
    pub keyframe_requests: AtomicU64,
    /// Restarts from the GOP cache (or the next keyframe) after falling behind.
    pub resyncs: AtomicU64,
    pub write_errors: AtomicU64,
}

impl DropCount for ViewerCounters {
    fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
}

/// Runs `fwd` once the connection is up: before that, writes cannot be
/// protected.
async fn forward_once_connected(
    fwd: Forwarder,
    mut state: watch::Receiver<RTCPeerConnectionState>,
) {
    let connected = tokio::select! {
        _ = fwd.cancel.cancelled() => false,
        s = state.wait_for(|s| *s == RTCPeerConnectionState::Connected || is_over(*s)) => {
            matches!(s.as_deref(), Ok(RTCPeerConnectionState::Connected))
        }
    };
    if connected {
        fwd.run().await;
    }
}

/// Why no viewer could be made.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("WebRTC setup failed: {0:#}")]
    Internal(anyhow::Error),
}

fn internal(context: &'static str) -> impl FnOnce(webrtc::error::Error) -> PeerError {
    move |e| PeerError::Internal(anyhow::Error::new(e).context(context))
}

/// A connected (or connecting) viewer.
pub struct Viewer {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<ViewerCounters>,
    /// When the connection came up.
    connected_at: Arc<Mutex<Option<SystemTime>>>,
    /// Each track with the SSRC the viewer knows it by, for the BYE.
    tracks: Vec<(Arc<TrackLocalStaticRTP>, u32)>,
    cancel: CancellationToken,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// The SDP answer, with the gathered candidates.
    pub answer: String,
}

impl Viewer {
    /// Stops forwarding at once, says RTCP BYE on each track, and closes the
    /// peer connection (which sends DTLS close_notify).
    pub async fn hang_up(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        self.cancel.cancel();
        // Only a connected viewer can be told (its SRTP keys exist).
        let connected = *self.state.borrow() == RTCPeerConnectionState::Connected;
        for (track, ssrc) in self.tracks.iter().filter(|_| connected) {
            let bye = rtc::rtcp::goodbye::Goodbye {
                sources: vec![*ssrc],
                reason: "stream ended".into(),
            };
            // Best effort: a viewer that never connected cannot be told.
            let _ = track.write_rtcp(vec![Box::new(bye)]).await;
        }
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }

    /// Adds a candidate the viewer trickled.
    pub async fn add_candidate(&self, c: &crate::trickle::Candidate) -> Result<(), String> {
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.mid.clone(),
            sdp_mline_index: c.mline_index,
            username_fragment: None,
            url: None,
        };
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| e.to_string())
    }

    /// What this viewer was sent so far.
    pub fn totals(&self) -> SentTotals {
        self.counters.totals()
    }

    /// Resolves when the connection has failed or closed, or did not come
    /// up within `setup_timeout` (a half-open session), with why.
    pub fn ended(
        &self,
        setup_timeout: Duration,
    ) -> impl Future<Output = &'static str> + Send + 'static {
        let mut state = self.state.clone();
        let mut up = self.state.clone();
        let cancel = self.cancel.clone();
        async move {
            let setup = async {
                let connected =
                    up.wait_for(|s| *s == RTCPeerConnectionState::Connected || is_over(*s));
                if tokio::time::timeout(setup_timeout, connected)
                    .await
                    .is_err()
                {
                    return;
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = cancel.cancelled() => "hung up",
                _ = state.wait_for(|s| is_over(*s)) => "connection ended",
                _ = setup => "ICE/DTLS did not complete in time",
            }
        }
    }
}

fn is_over(s: RTCPeerConnectionState) -> bool {
    matches!(
        s,
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
    )
}

struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: Arc<Notify>,
    label: String,
    connected_at: Arc<Mutex<Option<SystemTime>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(viewer = %self.label, %state, "viewer connection state");
        if state == RTCPeerConnectionState::Connected {
            let mut at = self.connected_at.lock().unwrap_or_else(|p| p.into_inner());
            at.get_or_insert_with(SystemTime::now);
        }
        self.state.send_replace(state);
    }
}

/// Answers `offer` with a viewer of `media`, negotiating H.264 and Opus.
/// Log lines of the viewer carry `label` (e.g. the session id).
pub async fn accept_offer(
    cfg: &PeerConfig,
    media: &StreamMedia,
    offer: &str,
    label: &str,
) -> Result<Viewer, PeerError> {
    let offered = Offered::parse(offer)?;
    let video = media.video.clone().filter(|_| offered.h264);
    let audio = media.audio.clone().filter(|_| offered.opus);
    if video.is_none() && audio.is_none() {
        let why = offered.mismatch(media.video.is_some(), media.audio.is_some());
        return Err(OfferError::NoCommonCodec(why).into());
    }
    let desc = RTCSessionDescription::offer(offer.to_owned())
        .map_err(|e| OfferError::Unparsable(e.to_string()))?;
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let gathered = Arc::new(Notify::new());
    let connected_at = Arc::new(Mutex::new(None));
    let events = Events {
        state: state_tx,
        gathered: gathered.clone(),
        label: label.to_owned(),
        connected_at: connected_at.clone(),
    };
    let pc = build_peer(cfg, events).await?;
    let result = async {
        let tracks = add_tracks(
            &pc,
            [(RtpCodecKind::Video, video), (RtpCodecKind::Audio, audio)],
        )
        .await?;
        let answer = negotiate(&pc, desc, &gathered, cfg.gather_timeout).await?;
        // The crate keeps but does not apply NAT 1:1 addresses: done here.
        let mux_port = cfg.udp_mux.as_ref().map(|m| m.local_addr().port());
        let answer = crate::candidates::rewrite_host_candidates(&answer, &cfg.nat_ips, mux_port);
        let mut forwarders = Vec::new();
        for t in tracks {
            let pt = negotiated_pt(&t.sender, t.kind)
                .await
                .ok_or_else(|| no_codec_for(t.kind))?;
            forwarders.push((t, pt));
        }
        Ok::<_, PeerError>((answer, forwarders))
    }
    .await;
    let (answer, forwarders) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let cancel = CancellationToken::new();
    let counters = Arc::new(ViewerCounters::default());
    let mut bye_tracks = Vec::new();
    for (t, pt) in forwarders {
        bye_tracks.push((t.track.clone(), t.ssrc));
        let fwd = Forwarder {
            sink: Arc::new(TrackSink(t.track)),
            source: t.source,
            video: t.kind == RtpCodecKind::Video,
            pt,
            ssrc: t.ssrc,
            cancel: cancel.clone(),
            counters: counters.clone(),
            latency: media.latency.clone(),
        };
        tokio::spawn(forward_once_connected(fwd, state.clone()).in_current_span());
    }
    Ok(Viewer {
        pc,
        counters,
        connected_at,
        tracks: bye_tracks,
        cancel,
        state,
        answer,
    })
}

/// Random hex digits (at most 64), for ICE credentials.
fn random_token(len: usize) -> String {
    let hex = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    hex[..len.min(hex.len())].to_owned()
}

fn no_codec_for(kind: RtpCodecKind) -> PeerError {
    let codec = if kind == RtpCodecKind::Video {
        "H.264 (packetization-mode=1)"
    } else {
        "Opus"
    };
    OfferError::NoCommonCodec(format!(
        "the offer's {kind} section accepts no {codec} that ffwhep can send"
    ))
    .into()
}

async fn build_peer(
    cfg: &PeerConfig,
    events: Events,
) -> Result<Arc<dyn PeerConnection>, PeerError> {
    let mut engine = MediaEngine::default();
    register_codecs(&mut engine).map_err(internal("registering codecs"))?;
    // Sender and receiver reports from the crate; NACK, PLI and FIR are
    // answered by the forwarders (from the shared history and GOP cache), so
    // the per-viewer NACK responder is left out.
    let registry =
        configure_rtcp_reports(Registry::new()).with(Slot::from(14_000), RtcpToApp::feedback());
    let ice_servers = cfg
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: vec![s.url.clone()],
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let builder = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(events))
        .with_tcp_addrs(cfg.ice_tcp_addrs.clone());
    let builder = match &cfg.udp_mux {
        Some(m) => {
            // The mux tells connections apart by our ICE ufrag: set one.
            let ufrag = random_token(16);
            let runtime = mux::MuxRuntime::new(Arc::clone(m), ufrag.clone())
                .map_err(|e| PeerError::Internal(anyhow::Error::new(e)))?;
            let settings = SettingEngineBuilder::new()
                .with_ice_credentials(ufrag, random_token(24))
                .build();
            builder
                .with_setting_engine(settings)
                .with_runtime(runtime)
                .with_udp_addrs(vec![SocketAddr::new(m.local_addr().ip(), 0)])
        }
        None => builder.with_udp_addrs(viewer_addrs(cfg)?),
    };
    let pc = builder
        .build()
        .await
        .map_err(internal("creating the peer connection"))?;
    Ok(Arc::new(pc))
}

/// A track added to a viewer's connection, before negotiation.
struct AddedTrack {
    kind: RtpCodecKind,
    source: SourceHandle,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

async fn add_tracks(
    pc: &Arc<dyn PeerConnection>,
    sources: [(RtpCodecKind, Option<SourceHandle>); 2],
) -> Result<Vec<AddedTrack>, PeerError> {
    let base_ssrc = rand::random::<u32>();
    let mut added = Vec::new();
    for (i, (kind, source)) in sources.into_iter().enumerate() {
        let Some(source) = source else { continue };
        let ssrc = base_ssrc.wrapping_add(i as u32);
        let track = Arc::new(TrackLocalStaticRTP::new(local_track(kind, ssrc)));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(internal("adding a track"))?;
        added.push(AddedTrack {
            kind,
            source,
            track,
            sender,
            ssrc,
        });
    }
    Ok(added)
}

async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    gathered: &Notify,
    gather_timeout: Duration,
) -> Result<String, PeerError> {
    pc.set_remote_description(offer)
        .await
        .map_err(|e| OfferError::Unparsable(format!("the offer was refused: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(internal("creating the answer"))?;
    pc.set_local_description(answer)
        .await
        .map_err(internal("applying the answer"))?;
    if tokio::time::timeout(gather_timeout, gathered.notified())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = gather_timeout.as_millis() as u64,
            "ICE gathering incomplete; answering with what was gathered"
        );
    }
    let local = pc.local_description().await.ok_or_else(|| {
        PeerError::Internal(anyhow::anyhow!(
            "no local description after applying the answer"
        ))
    })?;
    Ok(local.sdp)
}

fn h264_fmtp(profile_level_id: &str) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}")
}

fn video_codec(profile_level_id: &str) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: h264_fmtp(profile_level_id),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

fn audio_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Only what FFmpeg's legs carry: constrained baseline (or baseline) H.264
/// in packetization mode 1, and Opus.
fn register_codecs(engine: &mut MediaEngine) -> webrtc::error::Result<()> {
    for (pt, plid) in [(102, "42e01f"), (104, "42001f")] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: video_codec(plid),
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )?;
    }
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: audio_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
}

fn local_track(kind: RtpCodecKind, ssrc: u32) -> MediaStreamTrack {
    let codec = match kind {
        RtpCodecKind::Audio => audio_codec(),
        _ => video_codec("42e01f"),
    };
    MediaStreamTrack::new(
        "ffwhep".to_owned(),
        format!("ffwhep-{kind}"),
        format!("ffwhep-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )
}

/// The payload type this viewer negotiated for `kind`, matched on mime type
/// (and packetization mode 1 for H.264) rather than trusting list order.
async fn negotiated_pt(sender: &Arc<dyn RtpSender>, kind: RtpCodecKind) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params.rtp_parameters.codecs.iter().find_map(|c| {
        let mime = &c.rtp_codec.mime_type;
        let ok = match kind {
            RtpCodecKind::Audio => mime.eq_ignore_ascii_case(MIME_TYPE_OPUS),
            _ => {
                mime.eq_ignore_ascii_case(MIME_TYPE_H264)
                    && c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
            }
        };
        ok.then_some(c.payload_type)
    })
}
