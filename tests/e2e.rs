//! End to end: real FFmpeg, the real ffwhep binary, real HTTP and real
//! WebRTC viewers (webrtc-rs).

mod common;

use common::viewer::{Viewer, summary};
use common::{Ffwhep, alive, kill, probe_h264};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_decodable_h264_and_opus() {
    let ff = Ffwhep::start(&[]);
    let v = Viewer::connect(&ff.url).await;
    v.wait_for(Duration::from_secs(15), "SPS, PPS, IDR and 2 s of video", |r| {
        r.saw_nal(7) && r.saw_nal(8) && r.saw_nal(5) && r.video_packets > 200 && r.audio_packets > 50
    })
    .await;
    let r = v.received();
    assert!(r.video_mime.eq_ignore_ascii_case("video/H264"), "{}", summary(&r));
    assert!(r.audio_mime.eq_ignore_ascii_case("audio/opus"), "{}", summary(&r));
    // Opus packets of 20 ms at 64 kb/s are far from empty.
    assert!(r.audio_bytes / r.audio_packets > 20, "{}", summary(&r));
    let dir = tempdir();
    let path = dir.join("video.h264");
    std::fs::write(&path, &r.h264).unwrap();
    let (w, h, frames) = probe_h264(&path);
    assert_eq!((w, h), (640, 360), "picture size differs from the profile");
    assert!(frames >= 30, "only {frames} frames decoded");
    v.close().await;
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ffwhep-test-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
