//! The HTTP server: its routes (WHEP, the browser pages, status, probes and
//! metrics, over one shared registry), its limits, and plain or TLS serving.
//! Every error response is written by `error`.

mod error;
mod layer;
mod metrics;
mod pages;
mod snapshot;
mod status;
mod whep;

use crate::admission::{Ask, Refusal};
use crate::stream::registry::Streams;
use anyhow::Context;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::HttpError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest a request may take, setup of a viewer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection may buffer while reading a request's headers.
const MAX_HEADER_BUFFER: usize = 64 * 1024;

/// The request's `Authorization` header, as bytes.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

/// Refuses (401) a request for stream `id` without the token it needs.
fn authorized(streams: &Streams, id: &str, headers: &HeaderMap) -> Result<(), HttpError> {
    streams
        .authorize(id, bearer(headers))
        .map_err(HttpError::Unauthorized)
}

/// The session `session` of stream `id`, for a request that may act on it
/// (it carries the stream's token, when it has one).
fn session_of(
    streams: &Streams,
    id: &str,
    session: &str,
    headers: &HeaderMap,
) -> Result<crate::stream::registry::Session, HttpError> {
    authorized(streams, id, headers)?;
    streams
        .session(id, session)
        .ok_or(HttpError::UnknownSession)
}

/// For a stream whose viewers a service admits: asks it about this request
/// (401 or 403 with its reason when it refuses, 503 when it cannot say).
async fn admitted(
    streams: &Streams,
    id: &str,
    headers: &HeaderMap,
    remote: std::net::SocketAddr,
) -> Result<(), HttpError> {
    let Some(service) = streams.admission(id) else {
        return Ok(());
    };
    let text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(text)
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let ask = Ask {
        stream: id.to_owned(),
        token,
        remote: Some(remote.to_string()),
        user_agent: headers.get(header::USER_AGENT).and_then(text),
    };
    service
        .admit(&ask, Some(remote.ip()))
        .await
        .map_err(|r| match r {
            Refusal::Denied(status, why) => HttpError::Refused(
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::FORBIDDEN),
                why,
            ),
            Refusal::Unavailable(why) => HttpError::AuthUnavailable(why),
        })
}

/// A certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `cors_origins`: the origins allowed to call WHEP from a browser (`*`: any);
/// `ffmpeg`: the program that decodes snapshots.
pub(crate) fn router(
    streams: Arc<Streams>,
    cors_origins: Vec<String>,
    ffmpeg: std::ffi::OsString,
) -> Router {
    let pages = Router::new()
        .route("/", get(pages::index))
        .route("/streams", get(pages::streams))
        .route("/play/{id}", get(pages::play))
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(streams.clone());
    whep::router(streams.clone(), cors_origins)
        .merge(pages)
        .merge(snapshot::router(streams, ffmpeg))
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::middleware::from_fn(error::rewrite_others))
}

async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => HttpError::Timeout.into_response(),
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`
/// fires, then lets open requests finish for up to 2 s.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<&Tls>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let make = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // One task serves and, when `stop` fires, shuts down gracefully.
    let until_stopped =
        move |serving: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>,
              handle: axum_server::Handle<std::net::SocketAddr>| async move {
            tokio::pin!(serving);
            tokio::select! {
                r = &mut serving => report(r),
                _ = stop.cancelled() => {
                    handle.graceful_shutdown(Some(Duration::from_secs(2)));
                    report(serving.await);
                }
            }
        };
    let task = match tls {
        Some(t) => {
            // One process-wide provider; a second install is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        t.cert.display(),
                        t.key.display()
                    )
                })?;
            let mut server = axum_server::from_tcp_rustls(listener, config)?.handle(handle.clone());
            limit(server.http_builder());
            tokio::spawn(until_stopped(Box::pin(server.serve(make)), handle))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle.clone());
            limit(server.http_builder());
            tokio::spawn(until_stopped(Box::pin(server.serve(make)), handle))
        }
    };
    Ok(task)
}

/// Header limits against slow or oversized requests.
fn limit(b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER);
}

fn report(r: std::io::Result<()>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
