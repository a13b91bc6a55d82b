//! Every error response ffwhep gives over HTTP, and the one function that
//! writes them: the status, a plain-text reason, and `WWW-Authenticate` or
//! `Retry-After` where the status calls for one.

use crate::auth::Denied;
use crate::sdp::offer::OfferError;
use crate::stream::registry::Unavailable;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client is told to wait when the server is at a limit.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// The `WWW-Authenticate` challenge for a refused request.
fn challenge(d: Denied) -> &'static str {
    match d {
        Denied::Missing => "Bearer realm=\"ffwhep\"",
        Denied::Wrong => "Bearer realm=\"ffwhep\", error=\"invalid_token\"",
    }
}

impl From<Unavailable> for HttpError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::UnknownStream => HttpError::UnknownStream,
            Unavailable::Ended => HttpError::Ended,
            Unavailable::NotLive(secs) => HttpError::NotLive(secs),
            Unavailable::Full => HttpError::Busy("the viewer limit is reached"),
        }
    }
}

/// A request that failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("no such stream")]
    UnknownStream,
    #[error("no such resource")]
    UnknownPath,
    #[error("the request took too long")]
    Timeout,
    #[error("not ready: {0}")]
    NotReady(String),
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
    /// A snapshot that cannot be made yet: the reason, and when to retry.
    #[error("{0}; retry in {1} s")]
    NoPictureYet(String, u64),
    /// A snapshot that cannot be made of this stream.
    #[error("{0}")]
    NoPicture(&'static str),
    #[error("{0}")]
    BadQuery(String),
    /// The service that admits viewers gave no decision.
    #[error("{0}; retry later")]
    AuthUnavailable(String),
    /// Refused by the HTTP layer itself before a handler ran (a method not
    /// allowed, a body over the limit, a malformed path or query): its
    /// status and reason.
    #[error("{1}")]
    Refused(StatusCode, String),
}

impl HttpError {
    fn status(&self) -> StatusCode {
        match self {
            HttpError::UnknownStream
            | HttpError::UnknownPath
            | HttpError::UnknownSession
            | HttpError::Ended => StatusCode::NOT_FOUND,
            HttpError::Timeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::NotLive(_) => StatusCode::CONFLICT,
            HttpError::ContentType(..) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::EtagMismatch => StatusCode::PRECONDITION_FAILED,
            HttpError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::BadCandidate(_) => StatusCode::BAD_REQUEST,
            HttpError::NotText | HttpError::Offer(_) => StatusCode::BAD_REQUEST,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Busy(_) | HttpError::NoPictureYet(..) | HttpError::AuthUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::NoPicture(_) => StatusCode::CONFLICT,
            HttpError::BadQuery(_) => StatusCode::BAD_REQUEST,
            HttpError::Refused(status, ..) => *status,
        }
    }
}

/// The one place error responses are written: the status, the reason as
/// plain text, and the headers the status calls for.
impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = match &self {
            HttpError::NotLive(secs) => Some(*secs),
            HttpError::Busy(_) | HttpError::AuthUnavailable(_) => Some(BUSY_RETRY_AFTER_SECS),
            HttpError::NoPictureYet(_, secs) => Some(*secs),
            _ => None,
        };
        let challenge = match &self {
            HttpError::Unauthorized(d) => Some(challenge(*d)),
            _ => None,
        };
        let mut resp = (status, format!("{self}\n")).into_response();
        resp.extensions_mut().insert(Written);
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

/// Marks a response written here.
#[derive(Clone, Copy)]
struct Written;

/// Longest body of the HTTP layer's own refusal that is kept as the reason.
const MAX_REASON: usize = 1024;

/// Middleware: an error response that did not come from here (axum's own
/// 405, 413 and extractor rejections) is written again here, with its reason
/// as plain text (its own text, or the status's name).
pub(super) async fn rewrite_others(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.extensions().get::<Written>().is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_REASON)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    let mut resp = HttpError::Refused(status, reason).into_response();
    // Its other headers stay: `Allow` of a 405, CORS.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            resp.headers_mut().append(name, value.clone());
        }
    }
    resp
}
