//! The commands: `check` and `args` (no side effects beyond printing) and
//! `run`, which wires the HTTP server, signals, `--duration` and the streams
//! together and turns their endings into one exit code.

use crate::admission::Admission;
use crate::auth::{Secret, TokenSource};
use crate::cli::{ArgsArgs, Command, ProfileArg, RunArgs};
use crate::engine::{Engine, IceServer, PeerConfig, PortRange};
use crate::exit::{self, Failure, StopReason, code};
use crate::ffmpeg::args::{self, LegPorts};
use crate::ffmpeg::supervisor::StopControl;
use crate::http;
use crate::profile::access::{Access, ServiceConfig, service_url};
use crate::profile::{BUILTIN_NAME, Plan, ProfileError};
use crate::smoke;
use crate::source::ports::allocate_ports;
use crate::stream::judge;
use crate::stream::push::Push;
use crate::stream::registry::State;
use crate::stream::registry::{Guard, Limits, Streams};
use crate::stream::{self, StreamRun};
use crate::term::Term;
use futures::FutureExt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Runs a parsed command line; the `Ok` value is the exit code.
pub(crate) fn main(cli: crate::cli::Cli, term: Option<Term>) -> Result<u8, Failure> {
    match cli.command {
        Command::Check(p) => check(&p),
        Command::Args(a) => print_args(&a),
        Command::Run(r) => {
            let result = runtime()?.block_on(run(*r, term.clone()));
            if let Some(t) = term {
                t.clear();
            }
            result
        }
        Command::Smoke(s) => {
            let plan = load(&s.profile)?;
            let name = s
                .profile
                .profile
                .as_ref()
                .map_or_else(|| BUILTIN_NAME.to_owned(), |p| p.display().to_string());
            let pushes = pushes(&plan, &name)?;
            let expect = smoke::Expect {
                timeout: s.timeout,
                frames: s.frames,
                audio_packets: s.audio_packets,
                size: s.expect_size,
            };
            let ice_addrs = match (s.ice_addrs.is_empty(), pushes.is_empty()) {
                (false, _) => s.ice_addrs,
                (true, true) => vec![loopback()],
                (true, false) => vec![SocketAddr::from(([0, 0, 0, 0], 0)), loopback()],
            };
            let run = smoke::run(plan, pushes, ice_addrs, s.ffmpeg.ffmpeg, expect);
            runtime()?.block_on(run)
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::setup("starting the async runtime"))
}

fn load(p: &ProfileArg) -> Result<Plan, Failure> {
    Ok(match &p.profile {
        Some(path) => Plan::from_file(path)?,
        None => Plan::builtin()?,
    })
}

fn profile_name(p: &ProfileArg) -> String {
    p.profile
        .as_ref()
        .map_or_else(|| BUILTIN_NAME.to_owned(), |p| p.display().to_string())
}

fn check(p: &ProfileArg) -> Result<u8, Failure> {
    let plan = load(p)?;
    let legs: Vec<String> = [&plan.video, &plan.audio]
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} (map {}, payload type {})",
                l.kind, l.map, l.payload_type
            )
        })
        .collect();
    let legs = if legs.is_empty() {
        "no WebRTC legs".to_owned()
    } else {
        legs.join(", ")
    };
    println!(
        "OK: {}: stream {:?}, {}",
        profile_name(p),
        plan.id.as_str(),
        legs
    );
    Ok(code::OK)
}

fn print_args(a: &ArgsArgs) -> Result<u8, Failure> {
    let plan = load(&a.profile)?;
    // clap keeps --port within 1 to 65534: audio uses port + 1, and each
    // extra rung of a ladder one more.
    let extra = plan
        .video
        .as_ref()
        .map_or(0, |v| v.rungs.len().saturating_sub(1));
    let video = match a.port {
        Some(v) if usize::from(v) + 1 + extra > usize::from(u16::MAX) => {
            return Err(Failure::Usage(format!(
                "--port {v}: the ladder needs {} ports from it, past 65535",
                2 + extra
            )));
        }
        Some(v) => v,
        None => allocate_ports(extra)?.video_port(),
    };
    let argv = args::build(
        &plan,
        LegPorts {
            video,
            audio: video + 1,
        },
    );
    println!(
        "{}",
        args::shell_line(&a.ffmpeg.ffmpeg.to_string_lossy(), &argv)
    );
    Ok(code::OK)
}

/// `--ice-server`s, with the TURN credentials on the `turn:` ones.
fn ice_servers(r: &RunArgs) -> Vec<IceServer> {
    r.ice_servers
        .iter()
        .map(|url| {
            let turn = url.starts_with("turn:") || url.starts_with("turns:");
            IceServer {
                url: url.clone(),
                username: r.ice_username.clone().filter(|_| turn),
                credential: r.ice_credential.clone().filter(|_| turn),
            }
        })
        .collect()
}

/// The global token from `--token` / FFWHEP_TOKEN or `--token-file`.
fn global_token(r: &RunArgs) -> Result<Option<Secret>, Failure> {
    let source = match (&r.token, &r.token_file) {
        (Some(t), _) => TokenSource::Literal(Secret::new(t.clone())),
        (None, Some(f)) => TokenSource::File(f.clone()),
        (None, None) => return Ok(None),
    };
    source.resolve().map(Some).map_err(|message| {
        let message = match message.strip_prefix("token_file") {
            Some(rest) => format!("--token-file{rest}"),
            None => format!("--token: {message}"),
        };
        Failure::Profile(ProfileError {
            file: "command line".into(),
            position: None,
            message,
        })
    })
}

/// The profile's WHIP pushes, their tokens read now: one that cannot be
/// read stops the start, as a profile error.
fn pushes(plan: &Plan, name: &str) -> Result<Vec<Arc<Push>>, Failure> {
    let mut pushes = Vec::new();
    for (i, config) in plan.whip.iter().enumerate() {
        let token = match &config.token {
            Some(source) => Some(source.resolve().map_err(|message| {
                Failure::Profile(ProfileError {
                    file: name.to_owned(),
                    position: None,
                    message: format!("whip[{i}]: {message}"),
                })
            })?),
            None => None,
        };
        pushes.push(Arc::new(Push::new(i, config.clone(), token)));
    }
    Ok(pushes)
}

/// The service of `--auth-url`, shared by every stream without `auth:`.
fn global_service(r: &RunArgs) -> Result<Option<Arc<Admission>>, Failure> {
    let Some(url) = &r.auth_url else {
        return Ok(None);
    };
    let bad = |message: String| {
        Failure::Profile(ProfileError {
            file: "command line".into(),
            position: None,
            message,
        })
    };
    let url = service_url("--auth-url", url).map_err(bad)?;
    if r.auth_timeout.is_zero() || r.auth_timeout > Duration::from_secs(30) {
        return Err(bad(format!(
            "--auth-timeout {:?}: expected above 0 and at most 30 s",
            r.auth_timeout
        )));
    }
    Ok(Some(Arc::new(Admission::new(ServiceConfig {
        url,
        timeout: r.auth_timeout,
    }))))
}

/// How each profile of `run` is named in messages.
fn profile_names(paths: &[PathBuf]) -> Vec<String> {
    if paths.is_empty() {
        return vec![BUILTIN_NAME.to_owned()];
    }
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// Loads every profile of `run`, refusing two streams with one id.
fn load_all(paths: &[PathBuf]) -> Result<Vec<Plan>, Failure> {
    if paths.is_empty() {
        return Ok(vec![Plan::builtin()?]);
    }
    let mut plans: Vec<(Plan, &PathBuf)> = Vec::new();
    for path in paths {
        let plan = Plan::from_file(path)?;
        if let Some((_, first)) = plans.iter().find(|(p, _)| p.id == plan.id) {
            return Err(Failure::Profile(ProfileError {
                file: path.display().to_string(),
                position: None,
                message: format!(
                    "stream id {:?} is already used by {}: ids must be unique",
                    plan.id.as_str(),
                    first.display()
                ),
            }));
        }
        plans.push((plan, path));
    }
    Ok(plans.into_iter().map(|(p, _)| p).collect())
}

async fn run(r: RunArgs, term: Option<Term>) -> Result<u8, Failure> {
    let plans = load_all(&r.profiles)?;
    let listener = std::net::TcpListener::bind(r.listen).map_err(|e| {
        Failure::Setup(anyhow::Error::new(e).context(format!("cannot listen on {}", r.listen)))
    })?;
    let http_addr = listener
        .local_addr()
        .map_err(Failure::setup("reading the HTTP address"))?;
    let global_token = global_token(&r)?;
    let global_service = global_service(&r)?;
    let mut guards = Vec::new();
    for (plan, name) in plans.iter().zip(profile_names(&r.profiles)) {
        let guard = match &plan.auth {
            Some(Access::Token(source)) => Guard::Token(source.resolve().map_err(|message| {
                Failure::Profile(ProfileError {
                    file: name.clone(),
                    position: None,
                    message: format!("auth: {message}"),
                })
            })?),
            Some(Access::Service(config)) => {
                Guard::Service(Arc::new(Admission::new(config.clone())))
            }
            None => global_service.clone().map_or(Guard::Open, Guard::Service),
        };
        let pushes = pushes(plan, &name)?;
        guards.push((guard, pushes));
    }
    // Every task of the process besides the streams' own, ended by `stop`.
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let peer = PeerConfig {
        ice_addrs: r.ice_addrs.clone(),
        gather_timeout: r.ice_gather_timeout,
        setup_timeout: r.setup_timeout,
        ice_servers: ice_servers(&r),
        nat_ips: r.nat_ips.clone(),
        port_range: r.udp_port_range.map(|(a, b)| PortRange::new(a, b)),
        ice_tcp_addrs: r.ice_tcp_addrs.clone(),
        udp_mux: r.udp_mux,
        shards: r.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
    };
    let peer = Engine::start(peer, &tasks, stop.clone()).map_err(Failure::Setup)?;
    let limits = Limits {
        max_viewers: r.max_viewers,
        max_setups: r.max_setups.max(1),
    };
    let streams = Streams::new(peer, global_token, limits);
    let tls = r
        .tls_cert
        .clone()
        .zip(r.tls_key.clone())
        .map(|(cert, key)| http::Tls { cert, key });
    let app = http::router(
        streams.clone(),
        r.cors_origins.clone(),
        r.ffmpeg.ffmpeg.clone(),
    );
    let server = http::serve(listener, app, tls.as_ref(), stop.clone())
        .await
        .map_err(Failure::Setup)?;

    if let Some(t) = &term {
        tasks.spawn(until(stop.clone(), show_status(streams.clone(), t.clone())));
    }
    let ctl = StopControl::new(r.stop_grace);
    let reason = Arc::new(Mutex::new(None));
    tasks.spawn(until(
        stop.clone(),
        forward_signals(ctl.clone(), reason.clone()),
    ));
    if let Some(d) = r.duration {
        tasks.spawn(until(
            stop.clone(),
            stop_after(d, ctl.clone(), reason.clone()),
        ));
    }

    let mut set = JoinSet::new();
    for (plan, (guard, pushes)) in plans.into_iter().zip(guards) {
        let id = plan.id.to_string();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", display_addr(http_addr));
        let url = format!("{base}/whep/{}", plan.id);
        let player = format!("{base}/play/{}", plan.id);
        let span = tracing::info_span!("stream", stream = %plan.id);
        let run = StreamRun {
            plan,
            ffmpeg: r.ffmpeg.ffmpeg.clone(),
            streams: streams.clone(),
            ctl: ctl.clone(),
            guard,
            pushes,
        };
        let announce_once = Once::new();
        let term = term.clone();
        let fut = stream::run(run, move |_, _| {
            announce_once.call_once(|| announce(&url, &player, term.as_ref()))
        });
        // A panic that escapes a stream (its runs catch their own) fails
        // that stream alone.
        let streams = streams.clone();
        set.spawn(
            async move {
                let result = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r,
                    Err(_) => {
                        // Outside a run (whose own boundary tears it down):
                        // its sources stopped as they were dropped; the
                        // viewers are hung up here.
                        tracing::error!("the stream's task panicked");
                        streams.finish(&id, State::Failed);
                        let viewers = streams.unpublish(&id);
                        futures::future::join_all(viewers.iter().map(|v| v.hang_up())).await;
                        Err(Failure::Panicked("the stream's task panicked".into()))
                    }
                };
                (id, result)
            }
            .instrument(span),
        );
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (id, result) = joined.map_err(Failure::setup("a stream task failed"))?;
        let stop = *reason.lock().unwrap_or_else(|p| p.into_inner());
        outcomes.push((id, result.and_then(|ended| judge(&ended, stop))));
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    if server.await.is_err() {
        tracing::warn!("the HTTP server task failed");
    }
    exit::worst(outcomes)
}

/// Runs `task` until `stop` fires.
async fn until(stop: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = task => {}
    }
}

/// Keeps the terminal status line current: per stream its state, frame
/// rate, bitrate and viewers.
async fn show_status(streams: Arc<Streams>, term: Term) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let line: Vec<String> = streams
            .snapshot()
            .into_iter()
            .map(|(id, i)| {
                let (fps, kbps) = i
                    .progress
                    .as_ref()
                    .map_or((0.0, 0.0), |p| (p.fps, p.bitrate_kbps.unwrap_or(0.0)));
                format!(
                    "{id}: {} {fps:.0} fps {kbps:.0} kbit/s {} viewer(s)",
                    i.state.name(),
                    i.sessions.len()
                )
            })
            .collect();
        term.set(&line.join(" | "));
    }
}

/// Prints the stream's WHEP URL and its player page on stdout.
fn announce(whep_url: &str, player_url: &str, term: Option<&Term>) {
    tracing::info!(
        url = whep_url,
        player = player_url,
        "ready: subscribe with WHEP"
    );
    if let Some(t) = term {
        // stdout shares the terminal: take the status line away first; the
        // next tick draws it again.
        t.clear();
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "WHEP {whep_url}");
    let _ = writeln!(out, "PLAY {player_url}");
    let _ = out.flush();
}

fn display_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The first SIGINT or SIGTERM asks every stream to stop (and is
/// remembered for the exit code); a second one kills FFmpeg at once.
async fn forward_signals(ctl: StopControl, reason: Arc<Mutex<Option<StopReason>>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        let sig = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if n == 0 {
            tracing::info!(signal = exit::signal_name(sig), "stopping");
            reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(StopReason::Signal(sig));
            ctl.stop.cancel();
        } else {
            tracing::warn!(
                signal = exit::signal_name(sig),
                "second signal: killing FFmpeg without waiting"
            );
            ctl.kill_now.cancel();
        }
    }
}

/// `--duration`: a clean stop once the time is up.
async fn stop_after(d: Duration, ctl: StopControl, reason: Arc<Mutex<Option<StopReason>>>) {
    tokio::time::sleep(d).await;
    tracing::info!(duration_s = d.as_secs_f64(), "duration reached: stopping");
    reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(StopReason::Duration);
    ctl.stop.cancel();
}
