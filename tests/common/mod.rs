//! Test helpers: the ffwhep binary as a child process, and a WHEP viewer.
#![allow(dead_code)]

pub mod checks;
pub mod lossy;
pub mod netns;
pub mod proc;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `ffwhep run`, with its log captured.
pub struct Ffwhep {
    child: Child,
    /// The first WHEP URL it printed.
    pub url: String,
    urls: Arc<Mutex<Vec<String>>>,
    log: Arc<Log>,
    /// The threads reading its stdout and stderr: they end at EOF.
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// ffwhep's stderr as it arrives, and whether it has ended (ffwhep exited):
/// waiters are woken by each line.
use proc::Lines as Log;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ffwhep"))
}

impl Ffwhep {
    /// Starts `ffwhep run` on loopback with `extra` arguments, and waits for
    /// its WHEP URL.
    pub fn start(extra: &[&str]) -> Ffwhep {
        Self::start_with(extra, &[])
    }

    /// Like `start`, with `global` options placed before `run`.
    pub fn start_with(extra: &[&str], global: &[&str]) -> Ffwhep {
        Self::spawn(extra, global, &[])
    }

    /// Like `start`, with environment variables set.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Ffwhep {
        Self::spawn(extra, &[], env)
    }

    /// `ffwhep run` with exactly `args` (no loopback defaults).
    pub fn start_raw(args: &[&str]) -> Ffwhep {
        Self::launch(bin().arg("run").args(args))
    }

    fn spawn(extra: &[&str], global: &[&str], env: &[(&str, &str)]) -> Ffwhep {
        let mut cmd = bin();
        cmd.envs(env.iter().copied())
            .args(global)
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--ice-addr",
                "127.0.0.1:0",
            ])
            .args(extra);
        Self::launch(&mut cmd)
    }

    fn launch(cmd: &mut Command) -> Ffwhep {
        let mut child = cmd
            // FFWHEP_TEST_LOG overrides the filter (e.g. to trace one module).
            .env(
                "RUST_LOG",
                std::env::var("FFWHEP_TEST_LOG").unwrap_or_else(|_| "info,ffwhep=debug".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ffwhep");
        let log = Arc::new(Log::default());
        let (url_tx, url_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let urls = Arc::new(Mutex::new(Vec::new()));
        let all = urls.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("WHEP ") {
                    all.lock().unwrap().push(url.to_owned());
                    let _ = url_tx.send(url.to_owned());
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.push(&line);
            }
            sink.close();
        });
        let url = match url_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("ffwhep printed no WHEP URL; log:\n{}", log.text());
            }
        };
        Ffwhep {
            child,
            url,
            urls,
            log,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Every WHEP URL printed so far (one per stream).
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap().clone()
    }

    /// Every `key=NUMBER` in the log, in order.
    pub fn all(&self, key: &str) -> Vec<u64> {
        let log = self.log();
        let pat = format!(" {key}=");
        log.match_indices(&pat)
            .filter_map(|(i, _)| {
                let digits: String = log[i + pat.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .collect()
    }

    /// Waits until `f` holds for the log; panics after `within`.
    pub fn wait_log(&self, within: Duration, what: &str, f: impl Fn(&str) -> bool) {
        assert!(
            self.log.wait(within, f),
            "timed out waiting for {what}; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The base URL, e.g. http://127.0.0.1:PORT
    pub fn base(&self) -> String {
        let i = self.url.find("/whep/").unwrap();
        self.url[..i].to_owned()
    }

    /// The first `key=NUMBER` in the log, waiting for it: stderr is read by
    /// another thread than the one that saw the WHEP URL.
    fn field(&self, key: &str) -> Option<u32> {
        let pat = format!("{key}=");
        self.log
            .wait(Duration::from_secs(60), |l| l.contains(&pat))
            .then(|| {
                let log = self.log();
                let at = log.find(&pat)? + pat.len();
                let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .flatten()
    }

    pub fn ffmpeg_pid(&self) -> i32 {
        self.field("pid").expect("no FFmpeg pid in the log") as i32
    }

    pub fn ports(&self) -> (u16, u16) {
        (
            self.field("video_port").unwrap() as u16,
            self.field("audio_port").unwrap() as u16,
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for ffwhep to exit; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        // Its stderr ends when it exits (FFmpeg's is ffwhep's own pipe).
        if !self.log.wait_end(within) {
            let _ = self.child.kill();
            panic!(
                "ffwhep did not exit within {within:?}; log:\n{}",
                self.log()
            );
        }
        // Its last lines are in once the readers reach EOF.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Ffwhep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(pid, sig) },
        0,
        "kill({pid}, {sig}) failed"
    );
}

/// Waits for process `pid` (any process, not only a child) to end, at most
/// `within`; true once it has (or was already gone).
pub fn wait_gone(pid: i32, within: Duration) -> bool {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return !alive(pid);
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(within.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, and `fd` is ours to close.
    let ready = unsafe {
        let n = libc::poll(&mut p, 1, ms);
        libc::close(fd);
        n
    };
    ready == 1
}

/// True while a process with `pid` exists (and is not a zombie we reaped).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Decodes an Annex B H.264 file with ffprobe: (width, height, frames decoded).
pub fn probe_h264(path: &std::path::Path) -> (u32, u32, u32) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-f",
            "h264",
            "-select_streams",
            "v:0",
            "-count_frames",
        ])
        .args([
            "-show_entries",
            "stream=width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe not found (apt-get install -y ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u32> = text
        .trim()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    assert_eq!(
        f.len(),
        3,
        "ffprobe said {text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (f[0], f[1], f[2])
}

/// Connects a viewer, panicking with the reason when it cannot.
pub async fn connect(url: &str) -> ffwhep::smoke::viewer::Viewer {
    ffwhep::smoke::viewer::Viewer::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits until `f` holds for what `v` received; panics after `within`.
pub async fn wait_for(
    v: &ffwhep::smoke::viewer::Viewer,
    within: Duration,
    what: &str,
    f: impl Fn(&ffwhep::smoke::viewer::Received) -> bool,
) {
    if !v.wait_until(within, f).await {
        panic!(
            "timed out waiting for {what}: {}",
            ffwhep::smoke::viewer::summary(&v.received())
        );
    }
}

/// Writes `text` to a new file in a fresh temporary directory.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ffwhep-t-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The built-in test-pattern profile under another id, with `extra` YAML
/// appended (e.g. a restart policy).
pub fn testsrc_profile(id: &str, extra: &str) -> std::path::PathBuf {
    let builtin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/testsrc.yaml"
    ))
    .unwrap();
    let text = builtin.replace("id: testsrc", &format!("id: {id}")) + extra;
    temp_file(&format!("{id}.yaml"), &text)
}

/// The aiortc viewer script (tests/aiortc_viewer.py).
pub const AIORTC_VIEWER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aiortc_viewer.py");

/// Runs the aiortc viewer against `url` with `args` and `env`, and returns
/// the one JSON line it prints.
pub fn aiortc_view(
    url: &str,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(AIORTC_VIEWER)
        .arg(url)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 not found");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// POSTs a fresh recvonly offer to `url` (with `Authorization: auth` when
/// given); returns the response and the offering peer, to close when done.
pub async fn post_offer(
    url: &str,
    auth: Option<&str>,
) -> (reqwest::Response, ffwhep::smoke::viewer::Offer) {
    let offer = ffwhep::smoke::viewer::Offer::new().await.unwrap();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/sdp")
        .body(offer.sdp.clone());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    (req.send().await.unwrap(), offer)
}

/// [`testsrc_profile`] with the default encoder's keyframe interval set.
pub fn testsrc_profile_gop(id: &str, keyframe_secs: u32) -> std::path::PathBuf {
    let profile = testsrc_profile(id, "");
    let text = std::fs::read_to_string(&profile).unwrap().replace(
        "map: \"0:v:0\"",
        &format!("map: \"0:v:0\"\n    keyframe_interval: {keyframe_secs}s"),
    );
    std::fs::write(&profile, text).unwrap();
    profile
}

/// `/status` of one ffwhep, read over one kept-alive connection, so the
/// reads themselves do not change the process's task count.
pub struct StatusReader {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl StatusReader {
    pub fn new(ff: &Ffwhep) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{}/status", ff.base()),
            token: None,
        }
    }

    /// One that shows the streams behind `token` too.
    pub fn with_token(ff: &Ffwhep, token: &str) -> Self {
        Self {
            token: Some(format!("Bearer {token}")),
            ..Self::new(ff)
        }
    }

    pub async fn get(&self) -> serde_json::Value {
        let mut req = self.client.get(&self.url);
        if let Some(t) = &self.token {
            req = req.header("authorization", t);
        }
        let r = req.send().await.unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    /// The process's live tasks, and the first stream's.
    pub async fn tasks(&self) -> (u64, u64) {
        let s = self.get().await;
        let process = s["process"]["tasks"].as_u64().expect("no task count");
        let stream = s["streams"][0]["tasks"].as_u64().expect("no stream tasks");
        (process, stream)
    }

    /// Waits until `f` holds for `/status`; panics after a minute. The server
    /// has no way to announce a state: this is the one place tests poll it.
    pub async fn wait(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.get().await;
            if f(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the task counts are exactly `want` again.
    pub async fn wait_tasks(&self, want: (u64, u64)) {
        self.wait(&format!("tasks back to {want:?}"), |s| {
            (
                s["process"]["tasks"].as_u64(),
                s["streams"][0]["tasks"].as_u64(),
            ) == (Some(want.0), Some(want.1))
        })
        .await;
    }
}

/// GET `/status` of `ff` as JSON (no token).
pub async fn status(ff: &Ffwhep) -> serde_json::Value {
    StatusReader::new(ff).get().await
}

/// Waits until `f` holds for `/status`; panics after a minute.
pub async fn wait_status(ff: &Ffwhep, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    StatusReader::new(ff).wait(what, f).await;
}

/// Waits until FFmpeg of the first stream reported `frames` frames.
pub async fn wait_frames(ff: &Ffwhep, frames: u64) {
    wait_status(ff, &format!("{frames} frames from FFmpeg"), |s| {
        s["streams"][0]["progress"]["frame"].as_u64().unwrap_or(0) >= frames
    })
    .await;
}

/// Answers one STUN Binding request that arrived on `sock` from `from`,
/// saying it came from `mapped` (a request it cannot read is left alone).
pub fn stun_success(
    sock: &std::net::UdpSocket,
    request: &[u8],
    from: std::net::SocketAddr,
    mapped: std::net::SocketAddr,
) {
    use rtc::stun::message::{BINDING_SUCCESS, Message, Setter};
    use rtc::stun::xoraddr::XorMappedAddress;
    let mut req = Message::new();
    req.raw = request.to_vec();
    if req.decode().is_err() {
        return;
    }
    let mut resp = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: mapped.ip(),
            port: mapped.port(),
        }),
    ];
    resp.build(&setters).unwrap();
    sock.send_to(&resp.raw, from).unwrap();
}

/// ffwhep's /metrics text (with the global token when given).
pub async fn metrics(ff: &Ffwhep, token: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", ff.base()));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap().text().await.unwrap()
}

/// A fresh self-signed certificate for 127.0.0.1 and its key (PEM files,
/// made by openssl): the certificate is its own root (trusted by naming it
/// in `SSL_CERT_FILE`).
pub fn self_signed() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_file("unused", "").parent().unwrap().to_owned();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // A leaf, not a CA: webpki refuses a CA certificate as the server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl not found");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}
