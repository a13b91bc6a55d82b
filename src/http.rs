//! The HTTP server's routes: WHEP, the browser pages, status, probes and
//! metrics, over one shared registry.

use crate::registry::Streams;
use crate::{metrics, player, status, whep};
use axum::Router;
use axum::routing::get;
use std::sync::Arc;

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
    whep::router(streams, cors_origins).merge(pages)
}
