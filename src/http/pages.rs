//! The built-in browser pages: `GET /` lists the streams, `GET /streams` is
//! that list as JSON, `GET /play/{id}` plays one over WHEP (a self-contained
//! page, assets/player.html). A stream behind a token is listed only to a
//! request that carries it (`Authorization: Bearer`, or `?token=` for a page
//! opened from a link); the list page asks for it, as the player does.

use super::bearer;
use crate::stream::registry::Streams;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::sync::Arc;

const PLAYER: &str = include_str!("../../assets/player.html");

/// The player, for any id: the page is the same for a stream that exists,
/// one behind a token and one that does not, so it tells a stranger nothing
/// (the player finds out when it POSTs). It says only whether this server
/// has ICE servers to give (their URLs and credentials stay behind `OPTIONS`
/// with the token): the page asks for them only then, since that request
/// costs a fresh page tens of ms before its offer can go.
pub(super) async fn play(State(streams): State<Arc<Streams>>, Path(_id): Path<String>) -> Response {
    let page = if streams.peer.config.ice_servers.is_empty() {
        std::borrow::Cow::Borrowed(PLAYER)
    } else {
        std::borrow::Cow::Owned(PLAYER.replacen(
            "<html lang=\"en\">",
            "<html lang=\"en\" data-ice-servers>",
            1,
        ))
    };
    ([(header::CACHE_CONTROL, "no-cache")], Html(page)).into_response()
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// One stream in the list.
#[derive(Serialize)]
pub(super) struct Listed {
    id: String,
    state: &'static str,
    viewers: usize,
}

/// The streams this request may see: open ones, and those whose token (or
/// the global one) it carries in `Authorization` or `?token=`.
fn visible(streams: &Streams, headers: &HeaderMap, query: &TokenQuery) -> Vec<Listed> {
    let from_query = query.token.as_ref().map(|t| format!("Bearer {t}"));
    let auth = bearer(headers).or(from_query.as_deref().map(str::as_bytes));
    streams
        .snapshot()
        .into_iter()
        .filter(|(id, _)| streams.may_see(id, auth))
        .map(|(id, info)| Listed {
            id,
            state: info.state.name(),
            viewers: info.sessions.len(),
        })
        .collect()
}

pub(super) async fn streams(
    State(streams): State<Arc<Streams>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Json<Vec<Listed>> {
    Json(visible(&streams, &headers, &query))
}

pub(super) async fn index(
    State(streams): State<Arc<Streams>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let mut rows = String::new();
    for s in visible(&streams, &headers, &query) {
        let open = streams.authorize(&s.id, None).is_ok();
        let id = escape(&s.id);
        // A stream behind a token gets its thumbnail from the script, which
        // can send the token; an <img> cannot.
        let thumb = if open {
            format!("<img class=\"thumb\" src=\"/snapshot/{id}.jpg?width=160\" alt=\"\"> ")
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<li>{thumb}<a href=\"/play/{id}\">{id}</a> — {} — {} viewer(s) — <a href=\"/whep/{id}\">WHEP</a></li>",
            s.state, s.viewers
        );
    }
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ffwhep</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5em}} .thumb{{width:160px;min-height:1px;vertical-align:middle}}</style></head><body>\
         <h1>ffwhep streams</h1><ul id=\"list\">{rows}</ul>\
         <form id=\"auth\"><label>token <input id=\"token\" type=\"password\" size=\"24\" autocomplete=\"off\"></label> \
         <button>show streams behind this token</button></form>\
         <p><a href=\"/status\">status</a> · <a href=\"/metrics\">metrics</a></p>{LIST_SCRIPT}</body></html>"
    );
    ([(header::CACHE_CONTROL, "no-cache")], Html(page)).into_response()
}

/// Asks `/streams` with the token typed in and shows what it may see, each
/// with its snapshot (asked with the token); the player links carry the
/// token on.
const LIST_SCRIPT: &str = r##"<script>
const esc = s => s.replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";");
document.getElementById("auth").addEventListener("submit", async e => {
  e.preventDefault();
  const token = document.getElementById("token").value.trim();
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const resp = await fetch("/streams", { headers });
  const list = await resp.json();
  const q = token ? "?token=" + encodeURIComponent(token) : "";
  document.getElementById("list").innerHTML = list.map(s =>
    `<li><img class="thumb" alt=""> <a href="/play/${esc(s.id)}${q}">${esc(s.id)}</a> — ${s.state} — ${s.viewers} viewer(s) — <a href="/whep/${esc(s.id)}">WHEP</a></li>`
  ).join("");
  document.querySelectorAll("#list .thumb").forEach(async (img, i) => {
    const r = await fetch(`/snapshot/${encodeURIComponent(list[i].id)}.jpg?width=160`, { headers });
    if (r.ok) img.src = URL.createObjectURL(await r.blob());
  });
});
</script>"##;

/// HTML-escapes text (stream ids are restricted already; this is a belt).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
