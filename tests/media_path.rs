//! The media path with real FFmpeg and real viewers: the GOP cache gives a
//! viewer joining mid-GOP a keyframe at once, a stuck viewer never hurts the
//! others, and NACKs repair loss toward one viewer.

mod common;

use common::lossy::{Shim, rewrite_candidates};
use common::{Ffwhep, connect, probe_h264, wait_for};
use ffwhep::smoke::viewer::{Viewer, summary};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_mid_gop_gets_the_cached_keyframe_at_once() {
    // A 10 s GOP, joined once FFmpeg is 3 s (90 frames) in.
    let profile = common::testsrc_profile_gop("gop10", 10);
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    common::wait_frames(&ff, 90).await;
    let v = connect(&ff.url).await;
    wait_for(
        &v,
        Duration::from_secs(60),
        "a keyframe and 60 frames",
        |r| r.decodable() && r.frames_since_idr >= 60,
    )
    .await;
    let r = v.received();
    // The cached GOP arrives at once, so the viewer holds more media time
    // than wall time has passed since its first packet: by the age of the
    // GOP when it joined (3 s or more). Waiting for the next keyframe
    // instead would give no lead at all.
    let lead = common::checks::video_lead(&r).unwrap();
    assert!(
        lead > Duration::from_millis(1500),
        "a lead of {lead:?} over the wall clock: the cache did not serve the GOP"
    );
    assert_eq!(r.video.lost, 0, "{}", summary(&r));
    // The cached GOP and the live packets after it decode as one clean stream.
    let path = std::env::temp_dir().join(format!("ffwhep-gop-{}.h264", std::process::id()));
    std::fs::write(&path, &r.h264).unwrap();
    let (w, h, frames) = probe_h264(&path);
    assert_eq!((w, h), (640, 360));
    assert!(frames >= 60, "{frames} frames decoded");
    let errors = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        errors.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&errors.stderr)
    );
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_viewer_does_not_hurt_the_others() {
    let ff = Ffwhep::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_viewer.py");
    // An aiortc viewer that connects, then stops reading: SIGSTOP.
    let mut stuck = Command::new("python3")
        .args([script, &ff.url, "--seconds", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Stopped once it is being sent media.
    common::wait_status(&ff, "the aiortc viewer's media", |s| {
        s["streams"][0]["viewers"][0]["packets_sent"]
            .as_u64()
            .unwrap_or(0)
            > 100
    })
    .await;
    common::kill(stuck.id() as i32, libc::SIGSTOP);
    let a = connect(&ff.url).await;
    let b = connect(&ff.url).await;
    for v in [&a, &b] {
        wait_for(v, Duration::from_secs(60), "100 frames", |r| {
            r.frames_since_idr >= 100
        })
        .await;
    }
    for v in [&a, &b] {
        let r = v.received();
        assert_eq!(r.video.lost + r.audio.lost, 0, "{}", summary(&r));
        assert!(r.frames_since_idr >= 100, "{}", summary(&r));
        // Every frame between the first and last marker arrived whole.
        let markers = r.video_packets.values().filter(|(_, m)| *m).count() as u64;
        assert_eq!(r.complete_frames(), markers - 1, "{}", summary(&r));
    }
    common::kill(stuck.id() as i32, libc::SIGKILL);
    let _ = stuck.wait();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_repair_loss_toward_one_viewer() {
    let ff = Ffwhep::start(&[]);
    let shim = Shim::new();
    let (server_side, viewer_side) = (shim.server_side(), shim.viewer_side());
    let addrs = std::sync::Mutex::new((None, None));
    let lossy = Viewer::connect_via(
        &ff.url,
        None,
        |offer| {
            let (sdp, viewer) = rewrite_candidates(&offer, server_side);
            addrs.lock().unwrap().0 = viewer;
            sdp
        },
        |answer| {
            let (sdp, server) = rewrite_candidates(&answer, viewer_side);
            let (viewer, _) = *addrs.lock().unwrap();
            addrs.lock().unwrap().1 = server;
            shim.start(
                viewer.expect("no viewer candidate"),
                server.expect("no server candidate"),
                0.02,
            );
            sdp
        },
    )
    .await
    .unwrap();
    let clean = connect(&ff.url).await;
    wait_for(&clean, Duration::from_secs(60), "180 frames", |r| {
        r.frames_since_idr >= 180
    })
    .await;
    let (l, c) = (lossy.received(), clean.received());
    let dropped = shim.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let ratio = l.complete_frames() as f64 / c.complete_frames() as f64;
    eprintln!(
        "shim dropped {dropped} packets; complete frames: lossy {} clean {} ({:.1}%); lossy viewer still missing {} video packets",
        l.complete_frames(),
        c.complete_frames(),
        ratio * 100.0,
        l.video.lost
    );
    assert!(dropped > 20, "the shim dropped only {dropped} packets");
    assert!(
        ratio > 0.97,
        "loss repair failed: lossy {} vs clean {} complete frames",
        l.complete_frames(),
        c.complete_frames()
    );
    lossy.close().await;
    clean.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_keep_audio_and_video_in_step() {
    let ff = Ffwhep::start(&[]);
    let v = connect(&ff.url).await;
    // Sender reports come every few seconds.
    wait_for(
        &v,
        Duration::from_secs(60),
        "sender reports for both tracks",
        |r| r.sender_reports.iter().all(Option::is_some) && r.frames_since_idr > 30,
    )
    .await;
    // Measured against arrival times, which a busy machine delays: the
    // bound is for a real misalignment (FFmpeg's own is some 20 ms).
    let error = common::checks::av_sync_error(&v.received()).unwrap();
    assert!(
        error < Duration::from_millis(250),
        "reports put audio and video {error:?} off their arrival"
    );
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_source_ports_does_not_disturb_a_viewer() {
    let ff = Ffwhep::start(&[]);
    let v = connect(&ff.url).await;
    wait_for(&v, Duration::from_secs(60), "media", |r| {
        r.frames_since_idr > 30
    })
    .await;
    let (vport, aport) = ff.ports();
    let frames_before = v.received().frames_since_idr;
    // Two seconds of everything a stray process could send to the ports.
    let flood = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut x: u32 = 1;
        let start = std::time::Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = (x >> 8) as usize % 1500;
            let mut junk: Vec<u8> = (0..len).map(|i| (x >> (i % 24)) as u8).collect();
            match x % 5 {
                0 if len > 12 => junk[..2].copy_from_slice(&[0x80, 102]), // right type, foreign SSRC
                1 if len > 12 => junk[..2].copy_from_slice(&[0x80, 96]),  // wrong payload type
                2 if len > 1 => junk[..2].copy_from_slice(&[0x80, 200]),  // RTCP
                3 => junk.truncate(len % 12),                             // truncated header
                _ => {}
            }
            for port in [vport, aport] {
                let _ = sock.send_to(&junk, ("127.0.0.1", port));
                sent += 1;
            }
            if sent.is_multiple_of(8) {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        sent
    });
    let sent = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    wait_for(
        &v,
        Duration::from_secs(60),
        "the picture through the flood",
        |r| r.frames_since_idr > frames_before + 45,
    )
    .await;
    let r = v.received();
    assert_eq!(r.video.lost + r.audio.lost, 0, "{}", summary(&r));
    assert!(
        r.frames_since_idr > frames_before + 45,
        "the picture stalled during the flood: {}",
        summary(&r)
    );
    let markers = r.video_packets.values().filter(|(_, m)| *m).count() as u64;
    assert_eq!(
        r.complete_frames(),
        markers - 1,
        "a frame was broken: {}",
        summary(&r)
    );
    let status = common::status(&ff).await;
    let video = &status["streams"][0]["sources"]["video"];
    assert!(
        video["errors"].as_u64().unwrap() > 0 && video["rejected"].as_u64().unwrap() > 0,
        "{video}"
    );
    eprintln!("flood of {sent} datagrams: video source counted {video}");
    v.close().await;
}
