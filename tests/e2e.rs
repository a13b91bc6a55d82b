//! End to end: real FFmpeg, the real ffwhep binary, real HTTP and real
//! WebRTC viewers (webrtc-rs).

mod common;

use common::{Ffwhep, alive, kill, probe_h264};
use common::{connect, wait_for};
use ffwhep::smoke::viewer::{Offer, summary};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_decodable_h264_and_opus() {
    let ff = Ffwhep::start(&[]);
    let v = connect(&ff.url).await;
    wait_for(
        &v,
        Duration::from_secs(60),
        "SPS, PPS, IDR and 45 frames after it",
        |r| {
            r.saw_nal(7)
                && r.saw_nal(8)
                && r.saw_nal(5)
                && r.frames_since_idr >= 45
                && r.audio.packets > 50
        },
    )
    .await;
    let r = v.received();
    assert!(
        r.video.mime.eq_ignore_ascii_case("video/H264"),
        "{}",
        summary(&r)
    );
    assert!(
        r.audio.mime.eq_ignore_ascii_case("audio/opus"),
        "{}",
        summary(&r)
    );
    // Opus packets of 20 ms at 64 kb/s are far from empty.
    assert!(r.audio.bytes / r.audio.packets > 20, "{}", summary(&r));
    let dir = tempdir();
    let path = dir.join("video.h264");
    std::fs::write(&path, &r.h264).unwrap();
    let (w, h, frames) = probe_h264(&path);
    assert_eq!((w, h), (640, 360), "picture size differs from the profile");
    assert!(frames >= 40, "only {frames} frames decoded");
    v.close().await;
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ffwhep-test-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_and_delete_stops_only_one() {
    let ff = Ffwhep::start(&[]);
    let a = connect(&ff.url).await;
    let b = connect(&ff.url).await;
    assert_ne!(a.location, b.location, "sessions share a URL");
    let session = a.location.rsplit('/').next().unwrap();
    assert!(
        session.len() >= 32,
        "session id {session:?} is shorter than 128 bits"
    );
    for v in [&a, &b] {
        wait_for(v, Duration::from_secs(60), "video and audio", |r| {
            r.video.packets > 30 && r.audio.packets > 10
        })
        .await;
    }

    let http = reqwest::Client::new();
    let resp = http
        .delete(format!("{}{}", ff.base(), a.location))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let state = common::checks::wait_hung_up(&a, Duration::from_secs(30)).await;
    assert!(
        state.is_some(),
        "the deleted viewer's connection did not end"
    );
    // Packets the server sent before it answered the DELETE may still be on
    // their way: they are in once the other viewer has had a few hundred
    // sent after it. From then on the deleted viewer's count stays put.
    let more = |n: u64| {
        let from = b.received().video.packets;
        move |r: &ffwhep::smoke::viewer::Received| r.video.packets > from + n
    };
    wait_for(
        &b,
        Duration::from_secs(60),
        "the other viewer's media",
        more(200),
    )
    .await;
    let a_after = a.received().video.packets;
    wait_for(
        &b,
        Duration::from_secs(60),
        "the other viewer's media",
        more(200),
    )
    .await;
    assert_eq!(
        a.received().video.packets,
        a_after,
        "the deleted viewer still receives"
    );

    // The resource is gone now.
    let again = http
        .delete(format!("{}{}", ff.base(), a.location))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_to_ffmpeg_hangs_up_viewers_and_frees_ports() {
    let mut ff = Ffwhep::start(&[]);
    let mut a = connect(&ff.url).await;
    let mut b = connect(&ff.url).await;
    for v in [&a, &b] {
        wait_for(v, Duration::from_secs(60), "video", |r| {
            r.video.packets > 30 && r.audio.packets > 5
        })
        .await;
    }
    let (vport, aport) = ff.ports();

    kill(ff.ffmpeg_pid(), libc::SIGKILL);
    let t0 = Instant::now();
    for (name, v) in [("a", &mut a), ("b", &mut b)] {
        let state =
            common::checks::wait_hung_up(v, Duration::from_secs(30).saturating_sub(t0.elapsed()))
                .await;
        assert!(
            state.is_some(),
            "viewer {name} was not hung up within 30 s ({}; {:?}); log:\n{}",
            summary(&v.received()),
            common::checks::dtls_states(v).await,
            ff.log()
        );
    }
    let status = ff.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "log:\n{}", ff.log());
    let log = ff.log();
    assert!(
        log.contains("error: FFmpeg was killed by signal 9 (SIGKILL); its last lines:"),
        "{log}"
    );
    for port in [vport, aport] {
        std::net::UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} not freed: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_ffmpeg_gracefully_and_tears_down() {
    let mut ff = Ffwhep::start(&[]);
    let v = connect(&ff.url).await;
    wait_for(&v, Duration::from_secs(60), "video", |r| {
        r.video.packets > 30
    })
    .await;
    let ffmpeg = ff.ffmpeg_pid();
    kill(ff.pid(), libc::SIGTERM);
    assert!(
        common::checks::wait_hung_up(&v, Duration::from_secs(60))
            .await
            .is_some(),
        "viewer not hung up"
    );
    let status = ff.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "log:\n{}", ff.log());
    assert!(!alive(ffmpeg), "FFmpeg outlived ffwhep");
    let log = ff.log();
    assert!(log.contains("asking FFmpeg to stop (SIGINT)"), "{log}");
    assert!(!log.contains("SIGKILL"), "FFmpeg needed SIGKILL: {log}");
    assert!(log.contains("teardown done"), "{log}");
}

#[test]
fn finite_input_ends_cleanly_with_exit_zero() {
    let dir = tempdir();
    let profile = dir.join("short.yaml");
    std::fs::write(
        &profile,
        "id: short\ninput:\n  - address: testsrc2=size=320x240:rate=30:duration=1\n    options: [-re, -f, lavfi]\n\
         webrtc:\n  audio: {enabled: false}\n",
    )
    .unwrap();
    let mut ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let (vport, aport) = ff.ports();
    let status = ff.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", ff.log());
    for port in [vport, aport] {
        std::net::UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} not freed: {e}"));
    }
}

#[test]
fn failing_ffmpeg_exits_one_with_its_last_lines() {
    let dir = tempdir();
    let profile = dir.join("missing.yaml");
    std::fs::write(
        &profile,
        "id: missing\ninput: [{address: /nonexistent/input.mp4}]\n",
    )
    .unwrap();
    let mut ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let status = ff.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let log = ff.log();
    assert!(
        log.contains("error: FFmpeg exited with status 1; its last lines:"),
        "{log}"
    );
    assert!(
        log.contains("/nonexistent/input.mp4: No such file or directory"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_statuses_and_cors() {
    let ff = Ffwhep::start(&[]);
    let http = reqwest::Client::new();
    let base = ff.base();
    let offer = Offer::new().await.unwrap();
    let offer = offer.sdp.clone();

    // Unknown stream: 404 with a reason.
    let r = http
        .post(format!("{base}/whep/nope"))
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no such stream"));

    // Wrong content type: 415.
    let r = http
        .post(&ff.url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.text().await.unwrap().contains("expected application/sdp"));

    // Not SDP: 400 with the reason.
    let r = http
        .post(&ff.url)
        .header("content-type", "application/sdp")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not valid SDP"));

    // SDP offering neither H.264 nor Opus: 400.
    let vp8_only = offer
        .lines()
        .filter(|l| {
            !l.contains("H264")
                && !l.contains("opus")
                && !l.starts_with("a=fmtp:125")
                && !l.starts_with("a=fmtp:109")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    let r = http
        .post(&ff.url)
        .header("content-type", "application/sdp")
        .body(vp8_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("neither H.264 video nor Opus audio")
    );

    // Unknown session: 404. GET on the endpoint: 405 with Allow.
    let r = http
        .delete(format!(
            "{}/whep/testsrc/0123456789abcdef0123456789abcdef",
            base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(&ff.url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers()["allow"].to_str().unwrap().contains("POST"));
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.text().await.unwrap(),
        "method not allowed\n",
        "a reason in plain text"
    );
    // A body over the limit: 413, with the reason.
    let r = http
        .post(&ff.url)
        .header("content-type", "application/sdp")
        .body("v=0\r\n".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        !r.text().await.unwrap().trim().is_empty(),
        "413 without a reason"
    );

    // CORS preflight on the endpoint and on a session.
    let r = http
        .request(reqwest::Method::OPTIONS, &ff.url)
        .header("origin", "http://example.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("content-type")
    );
    assert_eq!(h["accept-post"], "application/sdp");
    let v = connect(&ff.url).await;
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{base}{}", v.location))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("DELETE")
    );
    v.close().await;
}

#[test]
fn ffmpeg_does_not_outlive_a_killed_ffwhep() {
    let mut ff = Ffwhep::start(&[]);
    let ffmpeg = ff.ffmpeg_pid();
    assert!(alive(ffmpeg));
    kill(ff.pid(), libc::SIGKILL);
    ff.wait_exit(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(ffmpeg) {
        assert!(
            Instant::now() < deadline,
            "FFmpeg {ffmpeg} outlived ffwhep killed with SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_profile_serves_opus() {
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/audio-only.yaml");
    let ff = Ffwhep::start(&[profile]);
    let v = connect(&ff.url).await;
    wait_for(&v, Duration::from_secs(60), "audio", |r| {
        r.audio.packets > 50
    })
    .await;
    let r = v.received();
    assert_eq!(r.video.packets, 0, "{}", summary(&r));
    assert!(r.audio.mime.eq_ignore_ascii_case("audio/opus"));
    v.close().await;
}
