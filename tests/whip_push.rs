//! WHIP push into a real SFU: Janus's VideoRoom (H.264 and Opus) behind
//! Debian's simple-whip-server, both in a network namespace the test makes
//! (Janus gathers no loopback candidates), reached over a veth pair. The
//! room forwards what it receives as plain RTP to an FFmpeg inside the
//! namespace, which decodes it. Needs root (as tests/netns_nat.rs), and
//! what scripts/setup installs (janus, the front end's files and modules).

mod common;

use common::Ffwhep;
use common::netns::Netns;
use common::proc::Proc;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FRONT_END: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/whip/simple-whip-server/src"
);
const NODE_MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whip/node_modules");
/// Where the room forwards the published media, inside the namespace.
const VIDEO_PORT: u16 = 5004;
const AUDIO_PORT: u16 = 5002;

/// Janus and its WHIP front end in a namespace of their own.
struct Sfu {
    net: Netns,
    dir: PathBuf,
    /// Our side of the veth pair, and theirs.
    host_ip: String,
    sfu_ip: String,
    janus: Option<Proc>,
    front: Option<Proc>,
}

impl Sfu {
    /// A namespace on 10.`subnet`.0.0/24, with Janus and the front end up.
    fn start(tag: &str, subnet: u8) -> Sfu {
        let net = Netns::new(tag);
        let (host_ip, sfu_ip) = (format!("10.{subnet}.0.1"), format!("10.{subnet}.0.2"));
        net.link(&host_ip, &sfu_ip);
        let dir = common::temp_file("unused", "").parent().unwrap().to_owned();
        write_janus_config(&dir);
        write_front_end(&dir);
        let mut sfu = Sfu {
            net,
            dir,
            host_ip,
            sfu_ip,
            janus: None,
            front: None,
        };
        sfu.up();
        sfu
    }

    /// Starts Janus, then the front end, and waits until they are joined.
    fn up(&mut self) {
        let mut janus = self.net.command("janus");
        janus.args(["-F", self.dir.to_str().unwrap()]);
        let janus = Proc::spawn("janus", &mut janus);
        janus.wait_line(Duration::from_secs(30), "its WebSockets API", |l| {
            l.contains("WebSockets thread started")
        });
        let mut front = self.net.command("node");
        front
            .arg(self.dir.join("front/server.js"))
            .env("NODE_PATH", NODE_MODULES)
            .env("DEBUG", "whip:info,whip:warn,whip:error");
        let front = Proc::spawn("simple-whip-server", &mut front);
        front.wait_line(Duration::from_secs(30), "its link to Janus", |l| {
            l.contains("Janus OK")
        });
        self.janus = Some(janus);
        self.front = Some(front);
    }

    /// Kills both (SIGKILL): the SFU vanishes.
    fn kill(&mut self) {
        self.front.take();
        self.janus.take();
    }

    fn front(&self) -> &Proc {
        self.front.as_ref().expect("the front end runs")
    }

    /// The front end's WHIP base URL.
    fn base(&self) -> String {
        format!("http://{}:7080/whip", self.sfu_ip)
    }

    /// Makes endpoint `id` (publishing into the room, forwarded to the
    /// receiver's ports), guarded by `token` when given.
    async fn create(&self, id: &str, token: Option<&str>) {
        let mut body = json!({
            "id": id,
            "room": 1234,
            "secret": "adminpwd",
            "recipient": {"host": "127.0.0.1", "audioPort": AUDIO_PORT, "videoPort": VIDEO_PORT},
        });
        if let Some(t) = token {
            body["token"] = json!(t);
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/create", self.base()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// An FFmpeg inside that records what the room forwards until it has
    /// `frames` video frames and as many audio frames.
    fn receive(&self, frames: u32) -> (Proc, PathBuf) {
        let sdp = self.dir.join("forward.sdp");
        std::fs::write(
            &sdp,
            format!(
                "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=forward\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {AUDIO_PORT} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n\
                 m=video {VIDEO_PORT} RTP/AVP 102 104\r\na=rtpmap:102 H264/90000\r\n\
                 a=fmtp:102 packetization-mode=1\r\na=rtpmap:104 H264/90000\r\n\
                 a=fmtp:104 packetization-mode=1\r\n"
            ),
        )
        .unwrap();
        let out = self.dir.join("forwarded.mkv");
        let mut ffmpeg = self.net.command("ffmpeg");
        ffmpeg
            .args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
            .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
            .arg(&sdp)
            .args(["-map", "0", "-c", "copy", "-y"])
            .args([
                "-frames:v",
                &frames.to_string(),
                "-frames:a",
                &frames.to_string(),
            ])
            .arg(&out);
        (Proc::spawn("the receiving FFmpeg", &mut ffmpeg), out)
    }
}

const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whip");

/// Janus's configuration (tests/whip/janus/), pointed at `dir`.
fn write_janus_config(dir: &Path) {
    for f in [
        "janus.jcfg",
        "janus.transport.websockets.jcfg",
        "janus.plugin.videoroom.jcfg",
    ] {
        let text = std::fs::read_to_string(Path::new(TEMPLATES).join("janus").join(f)).unwrap();
        std::fs::write(dir.join(f), text.replace("@DIR@", dir.to_str().unwrap())).unwrap();
    }
}

/// The front end's code, with its test configuration beside it.
fn write_front_end(dir: &Path) {
    let front = dir.join("front");
    std::fs::create_dir_all(&front).unwrap();
    for f in ["server.js", "whip-janus.js"] {
        std::fs::copy(Path::new(FRONT_END).join(f), front.join(f)).unwrap_or_else(|e| {
            panic!("{FRONT_END}/{f}: {e} (scripts/setup unpacks simple-whip-server)")
        });
    }
    std::fs::copy(
        Path::new(TEMPLATES).join("config.js"),
        front.join("config.js"),
    )
    .unwrap();
}

/// Decodes the recording: (width, height, video frames, audio frames).
fn probe(path: &Path) -> (u64, u64, u64, u64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args([
            "stream=codec_type,width,height,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let frames = |s: &Value| {
        s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (mut w, mut h, mut video, mut audio) = (0, 0, 0, 0);
    for s in v["streams"].as_array().unwrap() {
        if s["codec_type"] == "video" {
            w = s["width"].as_u64().unwrap_or(0);
            h = s["height"].as_u64().unwrap_or(0);
            video = frames(s);
        } else if s["codec_type"] == "audio" {
            audio = frames(s);
        }
    }
    (w, h, video, audio)
}

fn push_of(s: &Value, i: usize) -> &Value {
    &s["streams"][0]["pushes"][i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_stream_is_decoded_on_the_far_side_of_janus() {
    let sfu = Sfu::start("wp", 203);
    sfu.create("cam", None).await;
    let (mut receiver, recording) = sfu.receive(90);
    let states = common::temp_file("states", "");
    let profile = common::testsrc_profile(
        "pushed",
        &format!(
            "whip:\n  - url: \"{}/endpoint/cam\"\n\
             hooks:\n  - events: [push_state]\n    \
             command: [sh, -c, 'echo \"$FFWHEP_PUSH $FFWHEP_PUSH_STATE\" >> \"$0\"', \"{}\"]\n",
            sfu.base(),
            states.display()
        ),
    );
    let ice = format!("{}:0", sfu.host_ip);
    let mut ff = Ffwhep::start(&[profile.to_str().unwrap(), "--ice-addr", &ice]);
    let status = common::StatusReader::new(&ff);
    status
        .wait("the push connected", |s| {
            push_of(s, 0)["state"] == "connected"
        })
        .await;

    // Janus forwards it: video at the profile's size, and audio.
    tokio::task::block_in_place(|| receiver.wait_exit(Duration::from_secs(90)));
    let (w, h, video, audio) = probe(&recording);
    assert_eq!((w, h), (640, 360), "{}", receiver.lines.text());
    assert!(video >= 60, "{video} video frames decoded");
    assert!(audio >= 50, "{audio} audio frames decoded");

    // Its connection as for a viewer: RTT from the SFU's receiver reports.
    status
        .wait("the push's RTT", |s| {
            push_of(s, 0)["connection"]["rtt_ms"].is_number()
        })
        .await;
    let s = status.get().await;
    let push = push_of(&s, 0);
    assert!(push["attempts"].as_u64() >= Some(1), "{push}");
    assert!(push["sent"]["packets"].as_u64().unwrap() > 100, "{push}");
    let metrics = common::metrics(&ff, None).await;
    assert!(
        metrics.contains("ffwhep_push_connected{push=\"0\",stream=\"pushed\"} 1"),
        "{metrics}"
    );

    // Stopped, ffwhep DELETEs the resource.
    common::kill(ff.pid(), libc::SIGTERM);
    ff.wait_exit(Duration::from_secs(30));
    sfu.front()
        .wait_line(Duration::from_secs(10), "the DELETE", |l| {
            l.contains("[cam] Terminating WHIP session")
        });
    assert!(ff.log().contains("push: resource deleted"));
    // The hook was told each change (a first attempt that failed would
    // add "retrying" and "connecting" in between).
    let told = std::fs::read_to_string(&states).unwrap();
    let told: Vec<&str> = told.lines().collect();
    assert_eq!(told.first(), Some(&"0 connecting"), "{told:?}");
    assert_eq!(told.last(), Some(&"0 stopped"), "{told:?}");
    assert_eq!(told[told.len() - 2], "0 connected", "{told:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_is_retried_and_says_why() {
    let sfu = Sfu::start("wr", 204);
    // Two endpoints with one token: the first push has none.
    sfu.create("locked", Some("sekrit")).await;
    sfu.create("locked2", Some("sekrit")).await;
    let url = format!("{}/endpoint/locked", sfu.base());
    let profile = common::testsrc_profile(
        "refused",
        &format!(
            "whip:\n  - url: \"{url}\"\n    retry: {{initial_delay: 0.2, max_delay: 1}}\n  \
             - url: \"{url}2\"\n    token_env: WHIP_TOKEN\n"
        ),
    );
    let ice = format!("{}:0", sfu.host_ip);
    let ff = Ffwhep::start_env(
        &[profile.to_str().unwrap(), "--ice-addr", &ice],
        &[("WHIP_TOKEN", "sekrit")],
    );
    let status = common::StatusReader::new(&ff);
    // Without the token: refused, with the endpoint's reason, and tried again.
    status
        .wait("the refused push tried again", |s| {
            push_of(s, 0)["attempts"].as_u64().unwrap_or(0) >= 3
        })
        .await;
    let s = status.get().await;
    let refused = push_of(&s, 0);
    assert_ne!(refused["state"], "connected", "{refused}");
    assert_eq!(
        refused["last_error"], "the endpoint answered 403: Unauthorized",
        "{refused}"
    );
    ff.wait_log(Duration::from_secs(10), "the retry's log line", |l| {
        l.contains("push failed; retrying after the delay") && l.contains("403: Unauthorized")
    });
    // With it: published.
    status
        .wait("the push with the token connected", |s| {
            push_of(s, 1)["state"] == "connected"
        })
        .await;
    // The stream itself is untouched.
    assert_eq!(status.get().await["streams"][0]["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_resumes_when_the_sfu_returns_and_viewers_never_notice() {
    let mut sfu = Sfu::start("wk", 205);
    sfu.create("cam", None).await;
    let profile = common::testsrc_profile(
        "resumed",
        &format!(
            "whip:\n  - url: \"{}/endpoint/cam\"\n    retry: {{initial_delay: 0.5, max_delay: 2}}\n",
            sfu.base()
        ),
    );
    let ice = format!("{}:0", sfu.host_ip);
    let ff = Ffwhep::start(&[profile.to_str().unwrap(), "--ice-addr", &ice]);
    let status = common::StatusReader::new(&ff);
    status
        .wait("the push connected", |s| {
            push_of(s, 0)["state"] == "connected"
        })
        .await;
    let v = common::connect(&ff.url).await;
    common::wait_for(&v, Duration::from_secs(20), "frames", |r| {
        r.complete_frames() > 30
    })
    .await;

    // The SFU vanishes: the push notices, and keeps trying.
    sfu.kill();
    status
        .wait("the push lost its SFU and retries", |s| {
            push_of(s, 0)["state"] == "retrying" && push_of(s, 0)["attempts"].as_u64() >= Some(2)
        })
        .await;
    let during = v.received().complete_frames();
    common::wait_for(
        &v,
        Duration::from_secs(20),
        "frames while the SFU is away",
        |r| r.complete_frames() > during + 30,
    )
    .await;

    // It comes back (a fresh front end: its endpoints are made again).
    tokio::task::block_in_place(|| sfu.up());
    sfu.create("cam", None).await;
    status
        .wait("the push connected again", |s| {
            push_of(s, 0)["state"] == "connected" && push_of(s, 0)["connects"] == 2
        })
        .await;
    // The viewer of ffwhep itself played on throughout, on one connection.
    let after = v.received().complete_frames();
    common::wait_for(&v, Duration::from_secs(20), "frames after", |r| {
        r.complete_frames() > after + 30
    })
    .await;
    let s = status.get().await;
    let viewers = s["streams"][0]["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 1, "{s}");
    assert_eq!(viewers[0]["state"], "connected", "{s}");
    assert!(!ff.log().contains("viewer left"), "{}", ff.log());
    v.close().await;
}
