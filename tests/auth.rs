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
    wait_for(&v, Duration::from_secs(60), "media with the token", |r| {
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
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        assert!(
            wrong.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\""),
            "{path}"
        );
        assert_eq!(
            wrong.text().await.unwrap(),
            "the bearer token is wrong\n",
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
    let played = common::aiortc_view(
        &ff.url,
        &["--frames", "21", "--seconds", "60", "--token", TOKEN],
        &[],
    );
    assert_eq!(played["status"], 201, "{played}");
    assert!(played["video_frames"].as_u64().unwrap() > 20, "{played}");
}

/// The `Link` headers of a response.
fn links(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const TURN: [&str; 6] = [
    "--ice-server",
    "turn:127.0.0.1:3478?transport=udp",
    "--ice-username",
    "turn-user",
    "--ice-credential",
    "turn-secret",
];

/// TURN credentials go only to a request that passed the stream's auth:
/// OPTIONS with the token, the 201 of an authorized POST; never for an
/// unknown stream, a missing or wrong token, or a refused POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_server_credentials_only_for_the_token_holder() {
    let ff = Ffwhep::start_env(&TURN, &[("FFWHEP_TOKEN", TOKEN)]);
    let http = reqwest::Client::new();
    let options = |url: String, auth: Option<&str>| {
        let mut req = http.request(reqwest::Method::OPTIONS, url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let unknown = options(format!("{}/whep/anything", ff.base()), Some("Bearer x")).await;
    let unknown = unknown.unwrap();
    assert_eq!(unknown.status(), 204);
    assert!(
        links(&unknown).is_empty(),
        "an unknown stream got {:?}",
        links(&unknown)
    );
    let bearer = format!("Bearer {TOKEN}");
    let bearer = bearer.as_str();
    let unknown_with_token = options(format!("{}/whep/anything", ff.base()), Some(bearer)).await;
    assert!(
        links(&unknown_with_token.unwrap()).is_empty(),
        "unknown stream"
    );
    for auth in [None, Some("Bearer wrong")] {
        let r = options(ff.url.clone(), auth).await.unwrap();
        assert_eq!(r.status(), 204);
        assert!(links(&r).is_empty(), "{auth:?} got {:?}", links(&r));
    }
    let allowed = options(ff.url.clone(), Some(bearer)).await.unwrap();
    assert!(
        links(&allowed)
            .iter()
            .any(|l| l.contains("credential=\"turn-secret\"")),
        "{:?}",
        links(&allowed)
    );
    let refused = post(&ff.url, Some("Bearer wrong")).await;
    assert_eq!(refused.status(), 401);
    assert!(links(&refused).is_empty(), "a refused POST got credentials");
    let accepted = post(&ff.url, Some(bearer)).await;
    assert_eq!(accepted.status(), 201);
    assert!(
        links(&accepted)
            .iter()
            .any(|l| l.contains("credential=\"turn-secret\"")),
        "{:?}",
        links(&accepted)
    );
}

async fn get_text(url: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A stream behind its own token is named on no page nor probe to a
/// request without it; the list page shows it to one that carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_stream_is_named_only_to_its_token_holder() {
    let token_file = common::temp_file("token", &format!("{TOKEN}\n"));
    let locked = testsrc_profile(
        "hidden-cam",
        &format!("auth:\n  token_file: {}\n", token_file.display()),
    );
    let open = testsrc_profile("open-cam", "");
    let ff = Ffwhep::start(&[open.to_str().unwrap(), locked.to_str().unwrap()]);
    let base = ff.base();
    let v = Viewer::connect_via(
        &format!("{base}/whep/hidden-cam"),
        Some(TOKEN),
        |s| s,
        |s| s,
    )
    .await
    .unwrap();
    wait_for(&v, Duration::from_secs(30), "media with the token", |r| {
        r.video.packets > 30
    })
    .await;
    for path in ["/", "/streams", "/status", "/metrics", "/readyz"] {
        let (code, body) = get_text(&format!("{base}{path}"), None).await;
        assert!(code == 200 || code == 503, "{path}: {code}");
        assert!(
            !body.contains("hidden-cam"),
            "{path} names the stream:\n{body}"
        );
        if path != "/readyz" {
            assert!(
                body.contains("open-cam"),
                "{path} lacks the open stream:\n{body}"
            );
        }
    }
    let (_, status) = get_text(&format!("{base}/status"), None).await;
    assert!(!status.contains(&v.location[v.location.len() - 32..][..8]));
    // With the token: the list, its JSON and status show it.
    for path in ["/streams", "/status", "/metrics"] {
        let (code, body) = get_text(&format!("{base}{path}"), Some(TOKEN)).await;
        assert_eq!(code, 200, "{path}");
        assert!(
            body.contains("hidden-cam"),
            "{path} with the token:\n{body}"
        );
    }
    let (_, page) = get_text(&format!("{base}/?token={TOKEN}"), None).await;
    assert!(
        page.contains("<a href=\"/play/hidden-cam\">hidden-cam</a>"),
        "{page}"
    );
    let (_, page) = get_text(&format!("{base}/"), None).await;
    assert!(
        page.contains("id=\"token\""),
        "the list page does not ask for the token"
    );
    // The player page is the same for the protected stream and for none.
    assert_eq!(
        get_text(&format!("{base}/play/hidden-cam"), None).await,
        get_text(&format!("{base}/play/no-such-cam"), None).await
    );
    // A POST without the token cannot tell the protected stream from none.
    let mut refusals = Vec::new();
    for id in ["hidden-cam", "no-such-cam"] {
        let r = post(&format!("{base}/whep/{id}"), None).await;
        let challenge = r.headers()["www-authenticate"].clone();
        refusals.push((r.status(), challenge, r.text().await.unwrap()));
    }
    assert_eq!(refusals[0].0, 401);
    assert_eq!(
        refusals[0], refusals[1],
        "a stranger can tell which ids exist"
    );
    v.close().await;
}
