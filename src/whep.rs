//! HTTP: the WHEP endpoints and every error response they give.
//!
//! `POST /whep/{id}` makes a viewer from an SDP offer; `DELETE` on the
//! session URL it returns hangs that viewer up. The registry lock is never
//! held across an await.

use crate::auth::Denied;
use crate::offer::OfferError;
use crate::offer::Offered;
use crate::peer::{PeerError, Viewer, accept_offer};
use crate::registry::{Session, Streams, Unavailable};
use crate::trickle::SdpFrag;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::sync::Arc;
use tracing::Instrument;

/// Seconds a client is told to wait when the server is at a limit.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// An SDP offer is a few kilobytes; anything far larger is refused.
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// The `WWW-Authenticate` challenge for a refused request.
pub fn challenge(d: Denied) -> &'static str {
    match d {
        Denied::Missing => "Bearer realm=\"ffwhep\"",
        Denied::Wrong => "Bearer realm=\"ffwhep\", error=\"invalid_token\"",
    }
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

impl From<Unavailable> for WhepError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::UnknownStream => WhepError::UnknownStream,
            Unavailable::Ended => WhepError::Ended,
            Unavailable::NotLive(secs) => WhepError::NotLive(secs),
            Unavailable::Full => WhepError::Busy("the viewer limit is reached"),
        }
    }
}

/// A WHEP request that failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
enum WhepError {
    #[error("no such stream")]
    UnknownStream,
    #[error("{}", match .0 { Denied::Missing => "a bearer token is required", Denied::Wrong => "the bearer token is wrong" })]
    Unauthorized(Denied),
    #[error("the stream has ended")]
    Ended,
    #[error("no such session")]
    UnknownSession,
    #[error("the stream has no live source right now; retry in {0} s")]
    NotLive(u64),
    #[error("unsupported content type {0:?}: expected {1}")]
    ContentType(String, &'static str),
    #[error("If-Match does not match the session's ETag")]
    EtagMismatch,
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the candidate was refused: {0}")]
    BadCandidate(String),
    #[error("the offer is not UTF-8 text")]
    NotText,
    #[error("{0}")]
    Offer(#[from] OfferError),
    #[error("{0}")]
    Internal(String),
    #[error("{0}; retry later")]
    Busy(&'static str),
}

impl WhepError {
    fn status(&self) -> StatusCode {
        match self {
            WhepError::UnknownStream | WhepError::UnknownSession | WhepError::Ended => {
                StatusCode::NOT_FOUND
            }
            WhepError::NotLive(_) => StatusCode::CONFLICT,
            WhepError::ContentType(..) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WhepError::EtagMismatch => StatusCode::PRECONDITION_FAILED,
            WhepError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WhepError::BadCandidate(_) => StatusCode::BAD_REQUEST,
            WhepError::NotText | WhepError::Offer(_) => StatusCode::BAD_REQUEST,
            WhepError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WhepError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WhepError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The one place error responses are written: the status, and the reason
/// as plain text.
impl IntoResponse for WhepError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = match &self {
            WhepError::NotLive(secs) => Some(*secs),
            WhepError::Busy(_) => Some(BUSY_RETRY_AFTER_SECS),
            _ => None,
        };
        let challenge = match &self {
            WhepError::Unauthorized(d) => Some(challenge(*d)),
            _ => None,
        };
        let mut resp = (status, format!("{self}\n")).into_response();
        if let Some(c) = challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The WHEP routes over `streams`.
pub fn router(streams: Arc<Streams>, cors_origins: Vec<String>) -> Router {
    let cors_origins = Arc::new(cors_origins);
    Router::new()
        .route("/whep/{id}", post(subscribe).options(endpoint_options))
        .route(
            "/whep/{id}/{session}",
            delete(unsubscribe).patch(patch).options(session_options),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such resource\n") })
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(axum::middleware::from_fn_with_state(cors_origins, cors))
        .with_state(streams)
}

/// CORS on every WHEP response: the request's origin is allowed when it is
/// listed (or `*` is), and the headers a WHEP client reads are exposed.
async fn cors(
    State(origins): State<Arc<Vec<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let any = origins.iter().any(|o| o == "*");
    let allowed = match &origin {
        _ if any => Some(HeaderValue::from_static("*")),
        Some(o) if origins.iter().any(|a| a.as_bytes() == o.as_bytes()) => Some(o.clone()),
        _ => None,
    };
    if let Some(v) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if !any {
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Post, Accept-Patch"),
    );
    resp
}

/// Advertises the ICE servers (WHEP: `Link: <url>; rel="ice-server"`).
fn add_links(h: &mut HeaderMap, streams: &Streams) {
    for s in &streams.peer.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&s.link()) {
            h.append(header::LINK, v);
        }
    }
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

async fn endpoint_options(State(streams): State<Arc<Streams>>) -> Response {
    let mut resp = preflight("OPTIONS, POST");
    add_links(resp.headers_mut(), &streams);
    resp.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    resp
}

async fn session_options() -> Response {
    let mut resp = preflight("OPTIONS, PATCH, DELETE");
    resp.headers_mut()
        .insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    resp
}

/// The media type of trickled candidates (RFC 8840).
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// PATCH on a session: trickled candidates are added (204). An ICE restart
/// (new credentials) is not supported: 422, as the draft allows. A wrong
/// `If-Match` is 412.
async fn patch(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WhepError> {
    streams
        .authorize(&id, authorization(&headers))
        .map_err(WhepError::Unauthorized)?;
    let record = streams
        .session(&id, &session)
        .ok_or(WhepError::UnknownSession)?;
    content_type(&headers, SDPFRAG)?;
    if let Some(m) = headers.get(header::IF_MATCH)
        && m.as_bytes() != b"*"
        && m.as_bytes() != record.etag.as_bytes()
    {
        return Err(WhepError::EtagMismatch);
    }
    let text = std::str::from_utf8(&body).map_err(|_| WhepError::NotText)?;
    let frag = SdpFrag::parse(text)
        .map_err(|e| WhepError::Offer(crate::offer::OfferError::Unparsable(e)))?;
    if frag.is_restart(record.ice_ufrag.as_deref()) {
        return Err(WhepError::Unsupported(
            "ICE restart is not supported; POST a new offer instead",
        ));
    }
    for c in &frag.candidates {
        if let Err(e) = record.viewer.add_candidate(c).await {
            tracing::debug!(stream = %id, viewer = %session.get(..8).unwrap_or(""), error = %e, "trickled candidate refused");
            return Err(WhepError::BadCandidate(e));
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The request's media type is `expected` (parameters aside), or 415.
fn content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), WhepError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let ct = ct.unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(WhepError::ContentType(ct, expected))
    }
}

async fn subscribe(
    State(streams): State<Arc<Streams>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WhepError> {
    streams
        .authorize(&id, authorization(&headers))
        .map_err(WhepError::Unauthorized)?;
    let media = streams.media(&id)?;
    content_type(&headers, "application/sdp")?;
    streams.has_room(&id)?;
    // A cap on viewers being set up at once: each costs sockets and a DTLS
    // key exchange, and a flood of them must not slow those already playing.
    let _setup = streams
        .setups
        .try_acquire()
        .map_err(|_| WhepError::Busy("too many viewers are being set up"))?;
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
    let etag = format!("\"{}\"", random_hex());
    let record = Session {
        viewer: viewer.clone(),
        joined: std::time::SystemTime::now(),
        etag: etag.clone(),
        ice_ufrag: Offered::parse(offer).ok().and_then(|o| o.ice_ufrag),
    };
    let viewers = match streams.add_session(&id, &session, record) {
        Ok(n) => n,
        Err(e) => {
            viewer.hang_up().await;
            return Err(e.into());
        }
    };
    tracing::info!(stream = %id, viewer = %&session[..8], viewers, "viewer joined");
    watch_session(streams.clone(), id.clone(), session.clone(), viewer.clone());

    let mut resp = (StatusCode::CREATED, viewer.answer.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/whep/{id}/{session}");
    h.insert(header::LOCATION, header_value(&location)?);
    h.insert(header::ETAG, header_value(&etag)?);
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    add_links(h, &streams);
    Ok(resp)
}

fn header_value(s: &str) -> Result<HeaderValue, WhepError> {
    HeaderValue::from_str(s)
        .map_err(|_| WhepError::Internal(format!("cannot send header value {s:?}")))
}

/// Removes the session once its connection fails or closes on its own.
fn watch_session(streams: Arc<Streams>, id: String, session: String, viewer: Arc<Viewer>) {
    let ended = viewer.ended(streams.peer.setup_timeout);
    drop(viewer);
    tokio::spawn(async move {
        let why = ended.await;
        if let Some(v) = streams.remove_session(&id, &session) {
            v.hang_up().await;
            tracing::info!(stream = %id, viewer = %&session[..8], reason = why, "viewer left");
        }
    });
}

async fn unsubscribe(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WhepError> {
    // Only the session's holder: its unguessable URL, and the stream's token.
    streams
        .authorize(&id, authorization(&headers))
        .map_err(WhepError::Unauthorized)?;
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
