//! Bearer tokens, per stream (from the profile) and global (from the
//! environment), with real HTTP, a webrtc-rs viewer and aiortc.

mod common;

use common::{Ffwhep, testsrc_profile, wait_for};
use ffwhep::smoke::viewer::Viewer;
use std::time::Duration;

const TOKEN: &str = "cam1-7f3a9c2e-secret";

async fn post(url: &str, auth: Option<&str>) -> reqwest::Response {
    let (r, offer) = common::post_offer(url, auth).await;
    offer.pc.close().await.ok();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_is_required_to_watch_and_to_hang_up() {
    let token_file = common::temp_file("token", &format!("{TOKEN}\n"));
    let profile = testsrc_profile(
        "locked",
        &format!("auth:\n  token_file: {}\n", token_file.display()),
    );
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);

    let r = post(&ff.url, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ffwhep\"");
    let r = post(&ff.url, Some("Bearer wrong")).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    let v = Viewer::connect_via(&ff.url, Some(TOKEN), |s| s, |s| s)
        .await
        .unwrap();
    wait_for(&v, Duration::from_secs(10), "media with the token", |r| {
        r.video.packets > 30
    })
    .await;
    let session = format!("{}{}", ff.base(), v.location);
    let http = reqwest::Client::new();
    assert_eq!(
        http.delete(&session).send().await.unwrap().status(),
        401,
        "anyone holding the URL could hang up"
    );
    let patch = http
        .patch(&session)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 401, "anyone holding the URL could patch");
    assert_eq!(
        http.delete(&session)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!ff.log().contains(TOKEN), "the token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_token_guards_streams_status_and_metrics_but_not_probes() {
    let ff = Ffwhep::start_env(&[], &[("FFWHEP_TOKEN", TOKEN)]);
    let base = ff.base();
    let http = reqwest::Client::new();
    assert_eq!(post(&ff.url, None).await.status(), 401);
    for path in ["/status", "/metrics"] {
        assert_eq!(
            http.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{path}"
        );
        assert_eq!(
            http.get(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!ff.log().contains(TOKEN), "the token was logged");

    // A viewer nobody here wrote: refused without the token, plays with it.
    let refused = common::aiortc_view(&ff.url, &["--seconds", "2"], &[]);
    assert_eq!(refused["status"], 401, "{refused}");
    let played = common::aiortc_view(&ff.url, &["--seconds", "2", "--token", TOKEN], &[]);
    assert_eq!(played["status"], 201, "{played}");
    assert!(played["video_frames"].as_u64().unwrap() > 20, "{played}");
}
