//! Nothing FFmpeg prints can hurt ffwhep, and a panic stays in its stream:
//! with real FFmpeg and a real viewer.

mod common;

use common::{Ffwhep, connect, kill, testsrc_profile, wait_for};
use std::time::Duration;

/// A title FFmpeg prints in its output header: Cyrillic from byte 29 of the
/// line, so a multi-byte character lies across byte 96.
const TITLE: &str = "Прямая трансляция с камеры на крыше дома номер семь по улице Ленина";

/// The built-in test pattern under `id`, with an output of its own (null)
/// whose title is `title`.
fn profile_with_title(id: &str, title: &str) -> std::path::PathBuf {
    let output = format!(
        "output:\n  - address: \"-\"\n    options: [\"-map\", \"0:v:0\", \"-c:v\", \"rawvideo\", \"-metadata\", \"title={title}\", \"-f\", \"null\"]\n"
    );
    testsrc_profile(id, &output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_output_title_is_logged_and_the_stream_plays() {
    let profile = profile_with_title("titled", TITLE);
    let ff = Ffwhep::start(&[profile.to_str().unwrap()]);
    ff.wait_log(Duration::from_secs(30), "the title line", |l| {
        l.contains(TITLE)
    });
    let v = connect(&ff.url).await;
    wait_for(&v, Duration::from_secs(30), "60 frames", |r| {
        r.decodable() && r.frames_since_idr >= 60
    })
    .await;
    assert!(!ff.log().contains("panicked"), "{}", ff.log());
    v.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_stream_tears_it_down_and_the_other_plays_on() {
    const MARK: &str = "FFWHEP-TEST-PANIC";
    let doomed = profile_with_title("doomed", &format!("{MARK} {TITLE}"));
    let calm = testsrc_profile("calm", "");
    // Debug builds panic on an FFmpeg line with this text: only the doomed
    // stream's FFmpeg prints it.
    let mut ff = Ffwhep::start_env(
        &[calm.to_str().unwrap(), doomed.to_str().unwrap()],
        &[("FFWHEP_DEBUG_PANIC_ON", MARK)],
    );
    let calm_url = ff
        .urls()
        .into_iter()
        .find(|u| u.ends_with("/whep/calm"))
        .unwrap_or_else(|| format!("{}/whep/calm", ff.base()));
    let v = connect(&calm_url).await;
    ff.wait_log(
        Duration::from_secs(30),
        "the doomed stream's teardown",
        |l| {
            l.lines()
                .any(|line| line.contains("stream=doomed") && line.contains("teardown done"))
        },
    );
    let log = ff.log();
    assert!(
        log.contains("the stream's task panicked: tearing it down"),
        "{log}"
    );
    // The other stream plays on after the panic.
    let frames = v.received().frames_since_idr;
    wait_for(&v, Duration::from_secs(30), "frames after the panic", |r| {
        r.decodable() && r.frames_since_idr >= frames + 60
    })
    .await;
    let status = common::status(&ff).await;
    let state = |id: &str| {
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["state"].clone())
    };
    assert_eq!(state("doomed"), Some("failed".into()), "{status}");
    assert_eq!(state("calm"), Some("running".into()), "{status}");
    // The doomed stream's ports are free again.
    let doomed_ports: Vec<u16> = log
        .lines()
        .filter(|l| l.contains("stream=doomed") && l.contains("sources bound"))
        .flat_map(|l| {
            ["video_port=", "audio_port="].map(|k| {
                let at = l.find(k).unwrap() + k.len();
                l[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u16>()
                    .unwrap()
            })
        })
        .collect();
    assert_eq!(doomed_ports.len(), 2, "{log}");
    for port in doomed_ports {
        std::net::UdpSocket::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
    v.close().await;
    kill(ff.pid(), libc::SIGTERM);
    let status = ff.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(1),
        "a failed stream decides the exit code"
    );
    assert!(
        ff.log()
            .contains("error: stream doomed: internal error (a panic)"),
        "{}",
        ff.log()
    );
}
