//! External authorization: a stream whose profile says `auth: {url: ...}`
//! (or every stream, with `--auth-url`) admits a viewer only when that
//! service says so. Here the service is an HTTP server of the test's own on
//! loopback that admits the token "good" (for a minute, by Cache-Control),
//! refuses "bad" with a reason, and never answers "slow".

mod common;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::Ffwhep;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the service was asked, in order.
type Asked = Arc<Mutex<Vec<serde_json::Value>>>;

async fn decide(
    State(asked): State<Asked>,
    Json(body): Json<serde_json::Value>,
) -> axum::response::Response {
    asked.lock().unwrap().push(body.clone());
    match body["token"].as_str() {
        Some("good") => {
            let mut h = HeaderMap::new();
            h.insert("cache-control", "max-age=60".parse().unwrap());
            (StatusCode::OK, h, "welcome").into_response()
        }
        // Never answers: only ffwhep's own timeout ends the wait.
        Some("slow") => std::future::pending().await,
        Some("bad") => (StatusCode::FORBIDDEN, "not on the list\n").into_response(),
        _ => (StatusCode::UNAUTHORIZED, "who are you?").into_response(),
    }
}

/// Starts the service; its URL and what it was asked.
async fn service() -> (String, Asked) {
    let asked = Asked::default();
    let app = axum::Router::new()
        .route("/check", axum::routing::post(decide))
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

async fn post(url: &str, token: Option<&str>) -> (reqwest::Response, ffwhep::smoke::viewer::Offer) {
    let auth = token.map(|t| format!("Bearer {t}"));
    common::post_offer(url, auth.as_deref()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_admits_refuses_and_times_out() {
    let (url, asked) = service().await;
    let profile = common::testsrc_profile(
        "guarded",
        &format!("auth:\n  url: \"{url}\"\n  timeout: 1s\n"),
    );
    let ff = Ffwhep::start(&[
        profile.to_str().unwrap(),
        "--token",
        "admin",
        "--ice-server",
        "turn:127.0.0.1:3478",
        "--ice-username",
        "u",
        "--ice-credential",
        "secret-credential",
    ]);
    let status = common::StatusReader::with_token(&ff, "admin");
    status
        .wait("live media", |s| s["streams"][0]["live"] == true)
        .await;

    // Admitted: a viewer that plays; then another POST with the same token.
    let v = ffwhep::smoke::viewer::Viewer::connect_via(&ff.url, Some("good"), |s| s, |s| s)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (r, offer) = post(&ff.url, Some("good")).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    offer.pc.close().await.ok();
    common::wait_for(&v, Duration::from_secs(60), "media", |r| {
        r.frames_since_idr > 10
    })
    .await;
    {
        let asked = asked.lock().unwrap();
        let first = &asked[0];
        assert_eq!(first["stream"], "guarded");
        assert_eq!(first["token"], "good");
        assert!(
            first["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{first}"
        );
        assert!(first["user_agent"].is_string() || first["user_agent"].is_null());
        // The second "good" came from the cache (max-age=60).
        assert_eq!(asked.len(), 1, "{asked:?}");
    }

    // Refused, with the service's reason and status.
    let (r, offer) = post(&ff.url, Some("bad")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap().trim(), "refused: not on the list");
    offer.pc.close().await.ok();
    let (r, offer) = post(&ff.url, None).await;
    assert_eq!(r.status(), 401);
    offer.pc.close().await.ok();

    // Slow: the timeout applies (503, Retry-After), and the viewer already
    // watching is undisturbed meanwhile.
    let before = v.received().video.packets;
    let (r, offer) = post(&ff.url, Some("slow")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("no answer within"));
    offer.pc.close().await.ok();
    common::wait_for(
        &v,
        Duration::from_secs(60),
        "media during the slow check",
        |r| r.video.packets > before + 30 && r.video.lost == 0,
    )
    .await;

    // OPTIONS gives the ICE servers (TURN credentials) only to whom the
    // service admits.
    let links = |token: &'static str| {
        let url = ff.url.clone();
        async move {
            reqwest::Client::new()
                .request(reqwest::Method::OPTIONS, url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .headers()
                .get_all("link")
                .iter()
                .count()
        }
    };
    assert_eq!(links("bad").await, 0);
    assert!(links("good").await > 0);

    // Snapshots ask the service too.
    let snap = |token: &'static str| {
        let url = format!("{}/snapshot/guarded.jpg", ff.base());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(snap("bad").await, 403);
    assert_eq!(snap("good").await, 200);

    // Counted; the stream is named only to the global token's holders.
    let s = status.get().await;
    let auth = &s["streams"][0]["auth"];
    assert_eq!(
        (auth["admitted"].as_u64(), auth["cached"].as_u64()),
        (Some(4), Some(3)),
        "{s}"
    );
    assert_eq!(auth["unavailable"], 1, "{s}");
    let list = reqwest::get(format!("{}/streams", ff.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("guarded"), "named without a token: {list}");
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_down_refuses_with_503_and_auth_url_guards_every_stream() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/check");
    let ff = Ffwhep::start(&["--auth-url", &url, "--token", "admin"]);
    let status = common::StatusReader::with_token(&ff, "admin");
    status
        .wait("live media", |s| s["streams"][0]["live"] == true)
        .await;
    let (r, offer) = post(&ff.url, Some("anyone")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("cannot be reached"));
    offer.pc.close().await.ok();
    let s = status.get().await;
    assert_eq!(s["streams"][0]["auth"]["unavailable"], 1, "{s}");
    let m = common::metrics(&ff, Some("admin")).await;
    assert!(
        m.contains("ffwhep_auth_decisions_total{decision=\"unavailable\",stream=\"testsrc\"} 1"),
        "{m}"
    );
}
