//! The HTTP server: its routes (WHEP, the browser pages, status, probes and
//! metrics, over one shared registry), its limits, and plain or TLS serving.

use crate::registry::Streams;
use crate::{metrics, player, status, whep};
use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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

/// A certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `cors_origins`: the origins allowed to call WHEP from a browser (`*`: any).
pub fn router(streams: Arc<Streams>, cors_origins: Vec<String>) -> Router {
    let pages = Router::new()
        .route("/", get(player::index))
        .route("/play/{id}", get(player::play))
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(streams.clone());
    whep::router(streams, cors_origins)
        .merge(pages)
        .layer(axum::middleware::from_fn(request_timeout))
}

async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response(),
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`
/// fires, then lets open requests finish for up to 2 s.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<&Tls>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        on_stop.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let make = app.into_make_service();
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
            let mut server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            limit(server.http_builder());
            tokio::spawn(async move { report(server.serve(make).await) })
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            limit(server.http_builder());
            tokio::spawn(async move { report(server.serve(make).await) })
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
