//! The operator's services over HTTPS: an authorization service and a
//! hook's URL behind TLS with a certificate of the test's own, trusted by
//! ffwhep through `SSL_CERT_FILE`, and refused when it is not trusted.

mod common;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::Ffwhep;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// An HTTPS server on loopback: `/check` admits the token "good", `/events`
/// takes hook events. Its base URL and the events it was sent.
async fn service(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/check",
            axum::routing::post(|Json(ask): Json<Value>| async move {
                if ask["token"] == "good" {
                    (StatusCode::OK, "welcome")
                } else {
                    (StatusCode::FORBIDDEN, "not you")
                }
            }),
        )
        .route(
            "/events",
            axum::routing::post(
                |State(tx): State<mpsc::UnboundedSender<Value>>, Json(e): Json<Value>| async move {
                    let _ = tx.send(e);
                    "thanks"
                },
            ),
        )
        .with_state(tx);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(app.into_make_service()));
    (base, rx)
}

fn profile(id: &str, base: &str) -> std::path::PathBuf {
    common::testsrc_profile(
        id,
        &format!(
            "auth: {{url: \"{base}/check\"}}\nhooks:\n  - events: [viewer_join]\n    url: \"{base}/events\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_https_service_admits_and_takes_hook_events() {
    let (cert, key) = common::self_signed();
    let (base, mut events) = service(&cert, &key).await;
    let p = profile("over-tls", &base);
    let ff = Ffwhep::start_env(
        &[p.to_str().unwrap()],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    let v = ffwhep::smoke::viewer::Viewer::connect_via(&ff.url, Some("good"), |s| s, |s| s)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", ff.log()));
    common::wait_for(&v, Duration::from_secs(20), "frames", |r| {
        r.complete_frames() > 5
    })
    .await;
    let (resp, _offer) = common::post_offer(&ff.url, Some("Bearer other")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.text().await.unwrap().trim(), "refused: not you");
    let join = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("no hook event over HTTPS")
        .unwrap();
    assert_eq!(join["event"], "viewer_join");
    assert_eq!(join["stream"], "over-tls");
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_the_reason() {
    let (cert, key) = common::self_signed();
    let (base, _events) = service(&cert, &key).await;
    let p = profile("untrusted", &base);
    // No SSL_CERT_FILE: the system's roots do not include the test's own.
    let ff = Ffwhep::start(&[p.to_str().unwrap()]);
    let (resp, _offer) = common::post_offer(&ff.url, Some("Bearer good")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    ff.wait_log(Duration::from_secs(10), "the certificate error", |l| {
        l.contains("authorization service") && l.contains("certificate")
    });
}
