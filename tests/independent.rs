//! A viewer nobody here wrote: aiortc (Python, `pip install aiortc`) decodes
//! the stream, and sees the hang-up when FFmpeg is killed.

mod common;

use common::{Ffwhep, kill};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn aiortc_decodes_the_stream_and_is_hung_up_when_ffmpeg_dies() {
    let mut ff = Ffwhep::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_viewer.py");
    let mut viewer = Command::new("python3")
        .args([
            script,
            &ff.url,
            "--frames",
            "45",
            "--audio-frames",
            "50",
            "--seconds",
            "60",
            "--wait-hangup",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 not found");
    let mut lines = BufReader::new(viewer.stdout.take().unwrap()).lines();
    let ready = lines
        .next()
        .expect("aiortc viewer printed nothing")
        .unwrap();
    assert!(
        ready.contains("\"ready\": true"),
        "{ready}; log:\n{}",
        ff.log()
    );

    kill(ff.ffmpeg_pid(), libc::SIGKILL);
    let killed = Instant::now();
    let line = lines
        .next()
        .expect("no summary from the aiortc viewer")
        .unwrap();
    let hung_up_after = killed.elapsed();
    let _ = viewer.wait();
    let stats: serde_json::Value = serde_json::from_str(&line).unwrap();

    assert_eq!(stats["status"], 201, "{stats}");
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(640), Some(360)),
        "{stats}"
    );
    assert!(
        stats["video_frames"].as_u64().unwrap() >= 45,
        "too few frames decoded: {stats}"
    );
    assert!(
        stats["audio_frames"].as_u64().unwrap() >= 50,
        "too little audio decoded: {stats}"
    );
    assert!(
        stats["hangup_seconds"].is_number(),
        "aiortc never saw the hang-up: {stats}"
    );
    // Without the hang-up, aiortc would notice only when ICE consent
    // fails, some 30 s on.
    assert!(
        hung_up_after < Duration::from_secs(15),
        "hang-up took {hung_up_after:?}: {stats}"
    );
    assert_ne!(ff.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

#[test]
fn aiortc_joining_a_4s_gop_mid_way_decodes_at_once() {
    // Joined 1.5 s (45 frames) into a 10 s GOP: without the GOP cache the
    // first frame could not come before the next keyframe, 8.5 s away.
    let profile = common::testsrc_profile_gop("gop10", 10);
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::wait_frames(&ff, 45));
    let stats = common::aiortc_view(&ff.url, &["--frames", "60", "--seconds", "60"], &[]);
    let first = stats["first_frame_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no frame decoded: {stats}"));
    assert!(
        first < 6000,
        "first decoded frame after {first} ms: {stats}"
    );
    assert!(stats["video_frames"].as_u64().unwrap() >= 60, "{stats}");
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(640), Some(360))
    );
}
