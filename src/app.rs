//! The commands: `check` and `args` (no side effects beyond printing) and
//! `run`, which wires the HTTP server, signals and one stream together.

use crate::cli::{ArgsArgs, Command, ProfileArg, RunArgs};
use crate::exit::{self, Failure, code};
use crate::ffmpeg::args::{self, LegPorts};
use crate::peer::PeerConfig;
use crate::ports::allocate_pair;
use crate::profile::{BUILTIN_NAME, Plan};
use crate::stream::{self, StreamRun};
use crate::whep::{self, Streams};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs a parsed command line; the `Ok` value is the exit code.
pub fn main(cli: crate::cli::Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Check(p) => check(&p),
        Command::Args(a) => print_args(&a),
        Command::Run(r) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Failure::setup("starting the async runtime"))?
            .block_on(run(r)),
    }
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
    let video = match a.port {
        Some(0) | Some(u16::MAX) => {
            return Err(Failure::Setup(anyhow::anyhow!(
                "--port must be 1 to 65534 (audio uses port + 1)"
            )));
        }
        Some(v) => v,
        None => allocate_pair()?.video_port(),
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

async fn run(r: RunArgs) -> Result<u8, Failure> {
    let plan = load(&r.profile)?;
    let grace = r.stop_grace;
    let listener = tokio::net::TcpListener::bind(r.listen).await.map_err(|e| {
        Failure::Setup(anyhow::Error::new(e).context(format!("cannot listen on {}", r.listen)))
    })?;
    let http_addr = listener
        .local_addr()
        .map_err(Failure::setup("reading the HTTP address"))?;
    let streams = Streams::new(PeerConfig {
        ice_addrs: r.ice_addrs,
        gather_timeout: Duration::from_secs(5),
    });
    let http_stop = CancellationToken::new();
    let server = axum::serve(listener, whep::router(streams.clone()))
        .with_graceful_shutdown(http_stop.clone().cancelled_owned());
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    let stop = CancellationToken::new();
    let signalled = Arc::new(AtomicI32::new(0));
    tokio::spawn(forward_signals(stop.clone(), signalled.clone()));

    let url = format!("http://{}/whep/{}", display_addr(http_addr), plan.id);
    let span = tracing::info_span!("stream", stream = %plan.id);
    let run = StreamRun {
        plan,
        ffmpeg: r.ffmpeg.ffmpeg,
        streams,
        stop,
        grace,
    };
    let result = stream::run(run, |_| announce(&url)).instrument(span).await;

    http_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP server did not stop within 2 s");
    }
    let sig = signalled.load(Ordering::SeqCst);
    exit::judge(&result?, (sig != 0).then_some(sig))
}

fn announce(url: &str) {
    tracing::info!(url, "ready: subscribe with WHEP");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "WHEP {url}");
    let _ = out.flush();
}

fn display_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The first SIGINT or SIGTERM asks the stream to stop and is remembered for
/// the exit code.
async fn forward_signals(stop: CancellationToken, signalled: Arc<AtomicI32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let sig = tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
    };
    tracing::info!(signal = exit::signal_name(sig), "stopping");
    signalled.store(sig, Ordering::SeqCst);
    stop.cancel();
}
