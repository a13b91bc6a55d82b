//! What operators watch: /status, /metrics, the probes, the pages and the
//! terminal status line, checked against a running ffwhep and a real viewer.

mod common;

use common::{Ffwhep, bin, connect, kill, testsrc_profile, wait_for};
use std::time::Duration;

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_agree_with_what_the_viewer_received() {
    let ff = Ffwhep::start(&[]);
    let base = ff.base();
    let v = connect(&ff.url).await;
    wait_for(&v, Duration::from_secs(60), "media", |r| {
        r.video.packets > 200 && r.audio.packets > 40
    })
    .await;
    // FFmpeg reports progress each second: wait for a report with a rate.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = get(&format!("{base}/status")).await;
        let s: serde_json::Value = serde_json::from_str(&body).unwrap();
        if s["streams"][0]["progress"]["fps"].as_f64().unwrap_or(0.0) > 20.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress with a frame rate: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let received_before = {
        let r = v.received();
        r.video.packets + r.audio.packets
    };
    let (code, status) = get(&format!("{base}/status")).await;
    let (mcode, metrics) = get(&format!("{base}/metrics")).await;
    let received_after = {
        let r = v.received();
        r.video.packets + r.audio.packets
    };
    assert_eq!((code, mcode), (200, 200));

    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let s = &status["streams"][0];
    assert_eq!(s["id"], "testsrc");
    assert_eq!(s["state"], "running");
    assert_eq!(s["runs"], 1);
    assert_eq!(s["live"], true, "{s}");
    assert!(s["progress"]["fps"].as_f64().unwrap() > 20.0, "{s}");
    assert!(
        s["ports"]["video"].as_u64().unwrap() + 1 == s["ports"]["audio"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(s["gop_cache"]["enabled"], true);
    assert_eq!(s["gop_cache"]["ready"], true, "{s}");
    assert!(s["gop_cache"]["packets"].as_u64().unwrap() > 0, "{s}");
    let viewers = s["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 1, "{s}");
    let viewer = &viewers[0];
    assert_eq!(
        viewer["id"].as_str().unwrap(),
        &v.location.rsplit('/').next().unwrap()[..8]
    );
    assert!(viewer["remote"].as_str().unwrap().contains(':'), "{viewer}");
    assert_eq!(viewer["transport"], "udp", "{viewer}");
    assert!(
        viewer["connected_since"].as_f64().unwrap() > 1.7e9,
        "{viewer}"
    );
    assert_eq!(viewer["state"], "connected");
    // The round-trip time comes from the connection's ICE checks.
    common::StatusReader::new(&ff)
        .wait("the viewer's round-trip time", |s| {
            s["streams"][0]["viewers"][0]["rtt_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0 && ms < 1000.0)
        })
        .await;
    // What the server says it sent brackets what the viewer counted around
    // the request (loopback loses nothing; a few packets may be in flight).
    let sent = viewer["packets_sent"].as_u64().unwrap();
    assert!(
        sent + 5 >= received_before && sent <= received_after + 50,
        "sent {sent}, received {received_before}..{received_after}"
    );
    for kind in ["video", "audio"] {
        assert!(
            s["sources"][kind]["rtp_packets"].as_u64().unwrap() > 0,
            "{s}"
        );
        assert_eq!(s["sources"][kind]["errors"], 0, "{s}");
    }

    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))
        .expect("not Prometheus text");
    let st = [("stream", "testsrc")];
    assert_eq!(
        sample(
            &scrape,
            "ffwhep_stream_state",
            &[("stream", "testsrc"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "ffwhep_stream_state",
            &[("stream", "testsrc"), ("state", "failed")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&scrape, "ffwhep_viewers", &st), Some(1.0));
    assert_eq!(sample(&scrape, "ffwhep_ffmpeg_runs_total", &st), Some(1.0));
    let metric_sent = sample(&scrape, "ffwhep_viewer_packets_sent_total", &st).unwrap() as u64;
    assert!(
        metric_sent >= sent && metric_sent <= received_after + 50,
        "metrics {metric_sent}, status {sent}"
    );
    assert!(
        sample(&scrape, "ffwhep_relay_latency_p99_ms", &st).is_some(),
        "no latency metric"
    );
    // The latency histogram: cumulative buckets that never decrease, as
    // many samples as /status had counted (or more: it was scraped later).
    let buckets = scrape
        .samples
        .iter()
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b)
                if s.metric == "ffwhep_relay_latency_seconds"
                    && s.labels.get("stream") == Some("testsrc") =>
            {
                Some(b.clone())
            }
            _ => None,
        })
        .expect("no ffwhep_relay_latency_seconds histogram");
    assert_eq!(buckets.len(), 17, "16 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    let status_samples = s["relay_latency"]["samples"].as_u64().unwrap() as f64;
    let total = buckets.last().unwrap().count;
    assert!(
        total >= status_samples && total > 0.0,
        "histogram {total}, status {status_samples}"
    );
    let src = sample(
        &scrape,
        "ffwhep_source_rtp_packets_total",
        &[("stream", "testsrc"), ("kind", "video")],
    )
    .unwrap();
    assert!(src as u64 >= s["sources"]["video"]["rtp_packets"].as_u64().unwrap());
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_the_stream() {
    let profile = testsrc_profile(
        "probe",
        "restart:\n  policy: on-failure\n  initial_delay: 5s\n",
    );
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    let base = ff.base();
    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get(&format!("{base}/readyz")).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready; log:\n{}",
            ff.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill(ff.all("pid")[0] as i32, libc::SIGKILL);
    ff.wait_log(Duration::from_secs(60), "the restart", |l| {
        l.contains("restarting after the delay")
    });
    let (code, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 503);
    assert!(body.contains("probe (restarting, no live media)"), "{body}");
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/status")).await.1).unwrap();
    assert_eq!(status["streams"][0]["state"], "restarting");
    assert_eq!(status["streams"][0]["exits"]["killed"], 1);
    let metrics = get(&format!("{base}/metrics")).await.1;
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(
        sample(
            &scrape,
            "ffwhep_ffmpeg_exits_total",
            &[("stream", "probe"), ("reason", "killed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "the process is still up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_and_play_streams() {
    let ff = Ffwhep::start(&[]);
    let base = ff.base();
    let (code, index) = get(&format!("{base}/")).await;
    assert_eq!(code, 200);
    assert!(
        index.contains("<a href=\"/play/testsrc\">testsrc</a>") && index.contains("running"),
        "{index}"
    );
    let (code, page) = get(&format!("{base}/play/testsrc")).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<video")
            && page.contains("/whep/")
            && !page.contains("http://")
            && !page.contains("https://cdn"),
        "not self-contained"
    );
    // The same page for any id: it tells nothing of which streams exist.
    assert_eq!(get(&format!("{base}/play/nope")).await, (200, page));
    assert!(
        ff.log().contains("player=\"http://"),
        "run did not announce the player"
    );
}

fn run_in_terminal(extra: &str) -> String {
    let cmd = format!(
        "{} run --listen 127.0.0.1:0 --duration 3 {extra}",
        env!("CARGO_BIN_EXE_ffwhep")
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) not found");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_gets_a_status_line_that_never_breaks_the_log() {
    let out = run_in_terminal("");
    assert!(
        out.contains("testsrc: running 3"),
        "no status line with the frame rate:\n{out}"
    );
    // Every log record starts on a cleared line, so the status line never
    // sits inside one.
    for record in out.split("\u{1b}[2K").skip(1) {
        let text = record.trim_start_matches('\r');
        assert!(
            text.is_empty()
                || text.starts_with("testsrc: ")
                || text.starts_with("\u{1b}[2m20")
                || text.starts_with("WHEP "),
            "a record does not start on a clean line: {text:?}"
        );
    }
    let quiet = run_in_terminal("--quiet");
    assert!(
        !quiet.contains("\u{1b}[2K") && !quiet.contains("testsrc: running"),
        "--quiet still shows it:\n{quiet}"
    );
    // Without a terminal there is no status line at all.
    let piped = bin()
        .args(["run", "--listen", "127.0.0.1:0", "--duration", "2"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("\u{1b}[2K"));
}

/// `/status` counts the runtime's live tasks and each stream's own: viewers
/// add some while they watch, and leaving (DELETE) gives back exactly what
/// they took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_tasks_and_viewers_give_theirs_back() {
    let ff = Ffwhep::start(&[]);
    let base = ff.base();
    let status = common::StatusReader::new(&ff);
    // tokio's default: one worker per core (or TOKIO_WORKER_THREADS).
    let s = status.get().await;
    assert!(
        s["process"]["workers"].as_u64().is_some_and(|w| w >= 1),
        "{s}"
    );
    let first = connect(&ff.url).await;
    wait_for(&first, Duration::from_secs(30), "media", |r| {
        r.video.packets > 30
    })
    .await;
    let before = status.tasks().await;
    assert!(before.1 > 0, "the first viewer has no tasks: {before:?}");
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let v = connect(&ff.url).await;
        wait_for(&v, Duration::from_secs(30), "media", |r| {
            r.video.packets > 30
        })
        .await;
        viewers.push(v);
    }
    let watching = status.tasks().await;
    assert!(
        watching.0 >= before.0 + 3 && watching.1 >= before.1 + 3,
        "3 more viewers, tasks {before:?} -> {watching:?}"
    );
    for v in &viewers {
        let r = reqwest::Client::new()
            .delete(format!("{base}{}", v.location))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        v.close().await;
    }
    drop(viewers);
    // What is left to end after the DELETEs are the session watchers and
    // the closed HTTP connections: compared exactly.
    status.wait_tasks(before).await;
    first.close().await;
}
