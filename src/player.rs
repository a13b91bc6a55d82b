//! The built-in browser pages: `GET /` lists the streams, `GET /play/{id}`
//! plays one over WHEP (a self-contained page, assets/player.html).

use crate::registry::Streams;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

const PLAYER: &str = include_str!("../assets/player.html");

pub async fn play(State(streams): State<Arc<Streams>>, Path(id): Path<String>) -> Response {
    if !streams.ids().contains(&id) {
        return (StatusCode::NOT_FOUND, "no such stream\n").into_response();
    }
    ([(header::CACHE_CONTROL, "no-cache")], Html(PLAYER)).into_response()
}

pub async fn index(State(streams): State<Arc<Streams>>) -> Html<String> {
    let mut rows = String::new();
    for (id, info) in streams.snapshot() {
        let id = escape(&id);
        let _ = write!(
            rows,
            "<li><a href=\"/play/{id}\">{id}</a> — {} — {} viewer(s) — <a href=\"/whep/{id}\">WHEP</a></li>",
            info.state.name(),
            info.sessions.len()
        );
    }
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ffwhep</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5em}}</style></head><body>\
         <h1>ffwhep streams</h1><ul>{rows}</ul>\
         <p><a href=\"/status\">status</a> · <a href=\"/metrics\">metrics</a></p></body></html>"
    ))
}

/// HTML-escapes text (stream ids are restricted already; this is a belt).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
