//! The WHIP exchange against an endpoint of the test's own on loopback,
//! whose every answer the test chooses: a 307 redirect, a 503 with
//! Retry-After, then a 201 with a relative Location, an ETag and Link
//! headers naming a STUN server (a small one of the test's own) and a TURN
//! server; the answer comes from a real receiving peer (the built-in
//! viewer, answering). Then PATCH with our server-reflexive candidates, and
//! DELETE at the stop.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::Ffwhep;
use ffwhep::smoke::viewer::Offer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the endpoint was asked, and the peer that answered.
#[derive(Default)]
struct Seen {
    redirected: u32,
    /// POSTs without the token.
    unauthorized: u32,
    posts: u32,
    /// (If-Match, body) of each PATCH.
    patches: Vec<(String, String)>,
    deletes: u32,
    peer: Option<Arc<Offer>>,
}

#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Seen>>,
    stun: SocketAddr,
}

async fn start(State(e): State<Endpoint>) -> impl IntoResponse {
    e.seen.lock().unwrap().redirected += 1;
    (StatusCode::TEMPORARY_REDIRECT, [("location", "/whip/b")])
}

async fn publish(
    State(e): State<Endpoint>,
    headers: HeaderMap,
    offer: String,
) -> axum::response::Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sekrit") {
        e.seen.lock().unwrap().unauthorized += 1;
        return (StatusCode::UNAUTHORIZED, "a token, please\n").into_response();
    }
    let first = {
        let mut seen = e.seen.lock().unwrap();
        seen.posts += 1;
        seen.posts == 1
    };
    if first {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "2")],
            "warming up\n",
        )
            .into_response();
    }
    let peer = Arc::new(Offer::answering(&offer).await.unwrap());
    let answer = peer.sdp.clone();
    e.seen.lock().unwrap().peer = Some(peer);
    let mut h = HeaderMap::new();
    h.insert("location", "res/1".parse().unwrap());
    h.insert("etag", "\"e1\"".parse().unwrap());
    h.insert("content-type", "application/sdp".parse().unwrap());
    h.append(
        "link",
        format!("<stun:{}>; rel=\"ice-server\"", e.stun)
            .parse()
            .unwrap(),
    );
    h.append(
        "link",
        "<turn:127.0.0.1:9?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"c\""
            .parse()
            .unwrap(),
    );
    (StatusCode::CREATED, h, answer).into_response()
}

async fn trickle(State(e): State<Endpoint>, headers: HeaderMap, body: String) -> StatusCode {
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    e.seen.lock().unwrap().patches.push((if_match, body));
    StatusCode::NO_CONTENT
}

async fn delete(State(e): State<Endpoint>) -> StatusCode {
    e.seen.lock().unwrap().deletes += 1;
    StatusCode::OK
}

/// A STUN server on loopback that says every client is at 192.0.2.77 (a
/// documentation address: it only ever appears in a candidate's text).
async fn stun_server() -> SocketAddr {
    use rtc::stun::message::{BINDING_SUCCESS, Message, Setter};
    use rtc::stun::xoraddr::XorMappedAddress;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let answer = {
                let mut req = Message::new();
                req.raw = buf[..n].to_vec();
                if req.decode().is_err() {
                    continue;
                }
                let mut resp = Message::new();
                let setters: Vec<Box<dyn Setter>> = vec![
                    Box::new(req.transaction_id),
                    Box::new(BINDING_SUCCESS),
                    Box::new(XorMappedAddress {
                        ip: "192.0.2.77".parse().unwrap(),
                        port: from.port(),
                    }),
                ];
                resp.build(&setters).map(|_| resp.raw)
            };
            if let Ok(raw) = answer {
                let _ = socket.send_to(&raw, from).await;
            }
        }
    });
    addr
}

/// Serves the endpoint on loopback; its URL (the one that redirects).
async fn serve() -> (Endpoint, String) {
    let endpoint = Endpoint {
        seen: Arc::default(),
        stun: stun_server().await,
    };
    let app = axum::Router::new()
        .route("/whip/start", axum::routing::post(start))
        .route("/whip/b", axum::routing::post(publish))
        .route("/whip/res/1", axum::routing::patch(trickle).delete(delete))
        .route(
            "/whip/refuse",
            axum::routing::post(|| async { (StatusCode::FORBIDDEN, "not you") }),
        )
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/whip/start", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_follows_redirects_honours_retry_after_trickles_and_deletes() {
    let (endpoint, url) = serve().await;
    let profile = common::testsrc_profile(
        "protocol",
        &format!(
            "whip:\n  - url: \"{url}\"\n    token_env: WHIP_TOKEN\n    \
             retry: {{initial_delay: 0.2, jitter: 0}}\n  \
             - url: \"{url}\"\n    retry: {{initial_delay: 0.2, jitter: 0}}\n"
        ),
    );
    let mut ff = Ffwhep::start_env(&[profile.to_str().unwrap()], &[("WHIP_TOKEN", "sekrit")]);
    let status = common::StatusReader::new(&ff);
    status
        .wait("the push connected", |s| {
            s["streams"][0]["pushes"][0]["state"] == "connected"
        })
        .await;

    // Without the token: 401, with the endpoint's reason, tried again.
    status
        .wait("the push without the token refused twice", |s| {
            s["streams"][0]["pushes"][1]["attempts"].as_u64() >= Some(2)
        })
        .await;
    let s = status.get().await;
    assert_eq!(
        s["streams"][0]["pushes"][1]["last_error"],
        "the endpoint answered 401: a token, please"
    );
    assert_ne!(s["streams"][0]["pushes"][1]["state"], "connected");
    // The 503's Retry-After (2 s) outweighed the backoff's 0.2 s.
    let log = ff.log();
    let retry = log
        .lines()
        .find(|l| l.contains("push failed; retrying after the delay") && l.contains("503"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(retry.contains("delay_ms=2000"), "{retry}");
    assert!(
        retry.contains("the endpoint is unavailable (503): warming up"),
        "{retry}"
    );
    ff.wait_log(Duration::from_secs(10), "the TURN servers' line", |l| {
        l.contains("TURN servers: not used")
    });
    {
        let seen = endpoint.seen.lock().unwrap();
        assert_eq!(seen.posts, 2, "the push with the token");
        assert!(seen.unauthorized >= 2, "the push without");
        // /whip/b is reached only through /whip/start's redirect (another
        // may be on its way).
        assert!(seen.redirected >= seen.posts + seen.unauthorized);
        // Our server-reflexive candidate, from the endpoint's STUN server.
        let [(if_match, frag)] = &seen.patches[..] else {
            panic!("{:?}", seen.patches)
        };
        assert_eq!(if_match, "\"e1\"");
        assert!(frag.contains("a=ice-ufrag:"), "{frag}");
        assert!(
            frag.contains("192.0.2.77") && frag.contains("typ srflx"),
            "{frag}"
        );
    }
    // The endpoint's peer gets the stream: the GOP first, so it decodes.
    let peer = endpoint.seen.lock().unwrap().peer.clone().unwrap();
    let got = peer
        .wait_until(Duration::from_secs(20), |r| {
            r.decodable() && r.audio.packets > 10
        })
        .await;
    assert!(got, "{}", ffwhep::smoke::viewer::summary(&peer.received()));

    // Stopped: the resource is DELETEd before ffwhep exits.
    common::kill(ff.pid(), libc::SIGTERM);
    ff.wait_exit(Duration::from_secs(30));
    assert_eq!(endpoint.seen.lock().unwrap().deletes, 1);
    peer.pc.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_checks_that_every_push_connects() {
    let (_endpoint, url) = serve().await;
    let smoke = |id: &str, url: &str, timeout: &str| {
        let profile = common::testsrc_profile(
            id,
            &format!("whip:\n  - url: \"{url}\"\n    token: sekrit\n"),
        );
        let out = common::bin()
            .args([
                "smoke",
                profile.to_str().unwrap(),
                "--ice-addr",
                "127.0.0.1:0",
            ])
            .args(["--timeout", timeout])
            .output()
            .unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status, summary)
    };
    let (status, summary) = tokio::task::spawn_blocking(move || smoke("smoked", &url, "30s"))
        .await
        .unwrap();
    assert!(status.success(), "{summary}");
    assert_eq!(summary["pushes"][0]["state"], "connected", "{summary}");

    let (_endpoint, url) = serve().await;
    let refused = url.replace("/start", "/refuse");
    let (status, summary) = tokio::task::spawn_blocking(move || smoke("unpushed", &refused, "30s"))
        .await
        .unwrap();
    assert!(!status.success(), "{summary}");
    let reason = summary["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not connect") && reason.contains("403: not you"),
        "{summary}"
    );
}
