//! What operators and probes read: `GET /status` (JSON per stream, viewers
//! included), `GET /healthz` (the process is up) and `GET /readyz` (every
//! stream has live media).

use super::bearer;
use super::error::HttpError;
use crate::engine::{SentTotals, ViewerReport};
use crate::ffmpeg::progress::Progress;
use crate::source::gop::CacheState;
use crate::stream::registry::{State, StreamInfo, Streams};
use axum::Json;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// One stream in `/status`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub id: String,
    pub state: State,
    /// FFmpeg runs started so far.
    pub runs: u32,
    pub last_exit: Option<String>,
    /// FFmpeg exits counted by reason (clean, failed, killed, stalled, stopped).
    pub exits: BTreeMap<&'static str, u64>,
    pub progress: Option<Progress>,
    /// FFmpeg progresses and every leg's port has fresh RTP.
    pub live: bool,
    pub ports: Option<Ports>,
    pub sources: BTreeMap<String, SourceStatus>,
    pub gop_cache: GopCache,
    /// What all viewers were sent over the stream's life.
    pub sent: SentTotals,
    /// From a packet's arrival on a source socket to the kernel taking its
    /// datagram toward a viewer, for one packet in 32.
    pub relay_latency: crate::latency::Summary,
    /// Live tasks of the current run: session watchers and viewers' own.
    pub tasks: usize,
    /// Pictures served, FFmpeg decodes, failures, the last decode's time.
    pub snapshots: crate::snapshot::SnapshotCounts,
    /// The decisions of the service that admits viewers, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::admission::AdmissionCounts>,
    /// Its WHIP pushes (when the profile has `whip:`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<crate::stream::push::PushStatus>,
    /// What the stream's hooks did, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::HookCounts>,
    pub viewers: Vec<ViewerStatus>,
}

#[derive(Debug, Serialize)]
pub struct Ports {
    pub video: u16,
    pub audio: u16,
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub rtcp_packets: u64,
    /// Datagrams that were neither RTP nor RTCP.
    pub errors: u64,
    /// RTP refused: not from loopback, an unexpected payload type, or a
    /// second SSRC while the first is live.
    pub rejected: u64,
    /// Packets not queued for a viewer whose queue was full.
    pub dropped: u64,
}

/// The video GOP cache: off, or what it holds now.
#[derive(Debug, Serialize)]
pub struct GopCache {
    pub enabled: bool,
    #[serde(flatten)]
    pub state: Option<CacheState>,
}

#[derive(Debug, Serialize)]
pub struct ViewerStatus {
    /// The first 8 hex digits of the session id (the rest stays secret).
    pub id: String,
    #[serde(flatten)]
    pub report: ViewerReport,
}

/// Every stream's status, viewers included.
async fn collect(snapshot: Vec<(String, StreamInfo)>) -> Vec<StreamStatus> {
    let mut out = Vec::new();
    for (id, info) in snapshot {
        let mut viewers = Vec::new();
        for (session, s) in &info.sessions {
            let id = session.get(..8).unwrap_or(session).to_owned();
            viewers.push(ViewerStatus {
                id,
                report: s.viewer.report().await,
            });
        }
        let mut pushes = Vec::new();
        for p in &info.pushes {
            pushes.push(p.status().await);
        }
        out.push(stream_status(id, info, viewers, pushes));
    }
    out
}

fn stream_status(
    id: String,
    info: StreamInfo,
    viewers: Vec<ViewerStatus>,
    pushes: Vec<crate::stream::push::PushStatus>,
) -> StreamStatus {
    let sources = info
        .sources
        .iter()
        .map(|(kind, s)| {
            let status = SourceStatus {
                rtp_packets: s.rtp_packets.load(Relaxed),
                rtp_bytes: s.rtp_bytes.load(Relaxed),
                rtcp_packets: s.rtcp_packets.load(Relaxed),
                errors: s.garbage_packets.load(Relaxed),
                rejected: s.rejected_packets.load(Relaxed),
                dropped: s.dropped.load(Relaxed),
            };
            (kind.clone(), status)
        })
        .collect();
    StreamStatus {
        id,
        state: info.state,
        runs: info.runs,
        last_exit: info.last_exit,
        exits: info.exits,
        progress: info.progress,
        live: info.live,
        ports: info.ports.map(|p| Ports {
            video: p.video,
            audio: p.audio,
        }),
        sources,
        gop_cache: GopCache {
            enabled: info.gop_cache.is_some(),
            state: info.gop_cache,
        },
        sent: info.sent,
        relay_latency: info.latency.summary(),
        tasks: info.tasks,
        snapshots: info.snapshots,
        auth: info.admissions,
        hooks: info.hooks,
        pushes,
        viewers,
    }
}

/// Refuses (401) a request without the global token, when one is set;
/// otherwise the streams it may see, each with a copy of its record.
/// Status and metrics show viewers' addresses: a stream behind its own token
/// is left out for a request that does not carry it.
pub(super) fn visible(
    streams: &Streams,
    headers: &HeaderMap,
) -> Result<Vec<(String, StreamInfo)>, HttpError> {
    let auth = bearer(headers);
    streams
        .authorize_global(auth)
        .map_err(HttpError::Unauthorized)?;
    Ok(streams
        .snapshot()
        .into_iter()
        .filter(|(id, _)| streams.may_see(id, auth))
        .collect())
}

pub(super) async fn status(
    AxState(streams): AxState<Arc<Streams>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let snapshot = visible(&streams, &headers)?;
    Ok(Json(serde_json::json!({
        "streams": collect(snapshot).await,
        "process": process(),
    }))
    .into_response())
}

/// The process as a whole: the async runtime's live tasks and workers (a
/// leak of viewers shows as tasks that never end).
fn process() -> serde_json::Value {
    let m = tokio::runtime::Handle::current().metrics();
    serde_json::json!({ "tasks": m.num_alive_tasks(), "workers": m.num_workers() })
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every stream is running with live media, else 503 naming the
/// streams that are not (a stream behind a token only by count: probes carry
/// no token).
pub(super) async fn readyz(AxState(streams): AxState<Arc<Streams>>) -> Response {
    let mut hidden = 0;
    let mut not_ready: Vec<String> = Vec::new();
    for (id, i) in streams.snapshot() {
        if i.state == State::Running && i.live {
            continue;
        }
        if !streams.may_see(&id, None) {
            hidden += 1;
            continue;
        }
        let live = if i.live { "" } else { ", no live media" };
        not_ready.push(format!("{id} ({}{live})", i.state.name()));
    }
    if hidden > 0 {
        not_ready.push(format!("{hidden} stream(s) behind a token"));
    }
    if not_ready.is_empty() {
        "ready\n".into_response()
    } else {
        HttpError::NotReady(not_ready.join(", ")).into_response()
    }
}
