//! WHEP (draft-ietf-wish-whep-03) status codes beyond the basics, with real
//! HTTP: viewer limits (503), trickle and ICE restart on PATCH (204, 422,
//! 412, 415), 405 with Allow, and half-open sessions being dropped.

mod common;

use common::{Ffwhep, testsrc_profile};
use ffwhep::smoke::viewer::Offer;
use std::time::Duration;

struct Posted {
    status: u16,
    location: Option<String>,
    etag: Option<String>,
    retry_after: Option<String>,
    offer: Offer,
}

async fn post(url: &str) -> Posted {
    let (r, offer) = common::post_offer(url, None).await;
    let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_owned());
    Posted {
        status: r.status().as_u16(),
        location: h("location"),
        etag: h("etag"),
        retry_after: h("retry-after"),
        offer,
    }
}

fn ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_limits_answer_503_with_retry_after() {
    let profile = testsrc_profile("limited", "");
    let text = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("webrtc:\n", "webrtc:\n  max_viewers: 1\n");
    std::fs::write(&profile, text).unwrap();
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let first = post(&ff.url).await;
    assert_eq!(first.status, 201);
    let second = post(&ff.url).await;
    assert_eq!(second.status, 503, "over the stream's max_viewers");
    assert_eq!(second.retry_after.as_deref(), Some("5"));

    // The global limit, across streams.
    let ff2 = Ffwhep::start(&["--max-viewers", "1"]);
    assert_eq!(post(&ff2.url).await.status, 201);
    let over = post(&ff2.url).await;
    assert_eq!((over.status, over.retry_after.as_deref()), (503, Some("5")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_trickles_candidates_and_refuses_ice_restart() {
    let ff = Ffwhep::start(&[]);
    let p = post(&ff.url).await;
    assert_eq!(p.status, 201);
    let session = format!("{}{}", ff.base(), p.location.unwrap());
    let etag = p.etag.unwrap();
    let u = ufrag(&p.offer.sdp);
    let http = reqwest::Client::new();
    let patch = |body: String, ct: &str, if_match: Option<&str>| {
        let mut r = http.patch(&session).header("content-type", ct).body(body);
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send()
    };
    let trickle = format!(
        "a=ice-ufrag:{u}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n"
    );
    let r = patch(
        trickle.clone(),
        "application/trickle-ice-sdpfrag",
        Some(&etag),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let r = patch(trickle.clone(), "application/trickle-ice-sdpfrag", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "If-Match is optional for trickle");
    let r = patch(
        trickle.clone(),
        "application/trickle-ice-sdpfrag",
        Some("\"other\""),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 412);
    let r = patch(trickle, "application/sdp", Some(&etag))
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let restart = "a=ice-ufrag:newone\r\na=ice-pwd:newpasswordnewpassword12\r\n".to_owned();
    let r = patch(restart, "application/trickle-ice-sdpfrag", Some(&etag))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("ICE restart is not supported")
    );

    // Other methods: 405 with Allow.
    let r = http.get(&session).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(
        allow.contains("DELETE") && allow.contains("PATCH"),
        "{allow}"
    );
    let r = http.put(&ff.url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = http
        .request(reqwest::Method::OPTIONS, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["accept-patch"],
        "application/trickle-ice-sdpfrag"
    );
    p.offer.pc.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_session_is_dropped() {
    let ff = Ffwhep::start(&["--setup-timeout", "1s"]);
    // Answered, but the client never applies the answer: ICE never completes.
    let p = post(&ff.url).await;
    assert_eq!(p.status, 201);
    let session = format!("{}{}", ff.base(), p.location.unwrap());
    ff.wait_log(
        Duration::from_secs(60),
        "the half-open session to go",
        |l| l.contains("ICE/DTLS did not complete in time"),
    );
    assert_eq!(
        reqwest::Client::new()
            .delete(&session)
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "its resources were not freed"
    );
    p.offer.pc.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origins_ice_servers_and_nat_addresses_are_configurable() {
    let ff = Ffwhep::start(&[
        "--cors-origin",
        "https://app.example",
        "--ice-server",
        "stun:stun.example.org:3478",
        "--ice-server",
        "turn:turn.example.org:3478?transport=udp",
        "--ice-username",
        "viewer",
        "--ice-credential",
        "pass",
    ]);
    let http = reqwest::Client::new();
    let options = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &ff.url)
            .header("origin", origin)
            .send()
    };
    let ok = options("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers()["vary"], "Origin");
    let links: Vec<&str> = ok
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            "<stun:stun.example.org:3478>; rel=\"ice-server\"",
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"viewer\"; credential=\"pass\"; credential-type=\"password\"",
        ]
    );
    let other = options("https://elsewhere.example").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "an unlisted origin was allowed"
    );

    // NAT 1:1: the answer's candidates carry the public address.
    let natted = Ffwhep::start(&["--nat-ip", "203.0.113.7"]);
    let (r, offer) = common::post_offer(&natted.url, None).await;
    assert_eq!(r.status(), 201);
    let body = r.text().await.unwrap();
    let candidates: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    assert!(!candidates.is_empty());
    assert!(
        candidates.iter().all(|c| c.contains(" 203.0.113.7 ")),
        "{candidates:?}"
    );
    offer.pc.close().await.ok();
}

#[test]
fn https_with_a_certificate_serves_a_viewer_nobody_here_wrote() {
    let (cert, key) = common::self_signed();
    let ff = Ffwhep::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(ff.url.starts_with("https://127.0.0.1:"), "{}", ff.url);
    let stats = common::aiortc_view(
        &ff.url,
        &["--frames", "21", "--seconds", "60"],
        &[("SSL_CERT_FILE", cert.as_os_str())],
    );
    assert_eq!(stats["status"], 201, "{stats}");
    assert!(stats["video_frames"].as_u64().unwrap() > 20, "{stats}");
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &ff.url.replace("https://", "http://"),
        ])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "201");
}

#[test]
fn a_missing_certificate_is_a_setup_error() {
    let out = common::bin()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loading the TLS certificate /nonexistent/c.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_posts_does_not_slow_the_viewers() {
    let ff = Ffwhep::start(&[]);
    let v = common::connect(&ff.url).await;
    common::wait_for(&v, Duration::from_secs(60), "media", |r| {
        r.frames_since_idr > 30
    })
    .await;
    let ffmpeg_frames =
        |s: serde_json::Value| s["streams"][0]["progress"]["frame"].as_u64().unwrap();
    let made_before = ffmpeg_frames(common::status(&ff).await);
    let before = v.received().frames_since_idr;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = ff.url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut refused = 0;
            for j in 0..150 {
                let (ct, body) = match (i + j) % 3 {
                    0 => ("application/sdp", "v=0\r\nnot an offer\r\n".to_owned()),
                    1 => ("text/plain", "hello".to_owned()),
                    _ => ("application/sdp", "x".repeat(100_000)),
                };
                let r = http
                    .post(&url)
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                refused += u32::from(r.status().is_client_error());
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let r = v.received();
    let made = ffmpeg_frames(common::status(&ff).await) - made_before;
    assert_eq!(refused, 1200, "every bad POST gets a 4xx");
    assert_eq!(r.video.lost + r.audio.lost, 0);
    // The viewer kept up with what FFmpeg made while the flood lasted (its
    // progress comes once a second: up to 30 frames behind, the viewer's
    // pipeline a few more), whatever the machine's speed.
    let frames = r.frames_since_idr - before;
    assert!(
        frames + 45 >= made,
        "{frames} frames to the viewer while FFmpeg made {made}"
    );
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_ports_from_the_configured_range() {
    let ff = Ffwhep::start(&["--udp-port-range", "45100-45120"]);
    let mut ports = Vec::new();
    for _ in 0..2 {
        let (r, offer) = common::post_offer(&ff.url, None).await;
        assert_eq!(r.status(), 201);
        let answer = r.text().await.unwrap();
        for line in answer.lines().filter(|l| l.starts_with("a=candidate:")) {
            let port: u16 = line.split(' ').nth(5).unwrap().parse().unwrap();
            assert!((45100..=45120).contains(&port), "{line}");
            ports.push(port);
        }
        offer.pc.close().await.ok();
    }
    ports.dedup();
    assert!(ports.len() >= 2, "both viewers on one port: {ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_candidates_are_offered_when_asked_for() {
    let ff = Ffwhep::start(&["--ice-tcp-addr", "127.0.0.1:0"]);
    let (r, offer) = common::post_offer(&ff.url, None).await;
    let answer = r.text().await.unwrap();
    assert!(
        answer.lines().any(|l| l.starts_with("a=candidate:")
            && l.contains(" tcp ")
            && l.contains("tcptype passive")),
        "{answer}"
    );
    offer.pc.close().await.ok();
    let plain = Ffwhep::start(&[]);
    let (r, offer) = common::post_offer(&plain.url, None).await;
    assert!(
        !r.text().await.unwrap().contains(" tcp "),
        "TCP candidates without --ice-tcp-addr"
    );
    offer.pc.close().await.ok();
}

/// Lines of an SDP without its UDP candidates.
fn without_udp_candidates(sdp: String) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !(l.starts_with("a=candidate:") && l.split(' ').nth(2) == Some("udp")))
        .collect()
}

/// A viewer that can use TCP only (its UDP candidates and ours are taken
/// out of the offer and the answer) gets the stream over ICE-TCP, framed
/// as RFC 4571 says, through the media engine like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_carries_a_viewer_whose_udp_is_blocked() {
    let ff = Ffwhep::start(&["--ice-tcp-addr", "127.0.0.1:0"]);
    let offer = ffwhep::smoke::viewer::Offer::with_tcp().await.unwrap();
    let v = ffwhep::smoke::viewer::Viewer::connect_with(
        offer,
        &ff.url,
        None,
        without_udp_candidates,
        without_udp_candidates,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", ff.log()));
    common::wait_for(&v, Duration::from_secs(60), "media over ICE-TCP", |r| {
        r.frames_since_idr > 30 && r.audio.packets > 20
    })
    .await;
    let tcp_port = v
        .answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains(" tcp "))
        .and_then(|l| l.split(' ').nth(5))
        .expect("a TCP candidate in the answer")
        .to_owned();
    let status = common::status(&ff).await;
    let viewer = &status["streams"][0]["viewers"][0];
    assert_eq!(viewer["transport"], "tcp", "{status}");
    let remote = viewer["remote"].as_str().unwrap_or_default();
    assert!(remote.starts_with("127.0.0.1:"), "{status}");
    assert_ne!(remote, format!("127.0.0.1:{tcp_port}"), "our own address");
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_can_share_one_udp_port() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mux = format!("127.0.0.1:{port}");
    let ff = Ffwhep::start(&["--udp-mux", &mux]);
    let a = common::connect(&ff.url).await;
    let b = common::connect(&ff.url).await;
    for v in [&a, &b] {
        common::wait_for(v, Duration::from_secs(60), "media through the mux", |r| {
            r.frames_since_idr > 30 && r.audio.packets > 20
        })
        .await;
        let r = v.received();
        assert_eq!(r.video.lost + r.audio.lost, 0);
        let ports: Vec<&str> = v
            .answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .filter_map(|l| l.split(' ').nth(5))
            .collect();
        assert!(
            !ports.is_empty() && ports.iter().all(|p| *p == port.to_string()),
            "{ports:?}"
        );
    }
    // A viewer nobody here wrote shares the port too.
    let stats = common::aiortc_view(&ff.url, &["--frames", "21", "--seconds", "60"], &[]);
    assert!(
        stats["video_frames"].as_u64().unwrap() > 20,
        "aiortc through the mux: {stats}"
    );
    // Hanging one up leaves the other playing.
    let http = reqwest::Client::new();
    assert_eq!(
        http.delete(format!("{}{}", ff.base(), a.location))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = b.received().video.packets;
    common::wait_for(&b, Duration::from_secs(30), "media after the DELETE", |r| {
        r.video.packets > before + 20
    })
    .await;
    b.close().await;
}

#[test]
fn oversized_and_slow_request_headers_are_refused() {
    use std::io::{Read, Write};
    let ff = Ffwhep::start(&[]);
    let addr = ff.base().trim_start_matches("http://").to_owned();
    // Over the 64 KiB header buffer.
    let mut big = std::net::TcpStream::connect(&addr).unwrap();
    let header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let _ = big.write_all(header.as_bytes());
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply);
    assert!(
        !reply.starts_with("HTTP/1.1 200"),
        "an oversized header was served: {reply}"
    );
    // Headers that never finish: the connection is closed after the 10 s limit.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest).is_ok();
    assert!(closed, "the half-sent request was kept open past 60 s");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed before the limit"
    );
    assert!(!String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
}

/// A STUN server (this test's) tells ffwhep what it sees of a shard's
/// socket: the answer carries that as a server-reflexive candidate, related
/// to the host candidate it was seen from. (The reflexive address it reports
/// is 127.0.0.2, still loopback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reflexive_candidates_come_from_a_stun_server() {
    let stun = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stun.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let stun_url = format!("stun:{}", stun.local_addr().unwrap());
    let ff = Ffwhep::start(&["--ice-server", &stun_url]);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = stun.recv_from(&mut buf) {
            let mapped = std::net::SocketAddr::new([127, 0, 0, 2].into(), from.port());
            common::stun_success(&stun, &buf[..n], from, mapped);
        }
    });
    let (r, offer) = common::post_offer(&ff.url, None).await;
    assert_eq!(r.status(), 201);
    let answer = r.text().await.unwrap();
    let host_ports: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .filter_map(|l| l.split(' ').nth(5))
        .collect();
    let srflx = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:") && l.contains(" typ srflx"))
        .unwrap_or_else(|| panic!("no server-reflexive candidate:\n{answer}"));
    let f: Vec<&str> = srflx.split(' ').collect();
    assert_eq!(f[4], "127.0.0.2", "{srflx}");
    assert!(host_ports.contains(&f[5]), "{srflx} vs {host_ports:?}");
    assert!(
        srflx.contains(&format!("raddr 127.0.0.1 rport {}", f[5])),
        "{srflx}"
    );
    offer.pc.close().await.ok();
}

/// A viewer whose offer is being answered while its run ends is refused
/// with 409 and Retry-After, and nothing of it stays: the answer is held
/// back by a STUN server (this test) that replies only once FFmpeg was
/// killed and the next run has started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_run_ended_during_setup_is_refused() {
    let stun = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stun.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let stun_url = format!("stun:{}", stun.local_addr().unwrap());
    let profile = testsrc_profile(
        "straddle",
        "restart:\n  policy: always\n  initial_delay: 100ms\n",
    );
    let ff = Ffwhep::start(&[
        profile.to_str().unwrap(),
        "--ice-server",
        &stun_url,
        "--ice-gather-timeout",
        "120s",
    ]);
    let first_ffmpeg = ff.ffmpeg_pid();
    let status = common::StatusReader::new(&ff);
    let before = status.tasks().await;
    let url = ff.url.clone();
    let posted = tokio::spawn(async move { post(&url).await });
    // The server is gathering for the viewer of run 1: its STUN request is here.
    let (request, from) = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 1500];
        let (n, from) = stun
            .recv_from(&mut buf)
            .expect("no STUN request within 60 s");
        (buf[..n].to_vec(), (from, stun))
    })
    .await
    .unwrap();
    let (from, stun) = from;
    common::kill(first_ffmpeg, libc::SIGKILL);
    ff.wait_log(Duration::from_secs(60), "run 2", |l| {
        l.lines()
            .any(|line| line.contains("run=2") && line.contains("FFmpeg started"))
    });
    common::stun_success(&stun, &request, from, from);
    let p = posted.await.unwrap();
    assert_eq!(p.status, 409, "a viewer of an ended run was accepted");
    assert!(p.retry_after.is_some(), "no Retry-After");
    assert!(p.location.is_none());
    ff.wait_log(Duration::from_secs(60), "the refusal", |l| {
        l.contains("viewer refused after setup")
    });
    // Nothing of the refused viewer is left: no session, and as many tasks
    // as before it came (run 2 has what run 1 had).
    p.offer.pc.close().await.ok();
    status.wait_tasks(before).await;
    let now = status.get().await;
    let s = &now["streams"][0];
    assert_eq!(s["viewers"].as_array().unwrap().len(), 0, "{s}");
}
