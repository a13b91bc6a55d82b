//! The command line without a stream: check, args, and the exit codes of
//! runs that cannot start.

mod common;

use common::bin;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ffwhep-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_says_ok_for_the_shipped_profiles() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles")).unwrap() {
        let path = entry.unwrap().path();
        let out = bin().arg("check").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: "));
    }
}

#[test]
fn check_names_file_line_and_column() {
    let p = write(
        "bad.yaml",
        "id: cam\ninput:\n  - address: a\n    opts: []\n",
    );
    let out = bin().arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: {}:4:5: ", p.display())),
        "{err}"
    );
    assert!(
        err.contains("unknown field `opts`, expected `address` or `options`"),
        "{err}"
    );
}

#[test]
fn args_prints_the_exact_command() {
    let out = bin()
        .args(["args", "--port", "40000", "--ffmpeg", "/opt/ff/ffmpeg"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("/opt/ff/ffmpeg -hide_banner "), "{line}");
    assert!(line.contains(" -map 0:v:0 "), "{line}");
    assert!(line.contains(" -payload_type 102 "), "{line}");
    assert!(
        line.contains(" 'rtp://127.0.0.1:40000?pkt_size=1200&rtcpport=40000'"),
        "{line}"
    );
    assert!(
        line.trim_end()
            .ends_with("'rtp://127.0.0.1:40001?pkt_size=1200&rtcpport=40001'"),
        "{line}"
    );
    // The printed line is valid shell: it splits back into the same words.
    let words = shlex::split(line.trim()).unwrap();
    assert!(words.contains(&"expr:gte(t,n_forced*2)".to_owned()));
}

#[test]
fn args_with_a_port_outside_the_pair_range_is_a_usage_error() {
    for port in ["0", "65535"] {
        let out = bin().args(["args", "--port", port]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--port {port}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--port"), "{err}");
    }
}

#[test]
fn missing_ffmpeg_exits_three() {
    let out = bin()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--ffmpeg",
            "/nonexistent/ffmpeg",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: FFmpeg not found"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_profile_exits_two_before_spawning() {
    let p = write(
        "pt.yaml",
        "id: cam\ninput: [{address: a}]\nwebrtc: {video_pt: 12}\n",
    );
    let out = bin()
        .args(["run", "--listen", "127.0.0.1:0"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3:20: webrtc.video_pt: invalid payload type 12"),
        "{err}"
    );
}

#[test]
fn busy_http_address_exits_five() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = bin().args(["run", "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
