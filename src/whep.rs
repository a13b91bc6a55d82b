//! HTTP: the WHEP endpoints, the registry of streams and their viewer
//! sessions, and every error response.
//!
//! `POST /whep/{id}` makes a viewer from an SDP offer; `DELETE` on the
//! session URL it returns hangs that viewer up. The registry lock is never
//! held across an await.

use crate::offer::OfferError;
use crate::peer::{PeerConfig, PeerError, StreamMedia, Viewer, accept_offer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tracing::Instrument;

/// An SDP offer is a few kilobytes; anything far larger is refused.
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// Seconds a client is told to wait when no restart time is known (the
/// stream is starting or tearing down).
const RETRY_AFTER_SECS: u64 = 1;

/// Whole seconds until `next_run`, at least 1.
fn retry_after(next_run: Option<Instant>) -> u64 {
    next_run
        .map_or(RETRY_AFTER_SECS, |at| {
            let left = at.saturating_duration_since(Instant::now());
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
        .max(1)
}

/// Every stream this process serves, and their viewers.
pub struct Streams {
    peer: PeerConfig,
    inner: Mutex<HashMap<String, Slot>>,
}

#[derive(Default)]
struct Slot {
    /// The live sources; `None` while no FFmpeg run feeds the stream.
    media: Option<StreamMedia>,
    /// When the next run is due, while the stream waits to restart.
    next_run: Option<Instant>,
    sessions: HashMap<String, Arc<Viewer>>,
}

impl Streams {
    pub fn new(peer: PeerConfig) -> Arc<Self> {
        Arc::new(Self {
            peer,
            inner: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every update is a single insert or remove), so poison is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `id` known, with no media yet (POSTs get 409).
    pub fn declare(&self, id: &str) {
        self.lock().entry(id.to_owned()).or_default();
    }

    /// Puts live sources behind `id`.
    pub fn publish(&self, id: &str, media: StreamMedia) {
        let mut map = self.lock();
        let slot = map.entry(id.to_owned()).or_default();
        slot.media = Some(media);
        slot.next_run = None;
    }

    /// Marks `id` as waiting to restart at `at` (for `Retry-After`).
    pub fn wait_for_restart(&self, id: &str, at: Instant) {
        if let Some(slot) = self.lock().get_mut(id) {
            slot.next_run = Some(at);
        }
    }

    /// Forgets `id`: the stream has ended for good.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Takes the sources away from `id` and hands back every viewer, for the
    /// caller to hang up before it closes the sources.
    pub fn unpublish(&self, id: &str) -> Vec<Arc<Viewer>> {
        let mut map = self.lock();
        let Some(slot) = map.get_mut(id) else {
            return Vec::new();
        };
        slot.media = None;
        slot.sessions.drain().map(|(_, v)| v).collect()
    }

    /// Number of viewers of `id`.
    pub fn viewer_count(&self, id: &str) -> usize {
        self.lock().get(id).map_or(0, |s| s.sessions.len())
    }

    fn media(&self, id: &str) -> Result<StreamMedia, WhepError> {
        match self.lock().get(id) {
            None => Err(WhepError::UnknownStream),
            Some(Slot { media: Some(m), .. }) => Ok(m.clone()),
            Some(Slot {
                media: None,
                next_run,
                ..
            }) => Err(WhepError::NotLive(retry_after(*next_run))),
        }
    }

    /// Registers a new session; refused when the stream lost its media while
    /// the viewer was being made.
    fn add_session(&self, id: &str, session: &str, viewer: Arc<Viewer>) -> Result<(), WhepError> {
        match self.lock().get_mut(id) {
            Some(slot) if slot.media.is_some() => {
                slot.sessions.insert(session.to_owned(), viewer);
                Ok(())
            }
            Some(slot) => Err(WhepError::NotLive(retry_after(slot.next_run))),
            None => Err(WhepError::UnknownStream),
        }
    }

    fn remove_session(&self, id: &str, session: &str) -> Option<Arc<Viewer>> {
        self.lock().get_mut(id)?.sessions.remove(session)
    }
}

/// A WHEP request that failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
enum WhepError {
    #[error("no such stream")]
    UnknownStream,
    #[error("no such session")]
    UnknownSession,
    #[error("the stream has no live source right now; retry in {0} s")]
    NotLive(u64),
    #[error("unsupported content type {0:?}: expected application/sdp")]
    ContentType(String),
    #[error("the offer is not UTF-8 text")]
    NotText,
    #[error("{0}")]
    Offer(#[from] OfferError),
    #[error("{0}")]
    Internal(String),
}

impl WhepError {
    fn status(&self) -> StatusCode {
        match self {
            WhepError::UnknownStream | WhepError::UnknownSession => StatusCode::NOT_FOUND,
            WhepError::NotLive(_) => StatusCode::CONFLICT,
            WhepError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WhepError::NotText | WhepError::Offer(_) => StatusCode::BAD_REQUEST,
            WhepError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one place error responses are written: the status, and the reason
/// as plain text.
impl IntoResponse for WhepError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, format!("{self}\n")).into_response();
        if status == StatusCode::CONFLICT {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

/// The WHEP routes over `streams`.
pub fn router(streams: Arc<Streams>) -> Router {
    Router::new()
        .route("/whep/{id}", post(subscribe).options(endpoint_options))
        .route(
            "/whep/{id}/{session}",
            delete(unsubscribe).options(session_options),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such resource\n") })
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(axum::middleware::map_response(cors))
        .with_state(streams)
}

async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch"),
    );
    resp
}

fn preflight(allow: &'static str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn endpoint_options() -> Response {
    let mut resp = preflight("OPTIONS, POST");
    resp.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    resp
}

async fn session_options() -> Response {
    preflight("OPTIONS, DELETE")
}

fn is_sdp(headers: &HeaderMap) -> Result<(), WhepError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let ct = ct.unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/sdp") {
        Ok(())
    } else {
        Err(WhepError::ContentType(ct))
    }
}

async fn subscribe(
    State(streams): State<Arc<Streams>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WhepError> {
    let media = streams.media(&id)?;
    is_sdp(&headers)?;
    let offer = std::str::from_utf8(&body).map_err(|_| WhepError::NotText)?;
    let session = random_hex();
    let label = &session[..8];
    let span = tracing::info_span!("viewer", stream = %id, viewer = %label);
    let accepted = accept_offer(&streams.peer, &media, offer, label)
        .instrument(span)
        .await;
    let viewer = accepted.map_err(|e| match e {
        PeerError::Offer(o) => WhepError::Offer(o),
        PeerError::Internal(e) => {
            tracing::error!(stream = %id, error = %format!("{e:#}"), "viewer setup failed");
            WhepError::Internal("WebRTC setup failed".into())
        }
    })?;
    let viewer = Arc::new(viewer);
    if let Err(e) = streams.add_session(&id, &session, viewer.clone()) {
        viewer.hang_up().await;
        return Err(e);
    }
    tracing::info!(stream = %id, viewer = %&session[..8], viewers = streams.viewer_count(&id), "viewer joined");
    watch_session(streams.clone(), id.clone(), session.clone(), viewer.clone());

    let mut resp = (StatusCode::CREATED, viewer.answer.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/whep/{id}/{session}");
    h.insert(header::LOCATION, header_value(&location)?);
    h.insert(
        header::ETAG,
        header_value(&format!("\"{}\"", random_hex()))?,
    );
    Ok(resp)
}

fn header_value(s: &str) -> Result<HeaderValue, WhepError> {
    HeaderValue::from_str(s)
        .map_err(|_| WhepError::Internal(format!("cannot send header value {s:?}")))
}

/// Removes the session once its connection fails or closes on its own.
fn watch_session(streams: Arc<Streams>, id: String, session: String, viewer: Arc<Viewer>) {
    let ended = viewer.ended();
    drop(viewer);
    tokio::spawn(async move {
        ended.await;
        if let Some(v) = streams.remove_session(&id, &session) {
            v.hang_up().await;
            tracing::info!(stream = %id, viewer = %&session[..8], "viewer left (connection ended)");
        }
    });
}

async fn unsubscribe(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
) -> Result<Response, WhepError> {
    let viewer = streams
        .remove_session(&id, &session)
        .ok_or(WhepError::UnknownSession)?;
    viewer.hang_up().await;
    tracing::info!(stream = %id, viewer = %session.get(..8).unwrap_or(""), "viewer hung up (DELETE)");
    Ok(StatusCode::OK.into_response())
}

/// 128 random bits as 32 hex digits: a session URL nobody can guess.
fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}
