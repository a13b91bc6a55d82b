//! Supervision with the real binary and real FFmpeg: restarts with backoff,
//! 409 between runs, stall detection, signals, --duration, several profiles,
//! JSON logs and smoke mode.

mod common;

use common::{Ffwhep, bin, connect, kill, temp_file, wait_for};
use std::time::Duration;

const TESTSRC_INPUTS: &str = "input:\n  - address: testsrc2=size=320x240:rate=30\n    options: [-re, -f, lavfi]\n  \
    - address: sine=frequency=440:sample_rate=48000\n    options: [-re, -f, lavfi]\nwebrtc:\n  audio: {map: '1:a:0'}\n";

fn restart_profile() -> std::path::PathBuf {
    temp_file(
        "restart.yaml",
        &format!(
            "id: flaky\n{TESTSRC_INPUTS}restart:\n  policy: on-failure\n  initial_delay: 2s\n  factor: 2\n  \
             jitter: 0\n  max_attempts: 2\n  window: 10m\n"
        ),
    )
}

async fn post_status(url: &str) -> (u16, Option<u64>) {
    let (r, offer) = common::post_offer(url, None).await;
    offer.pc.close().await.ok();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_with_backoff_then_gives_up() {
    let mut ff = Ffwhep::start(&[restart_profile().to_str().unwrap()]);
    let a = connect(&ff.url).await;
    wait_for(&a, Duration::from_secs(60), "video", |r| {
        r.video.packets > 20
    })
    .await;

    // Run 1 dies: the viewer is hung up, POSTs get 409 until run 2.
    kill(ff.all("pid")[0] as i32, libc::SIGKILL);
    assert!(
        common::checks::wait_hung_up(&a, Duration::from_secs(60))
            .await
            .is_some(),
        "viewer not hung up on exit"
    );
    ff.wait_log(Duration::from_secs(60), "the restart decision", |l| {
        l.contains("restarting after the delay")
    });
    let (status, retry) = post_status(&ff.url).await;
    assert_eq!(status, 409, "between runs");
    assert!(
        matches!(retry, Some(1..=2)),
        "Retry-After {retry:?} does not follow the 2 s backoff"
    );

    // Run 2 comes up and a new viewer can join.
    ff.wait_log(Duration::from_secs(60), "run 2", |l| {
        l.matches("FFmpeg started").count() == 2
    });
    let b = connect(&ff.url).await;
    wait_for(
        &b,
        Duration::from_secs(60),
        "video after the restart",
        |r| r.video.packets > 20,
    )
    .await;

    // Run 2 dies: a longer delay.
    kill(ff.all("pid")[1] as i32, libc::SIGKILL);
    assert!(
        common::checks::wait_hung_up(&b, Duration::from_secs(60))
            .await
            .is_some(),
        "viewer not hung up on the second exit"
    );
    ff.wait_log(
        Duration::from_secs(60),
        "the second restart decision",
        |l| l.matches("restarting after the delay").count() == 2,
    );
    let (status, retry) = post_status(&ff.url).await;
    assert_eq!(status, 409);
    assert!(
        matches!(retry, Some(3..=4)),
        "Retry-After {retry:?} does not follow the 4 s backoff"
    );

    // Run 3 dies: two restarts within the window were allowed, no more.
    ff.wait_log(Duration::from_secs(60), "run 3", |l| {
        l.matches("FFmpeg started").count() == 3
    });
    kill(ff.all("pid")[2] as i32, libc::SIGKILL);
    let status = ff.wait_exit(Duration::from_secs(60));
    let log = ff.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "error: restarts exhausted (2 within 600 s); last run: FFmpeg was killed by signal 9"
        ),
        "{log}"
    );
    // The backoff, in the order things happened: 2 s, then 4 s, each logged
    // with its attempt and the exit status, before the run it delayed.
    assert_eq!(ff.all("delay_ms"), [2000, 4000], "{log}");
    assert_eq!(ff.all("attempt"), [1, 2], "{log}");
    let first_delay = log.find("delay_ms=2000").unwrap();
    let run2 = log.find("run{run=2}").unwrap();
    let second_delay = log.find("delay_ms=4000").unwrap();
    let run3 = log.find("run{run=3}").unwrap();
    assert!(
        first_delay < run2 && run2 < second_delay && second_delay < run3,
        "{log}"
    );
    assert!(log.contains("status=signal: 9 (SIGKILL)"), "{log}");
}

#[test]
fn a_stalled_input_is_detected_and_stopped() {
    let dir = temp_file("unused", "");
    let fifo = dir.with_file_name("input.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Ten 64x64 frames, then silence with the pipe held open.
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3>'{}'; head -c 61440 /dev/zero >&3; sleep 60",
            fifo.display()
        ))
        .spawn()
        .unwrap();
    let profile = temp_file(
        "stall.yaml",
        &format!(
            "id: stall\ninput:\n  - address: '{}'\n    options: [-f, rawvideo, -pix_fmt, yuv420p, -s, 64x64, -r, '10']\n\
             webrtc:\n  audio: {{enabled: false}}\nstale_timeout: 2s\n",
            fifo.display()
        ),
    );
    let mut ff = Ffwhep::start(&[profile.to_str().unwrap(), "--stop-grace", "1"]);
    let status = ff.wait_exit(Duration::from_secs(20));
    let _ = writer.kill();
    let _ = writer.wait();
    let log = ff.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("FFmpeg stalled; stopping it"), "{log}");
    assert!(log.contains("error: FFmpeg stalled (no "), "{log}");
}

#[test]
fn a_second_signal_skips_the_grace() {
    // A stand-in for FFmpeg that ignores SIGINT, so only SIGKILL ends it.
    let fake = temp_file(
        "fake-ffmpeg",
        "#!/bin/sh\ntrap '' INT\necho '[info] fake ffmpeg' >&2\nexec sleep 60\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut ff = Ffwhep::start(&["--ffmpeg", fake.to_str().unwrap(), "--stop-grace", "60"]);
    // The stand-in says so once its trap is set.
    ff.wait_log(Duration::from_secs(60), "the stand-in", |l| {
        l.contains("fake ffmpeg")
    });
    kill(ff.pid(), libc::SIGTERM);
    ff.wait_log(Duration::from_secs(60), "the first stop", |l| {
        l.contains("asking FFmpeg to stop (SIGINT)")
    });
    kill(ff.pid(), libc::SIGTERM);
    let status = ff.wait_exit(Duration::from_secs(60));
    let log = ff.log();
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(
        log.contains("second signal: killing FFmpeg without waiting"),
        "{log}"
    );
}

#[test]
fn sigint_exits_130() {
    let mut ff = Ffwhep::start(&[]);
    kill(ff.pid(), libc::SIGINT);
    assert_eq!(
        ff.wait_exit(Duration::from_secs(60)).code(),
        Some(130),
        "{}",
        ff.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_stops_cleanly_with_exit_zero() {
    let mut ff = Ffwhep::start(&["--duration", "3s"]);
    let v = connect(&ff.url).await;
    assert!(
        common::checks::wait_hung_up(&v, Duration::from_secs(60))
            .await
            .is_some(),
        "viewer not hung up at the end"
    );
    let status = ff.wait_exit(Duration::from_secs(60));
    let log = ff.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("duration reached: stopping"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_profiles_share_one_server() {
    let tone = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/audio-only.yaml");
    let test = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/testsrc.yaml");
    let mut ff = Ffwhep::start(&[test, tone]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ff.urls().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "one WHEP URL per stream; log:\n{}",
            ff.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let urls = ff.urls();
    assert_eq!(
        urls.iter()
            .map(|u| u.rsplit('/').next().unwrap())
            .collect::<std::collections::BTreeSet<_>>(),
        ["testsrc", "tone"].into_iter().collect()
    );
    assert_eq!(
        urls[0].split("/whep/").next(),
        urls[1].split("/whep/").next(),
        "not one server"
    );
    let tone_url = urls.iter().find(|u| u.ends_with("/tone")).unwrap();
    let v = connect(tone_url).await;
    wait_for(
        &v,
        Duration::from_secs(60),
        "audio of the second stream",
        |r| r.audio.packets > 20,
    )
    .await;
    kill(ff.pid(), libc::SIGTERM);
    assert_eq!(
        ff.wait_exit(Duration::from_secs(60)).code(),
        Some(143),
        "{}",
        ff.log()
    );
}

#[test]
fn the_worst_stream_decides_the_exit_status() {
    let short = temp_file(
        "short.yaml",
        "id: short\ninput:\n  - {address: 'testsrc2=size=160x120:rate=10:duration=1', options: [-re, -f, lavfi]}\n\
         webrtc: {audio: {enabled: false}}\n",
    );
    let broken = temp_file(
        "broken.yaml",
        "id: broken\ninput: [{address: /nonexistent/in.mp4}]\n",
    );
    let mut ff = Ffwhep::start(&[short.to_str().unwrap(), broken.to_str().unwrap()]);
    let status = ff.wait_exit(Duration::from_secs(20));
    let log = ff.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("error: stream broken: FFmpeg exited with status 1"),
        "{log}"
    );
    assert!(
        !log.contains("stream short:"),
        "the clean stream was reported as failed: {log}"
    );
}

#[test]
fn duplicate_stream_ids_are_refused() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/testsrc.yaml");
    let out = bin()
        .args(["run", "--listen", "127.0.0.1:0", p, p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stream id \"testsrc\" is already used by"),
        "{err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_stream_and_run() {
    let mut ff = Ffwhep::start_with(&["--duration", "2s"], &["--log-format", "json"]);
    assert_eq!(ff.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let log = ff.log();
    let mut with_run = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        let has = |k: &str, want: serde_json::Value| spans.iter().any(|s| s[k] == want);
        if has("stream", "testsrc".into()) && has("run", 1.into()) {
            with_run += 1;
        }
    }
    assert!(
        with_run > 5,
        "few lines carry the stream id and run number:\n{log}"
    );
    assert!(log.contains("\"target\":\"ffmpeg\""), "{log}");
}

fn smoke(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = bin().arg("smoke").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (
        out.status.code(),
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn smoke_passes_for_the_test_pattern() {
    let (code, s, err) = smoke(&["--expect-size", "640x360"]);
    assert_eq!(code, Some(0), "{s} {err}");
    assert_eq!(s["ok"], true);
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(s["first_keyframe_ms"].as_u64().is_some(), "{s}");
    assert!(s["video"]["packets"].as_u64().unwrap() > 30, "{s}");
    assert!(s["audio"]["packets"].as_u64().unwrap() >= 25, "{s}");
    assert_eq!(s["video"]["lost"], 0, "{s}");
}

#[test]
fn smoke_fails_for_a_missing_input_and_a_wrong_size() {
    let broken = temp_file(
        "broken.yaml",
        "id: broken\ninput: [{address: /nonexistent/in.mp4}]\n",
    );
    let (code, s, err) = smoke(&[broken.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{s} {err}");
    assert_eq!(s["ok"], false);
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{s}"
    );
    let (code, s, _) = smoke(&["--expect-size", "320x240"]);
    assert_eq!(code, Some(6), "{s}");
    assert!(
        s["reason"].as_str().unwrap().contains("expected 320x240"),
        "{s}"
    );
}
