//! `GET /snapshot/{id}.jpg`: the current picture, decoded from the GOP cache
//! at once, at the profile's size (or scaled); one decode for many requests;
//! clear refusals without a picture to give; the stream's token rules.

mod common;

use common::{Ffwhep, temp_file};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Frames a keyframe apart in the clock profile (4 s at 30 fps).
const GOP_FRAMES: u64 = 120;
/// The clock's luma repeats every this many frames (longer than a GOP).
const CYCLE: f64 = 130.0;

/// A 320x240 picture whose brightness tells its frame number: luma
/// 16 + 1.5 × (N mod 130), keyframes every 4 s.
fn clock_profile(id: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "id: {id}\n\
         input:\n  \
           - address: \"color=c=black:size=320x240:rate=30,geq=lum='16+1.5*mod(N\\\\,130)':cb=128:cr=128\"\n    \
             options: [\"-re\", \"-f\", \"lavfi\"]\n\
         webrtc:\n  \
           video:\n    \
             map: \"0:v:0\"\n    \
             keyframe_interval: 4s\n  \
           audio:\n    \
             enabled: false\n{extra}"
    );
    temp_file(&format!("{id}.yaml"), &text)
}

/// The frame number (mod the cycle) a clock picture shows: its mean luma
/// (full range, as FFmpeg converts both JPEG and H.264 to gray).
fn clock_frame(gray: &[u8]) -> f64 {
    let mean = gray.iter().map(|&b| f64::from(b)).sum::<f64>() / gray.len() as f64;
    mean / (1.5 * 255.0 / 219.0)
}

/// Decodes `data` (FFmpeg input format `format`) to gray frames of
/// `w`×`h`; returns the last.
fn last_gray_frame(data: &[u8], format: &str, w: usize, h: usize) -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-f", format, "-i", "pipe:0"])
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let n = w * h;
    assert!(out.stdout.len() >= n, "no frame decoded from {format}");
    let frames = out.stdout.len() / n;
    out.stdout[(frames - 1) * n..frames * n].to_vec()
}

/// Frames from `a` forward to `b` on the clock's cycle (0 ..< 130).
fn ahead(a: f64, b: f64) -> f64 {
    (b - a).rem_euclid(CYCLE)
}

async fn get(url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("GET")
}

async fn snapshot(base: &str, id: &str, query: &str) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    let r = get(&format!("{base}/snapshot/{id}.jpg{query}"), None).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    (r.bytes().await.unwrap().to_vec(), took)
}

/// The width and height of a picture, by ffprobe.
fn size(jpeg: &[u8]) -> (u32, u32) {
    let path = temp_file("s.jpg", "");
    std::fs::write(&path, jpeg).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let (w, h) = text.trim().split_once(',').expect("a picture's size");
    (w.parse().unwrap(), h.parse().unwrap())
}

/// Taken at several moments of a 4 s GOP (just after a keyframe, mid-way,
/// just before the next), each snapshot is the picture the stream shows
/// then, not its keyframe's: it lies between the frames a viewer showed just
/// before the request and just after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_the_current_picture_at_once() {
    let profile = clock_profile("clock", "");
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let v = common::connect(&ff.url).await;
    for (from, to) in [(5, 20), (55, 75), (100, 115)] {
        // A moment `from`..`to` frames after a keyframe (the viewer started
        // at one: its frame count runs with the GOP's).
        common::wait_for(&v, Duration::from_secs(60), "a moment in the GOP", |r| {
            r.frames_since_idr > GOP_FRAMES
                && (from..to).contains(&(r.frames_since_idr % GOP_FRAMES))
        })
        .await;
        // What the viewer shows just before the request and just after the
        // answer: the snapshot lies between (a frame or two either side).
        let before = v.received();
        let (jpeg, took) = snapshot(&ff.base(), "clock", "").await;
        let after = v.received();
        let since_key = before.frames_since_idr % GOP_FRAMES;
        assert_eq!(size(&jpeg), (320, 240));
        let shown = clock_frame(&last_gray_frame(&jpeg, "jpeg_pipe", 320, 240));
        let first = clock_frame(&last_gray_frame(&before.h264, "h264", 320, 240));
        let last = clock_frame(&last_gray_frame(&after.h264, "h264", 320, 240));
        eprintln!(
            "{since_key} frames after the keyframe: snapshot in {took:?} shows frame {shown:.1}; \
             the viewer showed {first:.1} before, {last:.1} after"
        );
        assert!(
            ahead(first - 2.0, shown) <= ahead(first - 2.0, last + 2.0),
            "snapshot {shown:.1} is not between the viewer's {first:.1} and {last:.1}"
        );
        // Mid-GOP and later, far from the keyframe's picture.
        let keyframe = first - since_key as f64;
        if since_key >= 55 {
            assert!(ahead(keyframe, shown) >= 40.0, "the keyframe's picture");
        }
        // (The time is printed; the 500 ms target is checked by
        // scripts/bench-snapshot, not by a wall-clock assert here.)
    }
    // Scaled: the height follows, rounded to even.
    let (jpeg, _) = snapshot(&ff.base(), "clock", "?width=160").await;
    assert_eq!(size(&jpeg), (160, 120));
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_at_once_share_a_decode() {
    // A long GOP, well filled: each decode takes long enough that all 50
    // requests are in before a second one could end, even on a busy machine.
    let profile = common::testsrc_profile_gop("fifty", 20);
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    common::wait_status(&ff, "a cached GOP of some seconds", |s| {
        s["streams"][0]["gop_cache"]["ready"] == true
            && s["streams"][0]["gop_cache"]["packets"].as_u64() >= Some(800)
    })
    .await;
    let counts = common::status(&ff).await["streams"][0]["snapshots"].clone();
    let (before, served_before) = (
        counts["decodes"].as_u64().unwrap(),
        counts["served"].as_u64().unwrap(),
    );
    let url = format!("{}/snapshot/fifty.jpg", ff.base());
    let client = reqwest::Client::new();
    let requests = (0..50).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }
    });
    let pictures = futures::future::join_all(requests).await;
    assert!(pictures.iter().all(|p| p.starts_with(&[0xff, 0xd8])));
    let s = common::status(&ff).await;
    let decodes = s["streams"][0]["snapshots"]["decodes"].as_u64().unwrap() - before;
    eprintln!(
        "50 requests: {decodes} FFmpeg run(s); {}",
        s["streams"][0]["snapshots"]
    );
    assert!((1..=2).contains(&decodes), "{decodes} decodes");
    let served = s["streams"][0]["snapshots"]["served"].as_u64().unwrap() - served_before;
    assert_eq!(served, 50);
    // /metrics counts them too.
    let m = get(&format!("{}/metrics", ff.base()), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("ffwhep_snapshot_decodes_total{stream=\"fifty\"}"),
        "{m}"
    );
    assert!(m.contains("ffwhep_snapshots_total{stream=\"fifty\"}"));
}

/// A status, its Retry-After, and its reason.
async fn refusal(url: &str, auth: Option<&str>) -> (u16, Option<String>, String) {
    let r = get(url, auth).await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_picture_to_give_the_answer_says_why() {
    // A GOP too big for the cache is never cached: no picture, for now.
    let uncached = clock_profile("uncached", "  gop_cache:\n    max_bytes: 1000\n");
    let nocache = clock_profile("nocache", "  gop_cache:\n    enabled: false\n");
    let audio = common::testsrc_profile("audio", "")
        .to_str()
        .unwrap()
        .to_owned();
    let text = std::fs::read_to_string(&audio).unwrap().replace(
        "  video:\n    map: \"0:v:0\"",
        "  video:\n    enabled: false",
    );
    std::fs::write(&audio, text).unwrap();
    let ff = Ffwhep::start(&[
        uncached.to_str().unwrap(),
        nocache.to_str().unwrap(),
        &audio,
    ]);
    common::wait_status(&ff, "three live streams", |s| {
        s["streams"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|s| s["live"] == true))
    })
    .await;
    let base = ff.base();
    let (status, retry, why) = refusal(&format!("{base}/snapshot/uncached.jpg"), None).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{why}");
    assert!(why.contains("no cached GOP"), "{why}");
    let (status, retry, why) = refusal(&format!("{base}/snapshot/nocache.jpg"), None).await;
    assert_eq!((status, retry), (409, None), "{why}");
    assert!(why.contains("no GOP cache"), "{why}");
    let (status, _, why) = refusal(&format!("{base}/snapshot/audio.jpg"), None).await;
    assert_eq!(status, 409, "{why}");
    assert!(why.contains("no video"), "{why}");
    let (status, _, why) = refusal(&format!("{base}/snapshot/nosuch.jpg"), None).await;
    assert_eq!(status, 404, "{why}");
    for bad in ["0", "abc", "99999"] {
        let url = format!("{base}/snapshot/uncached.jpg?width={bad}");
        let (status, _, why) = refusal(&url, None).await;
        assert_eq!(status, 400, "{why}");
        assert!(why.contains("width must be"), "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_streams_snapshot_needs_its_token() {
    let profile = common::testsrc_profile("secret", "auth:\n  token: s3cret-token\n");
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    common::StatusReader::with_token(&ff, "s3cret-token")
        .wait("a cached GOP", |s| {
            s["streams"][0]["gop_cache"]["ready"] == true
        })
        .await;
    let url = format!("{}/snapshot/secret.jpg", ff.base());
    let (status, _, why) = refusal(&url, None).await;
    assert_eq!(status, 401, "{why}");
    let (status, _, why) = refusal(&url, Some("Bearer wrong")).await;
    assert_eq!(status, 401, "{why}");
    let r = get(&url, Some("Bearer s3cret-token")).await;
    assert_eq!(r.status(), 200);
    // An unknown id looks the same as a protected one.
    let (status, _, _) = refusal(&format!("{}/snapshot/other.jpg", ff.base()), None).await;
    assert_eq!(status, 401);
}
