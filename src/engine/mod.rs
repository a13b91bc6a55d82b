//! WebRTC viewers, driven by ffwhep's own media engine: each viewer's
//! connection (`own_conn.rs`: ICE, DTLS and SRTP from `rtc`'s sub-crates;
//! `rtc`'s peer connection only writes the SDP) lives in one of a few shard
//! tasks (`shard.rs`), which fan each source packet out to their viewers,
//! rewritten to each viewer's payload type, SSRC and numbering
//! (`track.rs`), protected once and sent in `sendmmsg` batches.
//!
//! A [`Viewer`] is the handle the HTTP side keeps: it talks to its shard by
//! messages and sees the connection's state and counters.

mod adapt;
mod answer;
mod batch;
mod codecs;
mod config;
mod conn;
mod counters;
mod demux;
pub(crate) mod feedback;
mod identity;
mod keys;
mod ladder;
mod launch;
pub(crate) mod mux;
mod offer;
mod own_conn;
mod probe;
mod renumber;
mod report;
mod routes;
mod sender_report;
mod shard;
mod start;
mod stun_peek;
mod tcp;
mod track;

pub(crate) use config::{IceServer, PeerConfig, PortRange};
pub(crate) use counters::SentTotals;
pub(crate) use ladder::Choice;
pub use launch::{PushOffer, accept_offer, offer_push};
pub(crate) use report::ViewerReport;
pub use start::Engine;

use crate::sdp::offer::OfferError;
use crate::source::SourceHandle;
use conn::Shared;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use shard::Input;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

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
    /// The video ladder's renditions, from the best down (the first is
    /// `video`); empty without a ladder.
    pub rungs: Vec<Rendition>,
    /// Where a viewer's switch between them takes effect.
    pub switch_at: crate::profile::ladder::SwitchAt,
    /// Relay latency of the stream's sampled packets.
    pub latency: Arc<crate::latency::Histogram>,
}

/// One rendition of a video ladder, and where its packets come from.
#[derive(Clone)]
pub struct Rendition {
    /// Its name in URLs, status and logs: the height, e.g. `360p`.
    pub name: String,
    pub height: u32,
    /// The rendition's target bitrate in bits per second.
    pub bitrate: u64,
    pub source: SourceHandle,
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
    /// The ladder's renditions by name, the best first (empty without one).
    rungs: Vec<String>,
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

    /// The viewer's choice of rendition on the stream's ladder.
    pub async fn choose(&self, choice: Choice) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.shard
            .send(Input::Choose(self.id, choice, tx))
            .await
            .map_err(|_| "the media engine has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the media engine has stopped".to_owned())?
    }

    /// The ladder's renditions by name, the best first (empty without one).
    pub fn renditions(&self) -> &[String] {
        &self.rungs
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
