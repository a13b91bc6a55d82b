//! WebRTC viewers, driven by ffwhep's own media engine: the `rtc` sans-IO
//! core of each viewer's connection lives in one of a few shard tasks
//! (`shard.rs`), which fan each source packet out to their viewers,
//! rewritten to each viewer's payload type, SSRC and numbering
//! (`track.rs`), protected by the core and sent in `sendmmsg` batches.
//!
//! A [`Viewer`] is the handle the HTTP side keeps: it talks to its shard by
//! messages and sees the connection's state and counters.

mod answer;
mod batch;
mod codecs;
mod config;
mod conn;
mod counters;
pub(crate) mod feedback;
mod identity;
pub(crate) mod mux;
mod offer;
mod probe;
mod renumber;
mod report;
mod routes;
mod shard;
mod start;
mod stun_peek;
mod tcp;
mod track;

pub(crate) use config::{IceServer, PeerConfig, PortRange};
pub(crate) use counters::SentTotals;
pub(crate) use report::ViewerReport;
pub use start::Engine;

use crate::sdp::offer::{OfferError, Offered};
use crate::source::SourceHandle;
use conn::{Conn, ConnTrack, Shared};
use counters::ViewerCounters;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use shard::{FEED_QUEUE, Input};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use track::{ForwardPolicy, TrackOut};

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

/// Why no viewer could be made.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("WebRTC setup failed: {0:#}")]
    Internal(anyhow::Error),
}

/// A connected (or connecting) viewer.
pub struct Viewer {
    id: u64,
    shard: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Set once BYE was said and the connection closed.
    closed: tokio::sync::OnceCell<()>,
    /// The SDP answer, with the gathered candidates.
    pub answer: String,
}

impl Viewer {
    /// Stops sending at once, says RTCP BYE on each track, and closes the
    /// connection (DTLS close_notify); returns once the shard has sent them
    /// and forgotten the connection, whoever hung up first. Bounded, so a
    /// stuck shard cannot hold up a teardown forever.
    pub async fn hang_up(&self) {
        self.shared.cancel.cancel();
        let close = async {
            let (tx, rx) = oneshot::channel();
            if self.shard.send(Input::HangUp(self.id, tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        bounded("close", self.closed.get_or_init(|| close)).await;
    }

    /// The live tasks of this viewer: none, its connection lives in a shard.
    pub fn tasks(&self) -> usize {
        0
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
        let (tx, rx) = oneshot::channel();
        self.shard
            .send(Input::Candidate(self.id, init, tx))
            .await
            .map_err(|_| "the media engine has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the media engine has stopped".to_owned())?
    }

    /// What this viewer was sent so far.
    pub fn totals(&self) -> SentTotals {
        self.shared.counters.totals()
    }

    /// Resolves with true once the connection is up, false if it failed or
    /// closed first.
    pub fn connected(&self) -> impl Future<Output = bool> + Send + use<> {
        let mut state = self.state.clone();
        async move {
            state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected || is_over(*s))
                .await
                .is_ok_and(|s| *s == RTCPeerConnectionState::Connected)
        }
    }

    /// Resolves when the connection has failed or closed, or did not come
    /// up within `setup_timeout` (a half-open session), with why.
    pub fn ended(
        &self,
        setup_timeout: Duration,
    ) -> impl Future<Output = &'static str> + Send + use<> {
        let mut state = self.state.clone();
        let mut up = self.state.clone();
        let cancel = self.shared.cancel.clone();
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

/// Random hex digits (at most 64), for ICE credentials.
fn random_token(len: usize) -> String {
    let hex = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    hex[..len.min(hex.len())].to_owned()
}

/// Identifies a source across shards (its feed).
fn feed_key(source: &SourceHandle) -> usize {
    Arc::as_ptr(&source.stats) as usize
}

/// Answers `offer` with a viewer of `media`, negotiating H.264 and Opus, on
/// the engine's least busy shard. Log lines of the viewer carry the
/// caller's span (stream and session id).
pub async fn accept_offer(
    engine: &Engine,
    media: &StreamMedia,
    offer: &str,
) -> Result<Viewer, PeerError> {
    let offered = Offered::parse(offer)?;
    let video = media.video.clone().filter(|_| offered.h264);
    let audio = media.audio.clone().filter(|_| offered.opus);
    if video.is_none() && audio.is_none() {
        let why = offered.mismatch(media.video.is_some(), media.audio.is_some());
        return Err(OfferError::NoCommonCodec(why).into());
    }
    let shard = engine.pick();
    let locals = engine.gather(&engine.shards[shard]).await;
    let sources = by_kind(video, audio);
    let kinds: Vec<RtpCodecKind> = sources.iter().map(|(k, _)| *k).collect();
    let id = engine.credentials();
    let now = Instant::now();
    let answered = answer::answer(offer, &kinds, &id, &locals, now)?;
    // The stack keeps NAT 1:1 addresses out of its candidates: done here.
    let answer =
        crate::sdp::candidates::rewrite_host_candidates(&answered.answer, &engine.config.nat_ips);
    let launch = Launch {
        shard,
        core: answered.core,
        tracks: answered.tracks,
        sources,
        ufrag: id.ufrag,
        remote: (offered.ice_ufrag, offered.ice_pwd),
        controlling: false,
        made_at: now,
        sdp: answer,
    };
    launch.run(engine, media).await
}

/// A connection ffwhep offers to an SFU (a WHIP push), waiting for the
/// answer.
pub struct PushOffer {
    shard: usize,
    offering: offer::Offering,
    sources: Vec<(RtpCodecKind, SourceHandle)>,
    ufrag: String,
    made_at: Instant,
    /// The SDP offer, with our candidates (NAT 1:1 addresses in place).
    pub offer: String,
}

/// Offers `media` (H.264 and Opus, send-only) on the least busy shard.
pub async fn offer_push(engine: &Engine, media: &StreamMedia) -> Result<PushOffer, PeerError> {
    let sources = by_kind(media.video.clone(), media.audio.clone());
    let kinds: Vec<RtpCodecKind> = sources.iter().map(|(k, _)| *k).collect();
    let shard = engine.pick();
    let locals = engine.gather(&engine.shards[shard]).await;
    let id = engine.credentials();
    let now = Instant::now();
    let offering = offer::offer(&kinds, &id, &locals, now)?;
    let offer =
        crate::sdp::candidates::rewrite_host_candidates(&offering.offer, &engine.config.nat_ips);
    Ok(PushOffer {
        shard,
        offering,
        sources,
        ufrag: id.ufrag,
        made_at: now,
        offer,
    })
}

impl PushOffer {
    /// The shard its connection lives in.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Applies the SFU's `answer`; the connection then comes up in its
    /// shard and sends `media` (the GOP first) once it is up.
    pub async fn connect(
        self,
        engine: &Engine,
        media: &StreamMedia,
        answer: &str,
    ) -> Result<Viewer, PeerError> {
        let answered = Offered::parse(answer).ok();
        let (core, tracks) = self
            .offering
            .accept(answer, Instant::now())
            .map_err(OfferError::Unparsable)?;
        let remote = answered.map_or((None, None), |a| (a.ice_ufrag, a.ice_pwd));
        let launch = Launch {
            shard: self.shard,
            core,
            tracks,
            sources: self.sources,
            ufrag: self.ufrag,
            remote,
            controlling: true,
            made_at: self.made_at,
            sdp: String::new(),
        };
        launch.run(engine, media).await
    }
}

impl Engine {
    /// Fresh ICE credentials, and the engine's certificate, for a new
    /// connection.
    fn credentials(&self) -> answer::Credentials {
        answer::Credentials {
            ufrag: random_token(16),
            pwd: random_token(24),
            certificate: self.certificate(),
        }
    }

    /// A trickle fragment (`application/trickle-ice-sdpfrag`) for the push
    /// on `shard` that offered `offer`: the server-reflexive candidates the
    /// STUN servers among `ice_servers` see of the shard's sockets; `None`
    /// when they see none.
    pub async fn reflexive_fragment(
        &self,
        shard: usize,
        offer: &str,
        ice_servers: &[String],
    ) -> Option<String> {
        let urls: Vec<&str> = ice_servers.iter().map(String::as_str).collect();
        let found = self.reflexive_of(&self.shards[shard], &urls).await;
        let candidates: Vec<String> = found
            .iter()
            .filter_map(|l| answer::candidate(l).ok())
            .map(|c| c.candidate)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        crate::sdp::trickle::fragment_for(offer, &candidates)
    }
}

/// The sources there are, by kind.
fn by_kind(
    video: Option<SourceHandle>,
    audio: Option<SourceHandle>,
) -> Vec<(RtpCodecKind, SourceHandle)> {
    [(RtpCodecKind::Video, video), (RtpCodecKind::Audio, audio)]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect()
}

/// A core with its description done, ready to live in its shard.
struct Launch {
    shard: usize,
    core: rtc::peer_connection::RTCPeerConnection,
    tracks: Vec<answer::Negotiated>,
    sources: Vec<(RtpCodecKind, SourceHandle)>,
    ufrag: String,
    /// The peer's ICE ufrag and pwd, for our check.
    remote: (Option<String>, Option<String>),
    /// Whether we are the controlling ICE agent (we offered).
    controlling: bool,
    made_at: Instant,
    /// Our SDP (the answer), handed back on the viewer.
    sdp: String,
}

impl Launch {
    /// Gives the connection to its shard (with a feed of each source the
    /// shard lacks); the handle to it.
    async fn run(self, engine: &Engine, media: &StreamMedia) -> Result<Viewer, PeerError> {
        let shard = &engine.shards[self.shard];
        // A feed of each source the shard has none of yet (should two joins
        // race, the shard keeps the first).
        for (_, source) in &self.sources {
            let key = feed_key(source);
            if shard
                .fed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
            {
                continue;
            }
            let (tx, rx) = mpsc::channel(FEED_QUEUE);
            if source.subscribe(tx).await {
                let _ = shard.inbox.send(Input::Feed(key, rx)).await;
            }
        }
        let counters = Arc::new(ViewerCounters::default());
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let shared = Arc::new(Shared {
            state: state_tx,
            counters: counters.clone(),
            connected_at: Mutex::new(None),
            start: Mutex::new(Default::default()),
            cancel: CancellationToken::new(),
        });
        let tracks = self
            .tracks
            .iter()
            .zip(&self.sources)
            .map(|((kind, sender, pt, ssrc), (_, source))| ConnTrack {
                sender: *sender,
                feed_key: feed_key(source),
                out: TrackOut::new(
                    source.clone(),
                    *kind == RtpCodecKind::Video,
                    *pt,
                    *ssrc,
                    counters.clone(),
                    ForwardPolicy::default(),
                ),
            })
            .collect();
        let id = engine.next_id();
        let ufrag = self.ufrag;
        let conn = Conn {
            id,
            ufrag: ufrag.clone(),
            core: self.core,
            tracks,
            shared: shared.clone(),
            latency: media.latency.clone(),
            span: tracing::Span::current(),
            scheduled: None,
            addrs: Vec::new(),
            tcp_writers: Default::default(),
            remote: None,
            learned: Vec::new(),
            held_nomination: None,
            connected: false,
            answered_at: self.made_at,
            start_at: None,
            credentials: self
                .remote
                .0
                .zip(self.remote.1)
                .map(|(remote_ufrag, remote_pwd)| probe::Credentials {
                    local_ufrag: ufrag.clone(),
                    remote_ufrag,
                    remote_pwd,
                    controlling: self.controlling,
                }),
            probe: None,
            sampled: None,
        };
        engine.routes.register(&ufrag, shard.inbox.clone());
        // From here the connection lives in the shard: the viewer (or, if
        // this future is dropped first, its drop) hangs it up.
        let viewer = Viewer {
            id,
            shard: shard.inbox.clone(),
            shared,
            state,
            closed: tokio::sync::OnceCell::new(),
            answer: self.sdp,
        };
        let (joined_tx, joined) = oneshot::channel();
        let stopped = || PeerError::Internal(anyhow::anyhow!("the media engine has stopped"));
        shard
            .inbox
            .send(Input::Join(Box::new(conn), joined_tx))
            .await
            .map_err(|_| stopped())?;
        joined.await.map_err(|_| stopped())?;
        Ok(viewer)
    }
}

/// A viewer dropped without a hang-up (as when its setup is abandoned)
/// still leaves its shard: the connection is closed there.
impl Drop for Viewer {
    fn drop(&mut self) {
        if self.closed.get().is_none() {
            let (tx, _) = oneshot::channel();
            let _ = self.shard.try_send(Input::HangUp(self.id, tx));
        }
    }
}
