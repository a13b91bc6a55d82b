//! The player page in real headless Chromium (Debian's, driven by
//! playwright-core from npm): it decodes the stream, shows the end when
//! FFmpeg is killed, and plays again after the restart. The screenshot of
//! the playing page is kept at target/browser/player.png.

mod common;

use common::{Ffwhep, kill, testsrc_profile};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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
