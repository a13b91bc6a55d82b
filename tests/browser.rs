//! The player page in real headless Chromium (Debian's, driven by
//! playwright-core from npm): it decodes the stream, shows the end when
//! FFmpeg is killed, and plays again after the restart. The screenshot of
//! the playing page is kept at target/browser/player.png.

mod common;

use common::{Ffwhep, kill, testsrc_profile};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How many viewers the log says hung up with DELETE.
fn deletes(log: &str) -> usize {
    log.matches("viewer hung up (DELETE)").count()
}

/// Opens `player` `n` times (after one load to warm up) at random moments
/// of a `gop`-second GOP with `tests/browser/first_frame.mjs`: each load's
/// report (a failed one has an `error`), and the summary.
fn page_loads(
    player: &str,
    n: u32,
    gop: u32,
    env: &[(&str, &str)],
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let out = Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
        .envs(env.iter().copied())
        .args(["first_frame.mjs", player, &n.to_string(), &gop.to_string()])
        .output()
        .expect("node not found (scripts/setup installs the browser test's needs)");
    let mut lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.pop().expect("no output from first_frame.mjs")["summary"].take();
    // The first load warms the browser up; it is not one of the n.
    lines.retain(|l| l["load"].as_u64() > Some(0));
    (lines, summary)
}

fn next_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> serde_json::Value {
    let line = lines
        .next()
        .expect("the browser driver ended early")
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn player_page_plays_shows_the_end_and_reconnects() {
    let profile = testsrc_profile(
        "play",
        "restart:\n  policy: on-failure\n  initial_delay: 1s\n",
    );
    // Chromium offers its interface addresses, so serve on them too.
    let ff = Ffwhep::start(&[profile.to_str().unwrap(), "--ice-addr", "0.0.0.0:0"]);
    let player = ff.url.replace("/whep/", "/play/");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let shot_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/browser");
    std::fs::create_dir_all(shot_dir).unwrap();
    let shot = format!("{shot_dir}/player.png");
    let _ = std::fs::remove_file(&shot);
    let mut driver = Command::new("node")
        .current_dir(dir)
        .args(["player.mjs", &player, &shot])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node not found (scripts/setup installs the browser test's needs)");
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();

    let playing = next_event(&mut lines);
    assert_eq!(playing["event"], "playing", "{playing}; log:\n{}", ff.log());
    assert_eq!(
        (playing["width"].as_u64(), playing["height"].as_u64()),
        (Some(640), Some(360)),
        "{playing}"
    );
    assert!(playing["framesDecoded"].as_u64().unwrap() > 45, "{playing}");
    assert!(playing["audioPackets"].as_u64().unwrap() > 50, "{playing}");
    assert!(playing["firstFrameMs"].as_u64().is_some(), "{playing}");
    let png = std::fs::read(&shot).expect("no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "the screenshot is not a picture"
    );

    kill(ff.all("pid")[0] as i32, libc::SIGKILL);
    let ended = next_event(&mut lines);
    eprintln!("page saw the end as: {}", ended["stateText"]);
    assert_eq!(ended["event"], "ended", "{ended}; log:\n{}", ff.log());
    assert!(
        ended["stateText"].as_str().unwrap().starts_with("ended")
            || ended["ended"].as_u64() == Some(1),
        "{ended}"
    );

    let replaying = next_event(&mut lines);
    assert_eq!(
        replaying["event"],
        "replaying",
        "{replaying}; log:\n{}",
        ff.log()
    );
    assert!(replaying["connects"].as_u64().unwrap() >= 2, "{replaying}");
    // By now the page has the stream's snapshot as its poster.
    assert_eq!(replaying["poster"], true, "{replaying}; log:\n{}", ff.log());

    // Hidden while it plays muted, the page says DELETE: its viewer is gone.
    let before = deletes(&ff.log());
    let hidden = next_event(&mut lines);
    assert_eq!(hidden["event"], "hidden", "{hidden}; log:\n{}", ff.log());
    ff.wait_log(Duration::from_secs(60), "the hidden page's DELETE", |log| {
        deletes(log) > before
    });
    assert_eq!(
        deletes(&ff.log()),
        before + 1,
        "no DELETE from the hidden page; log:\n{}",
        ff.log()
    );
    let shown = next_event(&mut lines);
    assert_eq!(shown["event"], "shown", "{shown}; log:\n{}", ff.log());
    assert!(driver.wait().unwrap().success());
}

#[test]
fn the_whip_whep_npm_player_plays_with_the_token_and_is_refused_without() {
    let token = "whep-npm-secret";
    let profile = testsrc_profile("npm", &format!("auth:\n  token: {token}\n"));
    let ff = Ffwhep::start(&[profile.to_str().unwrap(), "--ice-addr", "0.0.0.0:0"]);
    let out = Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
        .args(["whep_client.mjs", &ff.url, token])
        .output()
        .expect("node not found");
    let line = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(
        seen["withToken"]["error"],
        serde_json::Value::Null,
        "{seen}; log:\n{}",
        ff.log()
    );
    assert_eq!(
        (
            seen["withToken"]["width"].as_u64(),
            seen["withToken"]["height"].as_u64()
        ),
        (Some(640), Some(360)),
        "{seen}"
    );
    assert!(
        seen["withoutToken"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("401"),
        "{seen}"
    );
}

/// The player's start in Chromium, 20 page loads at random moments of a
/// 4 s GOP (the figures are the bench's to judge: `scripts/bench-join`):
/// every load plays; its timeline, shown under the video, runs in order
/// (the POST goes before ICE gathering has finished, so nothing waits for
/// it); the page asks for the server's ICE servers and Chromium uses them
/// (this test's STUN server hears from it); and each page that closes
/// sends DELETE, so its viewer is gone at once.
#[test]
fn the_player_posts_at_once_shows_its_timeline_and_leaves_with_delete() {
    let stun = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stun_url = format!("stun:{}", stun.local_addr().unwrap());
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let heard = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = stun.recv_from(&mut buf) {
                heard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                common::stun_success(&stun, &buf[..n], from, from);
            }
        });
    }
    let profile = common::testsrc_profile_gop("fast", 4);
    let ff = Ffwhep::start(&[
        profile.to_str().unwrap(),
        "--ice-addr",
        "127.0.0.1:0",
        "--ice-server",
        &stun_url,
    ]);
    let player = ff.url.replace("/whep/", "/play/");
    let (loads, summary) = page_loads(&player, 20, 4, &[]);
    eprintln!("first frame, ms since navigation start: {summary}");
    assert_eq!(summary["failures"], 0, "{loads:?}; log:\n{}", ff.log());
    assert_eq!(summary["loads"], 20, "{loads:?}");
    for load in &loads {
        let t = &load["timeline"];
        let at = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("no {k} in {load}"));
        assert!(
            at("pc") <= at("post") && at("post") <= at("answer"),
            "{load}"
        );
        // The browser's own events (ICE, DTLS, gathering) come when its
        // main thread gets to them: each is only required to be there.
        for step in ["gathering", "ice", "dtls", "frame"] {
            at(step);
        }
        // The offer went without waiting for gathering to complete, and
        // what gathering found went after it by PATCH.
        assert!(at("post") < at("gathered"), "{load}");
        assert!(load["trickled"].as_u64() > Some(0), "{load}");
        assert!(
            load["shown"].as_str().unwrap().contains("first frame"),
            "the page does not show its timeline: {load}"
        );
        assert_eq!(
            load["iceServers"][0]["urls"].as_str(),
            Some(stun_url.as_str()),
            "{load}"
        );
    }
    assert!(
        heard.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "Chromium never asked the STUN server the page was given"
    );
    // 21 pages (one to warm up) closed: 21 DELETEs, each at once (ICE
    // consent would take seconds, and says "connection ended").
    ff.wait_log(Duration::from_secs(60), "21 DELETEs", |log| {
        deletes(log) >= 21
    });
    assert_eq!(deletes(&ff.log()), 21, "log:\n{}", ff.log());
}

/// A TURN server (coturn, run by this test on loopback) the server advertises.
struct Turn(std::process::Child);

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A viewer that can reach the server only through a TURN relay still
/// plays: the player gets the TURN server from the server (OPTIONS with
/// Link headers), sets it before gathering, and trickles its relay
/// candidate; the page's own stats name the path (`?relay` limits it to
/// relay candidates).
#[test]
fn the_player_plays_through_a_turn_relay() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::env::temp_dir().join(format!("ffwhep-turn-{}.log", std::process::id()));
    let _turn = Turn(
        Command::new("turnserver")
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--allow-loopback-peers",
                "--lt-cred-mech",
                "--user=viewer:secret",
            ])
            .args(["--realm=ffwhep", "--no-tls", "--no-dtls", "--no-cli"])
            .arg(format!("--log-file={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver not found (scripts/setup installs coturn)"),
    );
    let turn = format!("turn:127.0.0.1:{port}?transport=udp");
    let ff = Ffwhep::start(&[
        "--ice-addr",
        "127.0.0.1:0",
        "--ice-server",
        &turn,
        "--ice-username",
        "viewer",
        "--ice-credential",
        "secret",
    ]);
    let player = format!("{}?relay", ff.url.replace("/whep/", "/play/"));
    let (loads, summary) = page_loads(&player, 2, 1, &[("WAIT_PATH", "1")]);
    assert_eq!(
        summary["failures"],
        0,
        "{loads:?}; turn log:\n{}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        ff.log()
    );
    for load in &loads {
        assert!(
            load["path"].as_str().unwrap_or("").starts_with("relay"),
            "media did not come through the relay: {load}"
        );
    }
    let _ = std::fs::remove_file(&log);
}
