//! The WHEP endpoints: `POST /whep/{id}` makes a viewer from an SDP offer
//! (`?quality=` picks its rendition on a ladder); `PATCH` on the session URL
//! it returns adds trickled candidates, `DELETE` hangs the viewer up, and
//! its `/layer` URL chooses the rendition (`layer.rs`). The registry lock is
//! never held across an await.

use super::error::HttpError;
use super::layer;
use super::{admitted, authorized, bearer};
use crate::engine::{Choice, PeerError, Viewer, accept_offer};
use crate::sdp::offer::{OfferError, Offered};
use crate::sdp::trickle::SdpFrag;
use crate::stream::registry::{Published, Session, Streams, Unavailable};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use std::sync::Arc;
use tracing::Instrument;

/// An SDP offer is a few kilobytes; anything far larger is refused.
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// The WHEP routes over `streams`.
pub(super) fn router(streams: Arc<Streams>, cors_origins: Vec<String>) -> Router {
    let cors_origins = Arc::new(cors_origins);
    Router::new()
        .route("/whep/{id}", post(subscribe).options(endpoint_options))
        .route(
            "/whep/{id}/{session}",
            delete(unsubscribe).patch(patch).options(session_options),
        )
        .route(
            "/whep/{id}/{session}/layer",
            get(super::layer::get).post(super::layer::post),
        )
        .fallback(|| async { HttpError::UnknownPath })
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

/// Advertises the ICE servers (WHEP: `Link: <url>; rel="ice-server"`), TURN
/// credentials included: only in answers to a request that passed the
/// stream's auth.
fn add_links(h: &mut HeaderMap, streams: &Streams) {
    for s in &streams.peer.config.ice_servers {
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

/// OPTIONS on the endpoint: the ICE servers only for a known stream and a
/// request that carries its token (a browser's CORS preflight carries none).
async fn endpoint_options(
    State(streams): State<Arc<Streams>>,
    Path(id): Path<String>,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let mut resp = preflight("OPTIONS, POST");
    // The ICE servers (TURN credentials among them) only for a request that
    // may watch: its token, or the stream's service says so.
    if streams.knows(&id)
        && streams.authorize(&id, bearer(&headers)).is_ok()
        && admitted(&streams, &id, &headers, remote).await.is_ok()
    {
        add_links(resp.headers_mut(), &streams);
    }
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
) -> Result<Response, HttpError> {
    let record = super::session_of(&streams, &id, &session, &headers)?;
    content_type(&headers, SDPFRAG)?;
    if let Some(m) = headers.get(header::IF_MATCH)
        && m.as_bytes() != b"*"
        && m.as_bytes() != record.etag.as_bytes()
    {
        return Err(HttpError::EtagMismatch);
    }
    let text = std::str::from_utf8(&body).map_err(|_| HttpError::NotText)?;
    let frag = SdpFrag::parse(text).map_err(|e| HttpError::Offer(OfferError::Unparsable(e)))?;
    if frag.is_restart(record.ice_ufrag.as_deref()) {
        return Err(HttpError::Unsupported(
            "ICE restart is not supported; POST a new offer instead",
        ));
    }
    for c in &frag.candidates {
        if let Err(e) = record.viewer.add_candidate(c).await {
            tracing::debug!(stream = %id, viewer = %session.get(..8).unwrap_or(""), error = %e, "trickled candidate refused");
            return Err(HttpError::BadCandidate(e));
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The request's media type is `expected` (parameters aside), or 415.
pub(super) fn content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let ct = ct.unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(HttpError::ContentType(ct, expected))
    }
}

async fn subscribe(
    State(streams): State<Arc<Streams>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    authorized(&streams, &id, &headers)?;
    let published = streams.media(&id)?;
    let quality = layer::quality_param(query.as_deref()).unwrap_or_default();
    let choice = layer::choice(&published.media.rungs, &quality)?;
    admitted(&streams, &id, &headers, remote).await?;
    content_type(&headers, "application/sdp")?;
    streams.has_room(&id)?;
    // A cap on viewers being set up at once: each costs sockets and a DTLS
    // key exchange, and a flood of them must not slow those already playing.
    let permit = streams
        .setups
        .clone()
        .try_acquire_owned()
        .map_err(|_| HttpError::Busy("too many viewers are being set up"))?;
    let offer = std::str::from_utf8(&body)
        .map_err(|_| HttpError::NotText)?
        .to_owned();
    // The setup is a task of the run: it finishes (and frees what it made
    // when refused) even if the client goes away, and the run's teardown
    // waits for it.
    let setup = set_up(
        streams.clone(),
        id.clone(),
        published.clone(),
        offer,
        remote,
        choice,
    );
    let joined = published
        .tasks
        .spawn(async move {
            let joined = setup.await;
            drop(permit);
            joined
        })
        .await
        .map_err(|e| HttpError::Internal(format!("the viewer's setup failed: {e}")))??;

    let mut resp = (StatusCode::CREATED, joined.answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    let location = format!("/whep/{id}/{}", joined.session);
    h.insert(header::LOCATION, header_value(&location)?);
    h.insert(header::ETAG, header_value(&joined.etag)?);
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    add_links(h, &streams);
    if !published.media.rungs.is_empty() {
        let link = format!("<{location}/layer>; rel=\"{}\"", layer::LAYER_REL);
        h.append(header::LINK, header_value(&link)?);
    }
    Ok(resp)
}

/// A viewer that joined: what its 201 carries.
struct Joined {
    session: String,
    etag: String,
    answer: String,
}

/// Makes a viewer of run `published` from `offer` and registers its
/// session; a viewer whose run ended meanwhile is hung up and refused.
async fn set_up(
    streams: Arc<Streams>,
    id: String,
    published: Published,
    offer: String,
    remote: std::net::SocketAddr,
    choice: Choice,
) -> Result<Joined, HttpError> {
    let session = random_hex();
    let label = session[..8].to_owned();
    let span = tracing::info_span!("viewer", stream = %id, viewer = %label);
    let accept = accept_offer(&streams.peer, &published.media, &offer, choice).instrument(span);
    let accepted = tokio::select! {
        a = accept => a,
        _ = published.ended.cancelled() => {
            // Its run ended while the answer was being made (e.g. waiting
            // for a STUN server): the teardown does not wait for it.
            let e = streams.media(&id).err().unwrap_or(Unavailable::NotLive(1));
            tracing::info!(stream = %id, viewer = %label, run = published.run, reason = ?e, "viewer refused after setup: its run ended");
            return Err(e.into());
        }
    };
    let viewer = accepted.map_err(|e| match e {
        PeerError::Offer(o) => HttpError::Offer(o),
        PeerError::Internal(e) => {
            tracing::error!(stream = %id, error = %format!("{e:#}"), "viewer setup failed");
            HttpError::Internal("WebRTC setup failed".into())
        }
    })?;
    let viewer = Arc::new(viewer);
    let etag = format!("\"{}\"", random_hex());
    let record = Session {
        viewer: viewer.clone(),
        joined: std::time::SystemTime::now(),
        etag: etag.clone(),
        ice_ufrag: Offered::parse(&offer).ok().and_then(|o| o.ice_ufrag),
        remote,
    };
    let watcher = watch_session(streams.clone(), id.clone(), session.clone(), viewer.clone());
    match streams.add_session(&id, &session, published.run, record, watcher) {
        Ok(viewers) => {
            tracing::info!(stream = %id, viewer = %label, viewers, "viewer joined");
            Ok(Joined {
                session,
                etag,
                answer: viewer.answer.clone(),
            })
        }
        Err(e) => {
            // E.g. the run ended while the offer was answered: nothing of
            // the viewer may outlive it.
            tracing::info!(stream = %id, viewer = %label, run = published.run, reason = ?e, "viewer refused after setup");
            viewer.hang_up().await;
            Err(e.into())
        }
    }
}

fn header_value(s: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(s)
        .map_err(|_| HttpError::Internal(format!("cannot send header value {s:?}")))
}

/// What ends a session: once its connection fails or closes on its own, or
/// it is hung up (DELETE, teardown), the session is removed and the hang-up
/// completed here, among the run's tasks, whoever started it.
fn watch_session(
    streams: Arc<Streams>,
    id: String,
    session: String,
    viewer: Arc<Viewer>,
) -> impl Future<Output = ()> + Send + 'static {
    let ended = viewer.ended(streams.peer.config.setup_timeout);
    async move {
        let why = ended.await;
        let removed = streams.remove_session(&id, &session, why).is_some();
        viewer.hang_up().await;
        if removed {
            tracing::info!(stream = %id, viewer = %&session[..8], reason = why, "viewer left");
        }
    }
}

async fn unsubscribe(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    // Only the session's holder: its unguessable URL, and the stream's token.
    authorized(&streams, &id, &headers)?;
    let viewer = streams
        .remove_session(&id, &session, "delete")
        .ok_or(HttpError::UnknownSession)?;
    viewer.hang_up().await;
    tracing::info!(stream = %id, viewer = %session.get(..8).unwrap_or(""), "viewer hung up (DELETE)");
    Ok(StatusCode::OK.into_response())
}

/// 128 random bits as 32 hex digits: a session URL nobody can guess.
fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}
