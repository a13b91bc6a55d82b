//! A viewer's choice of rendition on a ladder, over HTTP: `?quality=` on
//! the WHEP POST (a rung's name such as `360p`, its height, or `auto`), and
//! the WHEP layer-selection extension on the session (advertised as
//! `Link: <session/layer>; rel="urn:ietf:params:whep:ext:core:layer"`):
//! GET tells the renditions and the viewer's current one; POST
//! `{"encodingId": "360p"}` pins one, `{"encodingId": "auto"}` (or none)
//! lets ffwhep choose again.

use super::error::HttpError;
use crate::engine::{Choice, Rendition};
use crate::stream::registry::Streams;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The relation the layer URL is advertised with.
pub(super) const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// The `quality` parameter of a query string, if any.
pub(super) fn quality_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == "quality").then(|| v.to_owned())
    })
}

/// The choice `quality` names among `rungs`: `auto`, a rung's name
/// (`360p`) or its height (`360`).
pub(super) fn choice(rungs: &[Rendition], quality: &str) -> Result<Choice, HttpError> {
    let q = quality.trim();
    if q.is_empty() || q.eq_ignore_ascii_case("auto") {
        return Ok(Choice::Auto);
    }
    if rungs.is_empty() {
        return Err(HttpError::BadQuery(format!(
            "quality {q:?}: the stream has no ladder, so no rendition can be chosen"
        )));
    }
    rungs
        .iter()
        .position(|r| r.name.eq_ignore_ascii_case(q) || r.height.to_string() == q)
        .map(Choice::Pinned)
        .ok_or_else(|| {
            let names: Vec<&str> = rungs.iter().map(|r| r.name.as_str()).collect();
            HttpError::BadQuery(format!(
                "quality {q:?}: expected auto or one of {}",
                names.join(", ")
            ))
        })
}

/// GET on a session's layer URL: the renditions, the one sent, the mode.
pub(super) async fn get(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let record = super::session_of(&streams, &id, &session, &headers)?;
    let rungs = streams.media(&id)?.media.rungs;
    let place = record.viewer.rendition();
    let encodings: Vec<_> = rungs
        .iter()
        .map(
            |r| serde_json::json!({"encodingId": r.name, "height": r.height, "bitrate": r.bitrate}),
        )
        .collect();
    Ok(Json(serde_json::json!({
        "mediaId": "0",
        "encodings": encodings,
        "current": place.as_ref().map(|p| p.current.clone()),
        "mode": place.as_ref().map(|p| p.mode),
        "estimated_kbps": place.as_ref().and_then(|p| p.estimated_kbps),
    }))
    .into_response())
}

/// The body of a POST on the layer URL.
#[derive(serde::Deserialize)]
struct LayerRequest {
    #[serde(default, rename = "mediaId")]
    _media_id: Option<String>,
    #[serde(default, rename = "encodingId")]
    encoding_id: Option<String>,
}

/// POST on a session's layer URL: pins a rendition, or `auto` (204).
pub(super) async fn post(
    State(streams): State<Arc<Streams>>,
    Path((id, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let record = super::session_of(&streams, &id, &session, &headers)?;
    super::whep::content_type(&headers, "application/json")?;
    let req: LayerRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::BadQuery(format!("the layer request is not valid JSON: {e}")))?;
    let rungs = streams.media(&id)?.media.rungs;
    let choice = choice(&rungs, req.encoding_id.as_deref().unwrap_or("auto"))?;
    record
        .viewer
        .choose(choice)
        .await
        .map_err(HttpError::BadQuery)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quality_parameter_is_read_from_the_query() {
        assert_eq!(quality_param(Some("quality=360p")).as_deref(), Some("360p"));
        assert_eq!(
            quality_param(Some("a=1&quality=auto")).as_deref(),
            Some("auto")
        );
        assert_eq!(quality_param(Some("a=1")), None);
        assert_eq!(quality_param(None), None);
    }
}
