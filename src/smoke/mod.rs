//! `ffwhep smoke`: proves a profile works end to end. It runs the stream,
//! subscribes the built-in viewer over real HTTP and WebRTC, and checks for a
//! bounded time that decodable video (SPS, PPS, IDR, the expected size) and
//! audio arrive; then prints a one-line JSON summary.

pub mod viewer;

use crate::stream::judge;

use crate::engine::PeerConfig;
use crate::exit::{self, Failure};
use crate::ffmpeg::supervisor::StopControl;
use crate::http;
use crate::profile::Plan;
use crate::profile::restart::Policy;
use crate::stream::push::{Push, PushState, PushStatus};
use crate::stream::registry::{Limits, Streams};
use crate::stream::{self, StreamRun};
use serde_json::json;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use viewer::{Received, Viewer};

/// What the smoke check expects.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    /// The whole check, from spawning FFmpeg to the last frame.
    pub timeout: Duration,
    /// Complete video frames to receive after the first IDR.
    pub frames: u64,
    /// Audio packets to receive.
    pub audio_packets: u64,
    /// The picture size the SPS must declare, when given.
    pub size: Option<(u32, u32)>,
}

/// Runs the smoke check of `plan`. The summary goes to stdout; the `Ok`
/// value is the exit code.
pub(crate) async fn run(
    mut plan: Plan,
    pushes: Vec<Arc<Push>>,
    ice_addrs: Vec<SocketAddr>,
    ffmpeg: OsString,
    expect: Expect,
) -> Result<u8, Failure> {
    // A smoke run judges the profile's first run; it never restarts.
    plan.restart.policy = Policy::Never;
    let http_stop = CancellationToken::new();
    let (streams, addr, server) = serve(ice_addrs, &ffmpeg, &http_stop).await?;

    let id = plan.id.to_string();
    let url = format!("http://{addr}/whep/{id}");
    let (has_video, has_audio) = (plan.video.is_some(), plan.audio.is_some());
    let ctl = StopControl::new(Duration::from_secs(3));
    let (ready_tx, ready_rx) = oneshot::channel();
    let ready_tx = std::sync::Mutex::new(Some(ready_tx));
    let run = StreamRun {
        plan,
        ffmpeg,
        streams,
        ctl: ctl.clone(),
        // The built-in viewer is the only client.
        guard: Default::default(),
        pushes: pushes.clone(),
    };
    let span = tracing::info_span!("stream", stream = %id);
    let ready = move |_, _| {
        if let Some(tx) = ready_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    };
    let mut stream = tokio::spawn(stream::run(run, ready).instrument(span));

    let started = Instant::now();
    let seen = std::sync::Mutex::new(Vec::new());
    let check = async {
        ready_rx
            .await
            .map_err(|_| ("the stream ended before FFmpeg started".to_owned(), None))?;
        let received = check(&url, has_video, has_audio, &expect, started).await?;
        let connected = pushes_connected(&pushes, &expect, started).await;
        // As they were when judged (the stop that follows stops them).
        for p in &pushes {
            let status = p.status().await;
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(status);
        }
        connected.map_err(|why| (why, Some(received.clone())))?;
        Ok(received)
    };
    let (checked, ended) = tokio::select! {
        r = check => (Some(r), None),
        ended = &mut stream => (None, Some(ended)),
    };
    ctl.stop.cancel();
    // The stream is stopped: it ends after its grace at the latest.
    let ended = Some(match ended {
        Some(e) => e,
        None => stream.await,
    });
    http_stop.cancel();
    if server.await.is_err() {
        tracing::warn!("the HTTP server task failed");
    }
    let outcome = judged(checked, ended);
    let (reason, received) = match outcome {
        Ok(r) => r,
        Err(f) => {
            print_summary(&id, Some(&f.to_string()), None, &[], started);
            return Err(f);
        }
    };
    let mut pushed = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    if pushed.is_empty() {
        for p in &pushes {
            pushed.push(p.status().await);
        }
    }
    print_summary(&id, reason.as_deref(), received.as_ref(), &pushed, started);
    match reason {
        None => Ok(exit::code::OK),
        Some(r) => Err(Failure::Smoke(r)),
    }
}

/// The engine (one shard on `ice_addrs`) and the HTTP server on a free
/// loopback port, until `stop`: the registry, the address, the server's
/// task.
async fn serve(
    ice_addrs: Vec<SocketAddr>,
    ffmpeg: &OsString,
    stop: &CancellationToken,
) -> Result<(Arc<Streams>, SocketAddr, tokio::task::JoinHandle<()>), Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(Failure::setup("binding the HTTP port"))?;
    let addr = listener
        .local_addr()
        .map_err(Failure::setup("reading the HTTP address"))?;
    let peer = PeerConfig {
        ice_addrs,
        gather_timeout: Duration::from_secs(5),
        setup_timeout: Duration::from_secs(10),
        ice_servers: Vec::new(),
        nat_ips: Vec::new(),
        port_range: None,
        ice_tcp_addrs: Vec::new(),
        udp_mux: None,
        shards: 1,
    };
    let engine_tasks = tokio_util::task::TaskTracker::new();
    let peer =
        crate::engine::Engine::start(peer, &engine_tasks, stop.clone()).map_err(Failure::Setup)?;
    let limits = Limits {
        max_viewers: None,
        max_setups: 1,
    };
    let streams = Streams::new(peer, None, limits);
    let app = http::router(streams.clone(), vec!["*".into()], ffmpeg.clone());
    let server = http::serve(listener, app, None, stop.clone())
        .await
        .map_err(Failure::Setup)?;
    Ok((streams, addr, server))
}

/// What the check found, or how the stream ended before it was done: the
/// reason it failed (none: it passed) and what was received.
fn judged(
    checked: Option<Result<Received, (String, Option<Received>)>>,
    ended: Option<Result<Result<stream::Ended, Failure>, tokio::task::JoinError>>,
) -> Result<(Option<String>, Option<Received>), Failure> {
    match (checked, ended.and_then(Result::ok)) {
        (Some(Ok(received)), _) => Ok((None, Some(received))),
        (Some(Err((reason, received))), _) => Ok((Some(reason), received)),
        // FFmpeg ended before the check could finish: its own failure says why.
        (None, Some(Err(f))) => Err(f),
        (None, Some(Ok(ended))) => match judge(&ended, None) {
            Err(f) => Err(f),
            Ok(_) => Ok((
                Some("FFmpeg ended before the check was done".to_owned()),
                None,
            )),
        },
        (None, None) => Ok((Some("the stream task failed".to_owned()), None)),
    }
}

/// Waits until every push is connected (within the check's time).
async fn pushes_connected(
    pushes: &[Arc<Push>],
    expect: &Expect,
    started: Instant,
) -> Result<(), String> {
    for p in pushes {
        let left = expect.timeout.saturating_sub(started.elapsed());
        if !tokio::time::timeout(left, p.reached(PushState::Connected))
            .await
            .unwrap_or(false)
        {
            let s = p.status().await;
            return Err(format!(
                "the push to {} did not connect ({} attempts; last error: {})",
                s.url,
                s.attempts,
                s.last_error.as_deref().unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// Subscribes and waits for what `expect` asks; on failure, the reason and
/// what had arrived.
async fn check(
    url: &str,
    has_video: bool,
    has_audio: bool,
    expect: &Expect,
    started: Instant,
) -> Result<Received, (String, Option<Received>)> {
    let left = expect.timeout.saturating_sub(started.elapsed());
    let v = tokio::time::timeout(left, Viewer::connect(url))
        .await
        .map_err(|_| ("the viewer could not connect in time".to_owned(), None))?
        .map_err(|e| (format!("the viewer could not subscribe: {e:#}"), None))?;
    let done = |r: &Received| {
        (!has_video || (r.decodable() && r.frames_since_idr >= expect.frames))
            && (!has_audio || r.audio.packets >= expect.audio_packets)
    };
    let left = expect.timeout.saturating_sub(started.elapsed());
    let ok = v.wait_until(left, done).await;
    let r = v.received();
    v.close().await;
    if !ok {
        return Err((missing(&r, has_video, has_audio, expect), Some(r)));
    }
    if let Some(want) = expect.size.filter(|_| has_video)
        && r.size != Some(want)
    {
        let why = format!(
            "the picture is {:?}, expected {}x{}",
            r.size, want.0, want.1
        );
        return Err((why, Some(r)));
    }
    Ok(r)
}

fn missing(r: &Received, has_video: bool, has_audio: bool, e: &Expect) -> String {
    let mut what = Vec::new();
    if has_video && !r.decodable() {
        let have: Vec<String> = r.nal_types.iter().map(u8::to_string).collect();
        what.push(format!(
            "no decodable video (SPS, PPS and IDR; NAL types seen: [{}])",
            have.join(", ")
        ));
    } else if has_video && r.frames_since_idr < e.frames {
        what.push(format!(
            "only {} of {} video frames",
            r.frames_since_idr, e.frames
        ));
    }
    if has_audio && r.audio.packets < e.audio_packets {
        what.push(format!(
            "only {} of {} audio packets",
            r.audio.packets, e.audio_packets
        ));
    }
    format!(
        "{} within {} s",
        what.join(" and "),
        e.timeout.as_secs_f64()
    )
}

fn print_summary(
    id: &str,
    reason: Option<&str>,
    r: Option<&Received>,
    pushes: &[PushStatus],
    started: Instant,
) {
    let line = json!({
        "ok": reason.is_none(),
        "stream": id,
        "reason": reason,
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "first_keyframe_ms": r.and_then(|r| r.first_keyframe_after).map(|d| d.as_millis() as u64),
        "width": r.and_then(|r| r.size).map(|s| s.0),
        "height": r.and_then(|r| r.size).map(|s| s.1),
        "frames": r.map(|r| r.frames_since_idr),
        "video": r.map(|r| &r.video),
        "audio": r.map(|r| &r.audio),
        "pushes": pushes.iter().map(|p| json!({
            "url": p.url,
            "state": p.state,
            "attempts": p.attempts,
            "last_error": p.last_error,
            "packets_sent": p.sent.packets,
        })).collect::<Vec<_>>(),
    });
    println!("{line}");
}
