//! `GET /snapshot/{id}.jpg[?width=N]`: the stream's current picture, with
//! the stream's token rules.

use super::error::HttpError;
use super::{admitted, authorized};
use crate::snapshot::SnapshotError;
use crate::stream::registry::Streams;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::ffi::OsString;
use std::sync::Arc;

/// The widths a snapshot may be scaled to.
const WIDTHS: std::ops::RangeInclusive<u32> = 16..=3840;

struct Snapshots {
    streams: Arc<Streams>,
    ffmpeg: OsString,
    /// Decodes that may run at once, across streams (each on one thread):
    /// half the cores, so snapshots never take the media path's CPU.
    decoders: tokio::sync::Semaphore,
}

pub(super) fn router(streams: Arc<Streams>, ffmpeg: OsString) -> Router {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let decoders = tokio::sync::Semaphore::new((cores / 2).max(1));
    Router::new()
        .route("/snapshot/{file}", get(snapshot))
        .with_state(Arc::new(Snapshots {
            streams,
            ffmpeg,
            decoders,
        }))
}

#[derive(Deserialize)]
struct Params {
    width: Option<String>,
}

async fn snapshot(
    State(s): State<Arc<Snapshots>>,
    Path(file): Path<String>,
    Query(params): Query<Params>,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let id = file.strip_suffix(".jpg").ok_or(HttpError::UnknownPath)?;
    authorized(&s.streams, id, &headers)?;
    let width = params.width.as_deref().map(parse_width).transpose()?;
    let media = s.streams.media(id)?.media;
    admitted(&s.streams, id, &headers, remote).await?;
    let video = media
        .video
        .ok_or(HttpError::NoPicture("the stream has no video"))?;
    if video.cache_state().is_none() {
        return Err(HttpError::NoPicture(
            "the stream keeps no GOP cache (gop_cache.enabled: false)",
        ));
    }
    let pictures = s.streams.pictures(id).ok_or(HttpError::UnknownStream)?;
    match pictures
        .take(&s.ffmpeg, width, &s.decoders, || video.gop())
        .await
    {
        Ok(jpeg) => {
            let mut resp = jpeg.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err(e @ SnapshotError::NoGop) => Err(HttpError::NoPictureYet(e.to_string(), 1)),
        Err(e @ SnapshotError::Decode(_)) => {
            // The details (FFmpeg's words) are for the log, not the client.
            tracing::warn!(stream = %id, error = %e, "snapshot failed");
            Err(HttpError::Internal(
                "the snapshot could not be decoded".into(),
            ))
        }
    }
}

fn parse_width(w: &str) -> Result<u32, HttpError> {
    w.parse::<u32>()
        .ok()
        .filter(|w| WIDTHS.contains(w))
        .ok_or_else(|| {
            HttpError::BadQuery(format!(
                "width must be a whole number from {} to {}, not {w:?}",
                WIDTHS.start(),
                WIDTHS.end()
            ))
        })
}
