//! A WebRTC viewer made from an SDP offer. The only module that touches the
//! webrtc crate.
//!
//! Each viewer gets its own H.264 and Opus tracks. Once its connection is up,
//! one forwarder per track takes packets from that kind's source and rewrites
//! them to the payload type the viewer negotiated and the viewer's own SSRC.

mod codecs;
mod config;
mod counters;
pub(crate) mod feedback;
mod forward;
pub(crate) mod mux;
mod renumber;
mod report;
mod runtime;

pub(crate) use config::{IceServer, PeerConfig, PortRange};
pub(crate) use counters::SentTotals;
pub(crate) use report::ViewerReport;

use crate::sdp::offer::{OfferError, Offered};
use crate::source::SourceHandle;
use codecs::{local_track, negotiated_pt, register_codecs};
use counters::ViewerCounters;
use feedback::{RtcpToApp, TrackSink};
use forward::{ForwardPolicy, Forwarder};
use rtc::interceptor::Slot;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use runtime::TrackedRuntime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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

/// How long each step of a hang-up may take before it is given up on.
const HANG_UP_STEP_LIMIT: Duration = Duration::from_secs(10);

/// Awaits one step of a hang-up, at most [`HANG_UP_STEP_LIMIT`].
async fn bounded<T>(step: &'static str, f: impl Future<Output = T>) {
    if tokio::time::timeout(HANG_UP_STEP_LIMIT, f).await.is_err() {
        tracing::warn!(
            step,
            limit_s = HANG_UP_STEP_LIMIT.as_secs(),
            "a viewer's hang-up step did not finish in time"
        );
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
    /// The viewer's forwarders.
    forwarders: TaskTracker,
    /// Its connection's own tasks (spawned by the WebRTC stack).
    connection: TaskTracker,
    /// Set once BYE was said and the connection closed.
    closed: tokio::sync::OnceCell<()>,
    /// The SDP answer, with the gathered candidates.
    pub answer: String,
}

impl Viewer {
    /// Stops forwarding at once, says RTCP BYE on each track, and closes the
    /// peer connection (which sends DTLS close_notify); returns when every
    /// task of the viewer has ended, whoever hung up first. Any caller may
    /// be the one that closes (if an earlier one was cancelled half-way, the
    /// next closes); each step is bounded, so a stuck stack cannot hold up
    /// a teardown forever.
    pub async fn hang_up(&self) {
        self.cancel.cancel();
        // No media may follow the BYE: the forwarders end first.
        self.forwarders.close();
        bounded("forwarders", self.forwarders.wait()).await;
        bounded("close", self.closed.get_or_init(|| self.say_goodbye())).await;
        // close() returns once the stack's driver has stopped.
        self.connection.close();
        bounded("connection tasks", self.connection.wait()).await;
    }

    /// The live tasks of this viewer.
    pub fn tasks(&self) -> usize {
        self.forwarders.len() + self.connection.len()
    }

    async fn say_goodbye(&self) {
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
    pub async fn add_candidate(&self, c: &crate::sdp::trickle::Candidate) -> Result<(), String> {
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
    ) -> impl Future<Output = &'static str> + Send + use<> {
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
    let connection = TaskTracker::new();
    let pc = build_peer(cfg, events, &connection).await?;
    let result = async {
        let tracks = add_tracks(
            &pc,
            [(RtpCodecKind::Video, video), (RtpCodecKind::Audio, audio)],
        )
        .await?;
        let answer = negotiate(&pc, desc, &gathered, cfg.gather_timeout).await?;
        // The crate keeps but does not apply NAT 1:1 addresses: done here.
        let mux_port = cfg.udp_mux.as_ref().map(|m| m.local_addr().port());
        let answer =
            crate::sdp::candidates::rewrite_host_candidates(&answer, &cfg.nat_ips, mux_port);
        let mut negotiated = Vec::new();
        for t in tracks {
            let pt = negotiated_pt(&t.sender, t.kind)
                .await
                .ok_or_else(|| no_codec_for(t.kind))?;
            negotiated.push((t, pt));
        }
        Ok::<_, PeerError>((answer, negotiated))
    }
    .await;
    let (answer, negotiated) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = pc.close().await;
            connection.close();
            connection.wait().await;
            return Err(e);
        }
    };
    let cancel = CancellationToken::new();
    let forwarders = TaskTracker::new();
    let counters = Arc::new(ViewerCounters::default());
    let mut bye_tracks = Vec::new();
    for (t, pt) in negotiated {
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
            policy: ForwardPolicy::default(),
        };
        forwarders.spawn(forward_once_connected(fwd, state.clone()).in_current_span());
    }
    Ok(Viewer {
        pc,
        counters,
        connected_at,
        tracks: bye_tracks,
        cancel,
        state,
        forwarders,
        connection,
        closed: tokio::sync::OnceCell::new(),
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

/// A peer connection whose tasks are spawned into `tasks`.
async fn build_peer(
    cfg: &PeerConfig,
    events: Events,
    tasks: &TaskTracker,
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
    let no_runtime = |e: std::io::Error| PeerError::Internal(anyhow::Error::new(e));
    let builder = match &cfg.udp_mux {
        Some(m) => {
            // The mux tells connections apart by our ICE ufrag: set one.
            let ufrag = random_token(16);
            let runtime = TrackedRuntime::new(tasks.clone(), Some((Arc::clone(m), ufrag.clone())))
                .map_err(no_runtime)?;
            let settings = SettingEngineBuilder::new()
                .with_ice_credentials(ufrag, random_token(24))
                .build();
            builder
                .with_setting_engine(settings)
                .with_runtime(runtime)
                .with_udp_addrs(vec![SocketAddr::new(m.local_addr().ip(), 0)])
        }
        None => builder
            .with_runtime(TrackedRuntime::new(tasks.clone(), None).map_err(no_runtime)?)
            .with_udp_addrs(config::viewer_addrs(cfg)?),
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
