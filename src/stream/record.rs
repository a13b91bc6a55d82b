//! What the registry keeps and hands out about a stream: its state, why
//! it cannot take a viewer, the limits, a viewer's session, the record
//! readers get a copy of, a run's published media, and who may watch.

use super::push::Push;
use crate::admission::{Admission, AdmissionCounts};
use crate::auth::Secret;
use crate::engine::{SentTotals, StreamMedia, Viewer};
use crate::ffmpeg::args::LegPorts;
use crate::ffmpeg::progress::Progress;
use crate::hooks::HookCounts;
use crate::latency::Histogram;
use crate::snapshot::SnapshotCounts;
use crate::source::SourceStats;
use crate::source::gop::CacheState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::task::TaskTracker;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Binding ports and spawning FFmpeg.
    Starting,
    /// FFmpeg runs and its sources are published.
    Running,
    /// Between runs, waiting out the backoff.
    Restarting,
    /// Ended without failure.
    Stopped,
    /// Ended with a failure.
    Failed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Running,
        State::Restarting,
        State::Stopped,
        State::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// Why a stream cannot take a viewer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    UnknownStream,
    Ended,
    /// No live source; retry after this many seconds.
    NotLive(u64),
    /// The stream's or the process's viewer limit is reached.
    Full,
}

/// Limits across all streams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Viewers of all streams together.
    pub max_viewers: Option<usize>,
    /// Viewers being set up (offer to answer) at once.
    pub max_setups: usize,
}

/// One viewer session.
#[derive(Clone)]
pub struct Session {
    pub viewer: Arc<Viewer>,
    pub joined: SystemTime,
    /// The session's strong entity tag (for If-Match on PATCH).
    pub etag: String,
    /// The viewer's ICE username fragment, from its offer.
    pub ice_ufrag: Option<String>,
    /// The address its offer came from.
    pub remote: std::net::SocketAddr,
}

/// A stream's record, as a copy for readers.
#[derive(Clone)]
pub struct StreamInfo {
    pub state: State,
    /// FFmpeg runs started so far.
    pub runs: u32,
    /// How the last run ended, in words.
    pub last_exit: Option<String>,
    /// Exits counted by reason: clean, failed, killed, stalled, stopped.
    pub exits: BTreeMap<&'static str, u64>,
    pub progress: Option<Progress>,
    /// FFmpeg progresses and every leg's port has fresh RTP.
    pub live: bool,
    pub ports: Option<LegPorts>,
    /// The current run's sources, by kind.
    pub sources: Vec<(String, Arc<SourceStats>)>,
    /// What all viewers of the stream were sent, over its whole life:
    /// viewers that left (folded in as they go) and, in a snapshot, the
    /// current ones.
    pub sent: SentTotals,
    /// Relay latency of sampled packets, over the stream's life.
    pub latency: Arc<Histogram>,
    pub sessions: Vec<(String, Session)>,
    /// The video GOP cache (`None` when off or without video).
    pub gop_cache: Option<CacheState>,
    /// Tasks of the current run: session watchers and the viewers' own.
    pub tasks: usize,
    /// What the stream's snapshots cost (counted in `pictures`).
    pub snapshots: SnapshotCounts,
    /// The decisions of the service that admits its viewers, if any.
    pub admissions: Option<AdmissionCounts>,
    /// What its hooks did, if it has any.
    pub hooks: Option<HookCounts>,
    /// Its WHIP pushes.
    pub pushes: Vec<Arc<Push>>,
}

/// The media of one run, as viewers are given it.
#[derive(Clone)]
pub(crate) struct Published {
    /// The run the media belongs to: a session made for it is refused once
    /// another run (or none) is current.
    pub run: u32,
    pub media: StreamMedia,
    /// The run's tasks besides the viewers' own (session watchers); the
    /// teardown waits for them.
    pub tasks: TaskTracker,
    /// Cancelled when the run's media is withdrawn: a viewer still being
    /// set up for it gives up.
    pub ended: tokio_util::sync::CancellationToken,
}

/// Who may watch a stream, as the registry applies it.
#[derive(Clone, Default)]
pub enum Guard {
    /// Anyone (or the global token's holders, when one is set).
    #[default]
    Open,
    /// Holders of the stream's own token.
    Token(Secret),
    /// Whom the service admits; sessions are then their URLs' holders'.
    Service(Arc<Admission>),
}
