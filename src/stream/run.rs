//! One FFmpeg run, from binding the ports to the end of its teardown. A
//! panic inside the run is caught here: the run is torn down like any other
//! (viewers hung up, sources closed, ports freed) and the stream fails,
//! while the other streams of the process go on.

use super::StreamRun;
use super::push::PushRun;
use super::registry::{Published, Streams};
use super::sources::RunSources;
use super::watchdog::watchdog;
use crate::exit::Failure;
use crate::ffmpeg::args::{self, LegPorts};
use crate::ffmpeg::progress::Progress;
use crate::ffmpeg::supervisor::{Exit, Ffmpeg, StopControl};
use crate::hooks::event::Event;
use crate::profile::hooks::EventKind;
use crate::source::SourceStats;
use futures::FutureExt;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// What one run ended with: FFmpeg's exit, and why ffwhep stopped it when
/// it stalled.
pub(super) type RunResult = Result<(Exit, Option<String>), Failure>;

/// One FFmpeg run, from binding the ports to the end of the teardown.
pub(super) async fn one_run(
    run: &StreamRun,
    id: &str,
    number: u32,
    ready: &impl Fn(u32, LegPorts),
) -> RunResult {
    let sources = RunSources::start(&run.plan)?;
    let ports = sources.ports;
    run.streams.run_starting(id, number, ports);
    tracing::info!(
        video_port = ports.video,
        audio_port = ports.audio,
        "sources bound"
    );
    let tasks = TaskTracker::new();
    let published = Published {
        run: number,
        media: sources.media(&run.plan, run.streams.latency(id)),
        tasks: tasks.clone(),
        ended: tokio_util::sync::CancellationToken::new(),
    };
    let watched = sources.watched(&run.plan);
    let (live_tx, live) = watch::channel(false);
    let pushes = TaskTracker::new();
    for push in &run.pushes {
        let at = PushRun {
            streams: run.streams.clone(),
            id: id.to_owned(),
            run: number,
            media: published.media.clone(),
            live: live.clone(),
            ended: published.ended.clone(),
            tasks: tasks.clone(),
        };
        pushes.spawn(push.clone().run(at));
    }
    run.streams.publish(id, published, watched.clone());

    let supervised = spawn_and_supervise(run, id, number, ports, ready, watched, &live_tx);
    let ffmpeg = AssertUnwindSafe(supervised);
    let result = match ffmpeg.catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(panic = %what, "the stream's task panicked: tearing it down");
            Err(Failure::Panicked(what))
        }
    };
    if let Ok((exit, stalled)) = &result {
        tracing::info!(status = %exit.status, "FFmpeg exited");
        let reason = exit_reason(exit, stalled.is_some());
        run.streams
            .record_exit(id, reason, format!("{reason}: {}", exit.status));
        run.streams.tell(
            id,
            Event {
                run: Some(number),
                reason: Some(reason.to_owned()),
                exit_code: exit.status.code(),
                signal: exit.status.signal(),
                ..Event::new(EventKind::Exit, id)
            },
        );
    }
    teardown(id, &run.streams, sources, tasks, pushes).await;
    result
}

async fn spawn_and_supervise(
    run: &StreamRun,
    id: &str,
    number: u32,
    ports: LegPorts,
    ready: &impl Fn(u32, LegPorts),
    watched: Vec<(String, Arc<SourceStats>)>,
    live: &watch::Sender<bool>,
) -> RunResult {
    let argv = args::build(&run.plan, ports);
    tracing::debug!(command = %args::shell_line(&run.ffmpeg.to_string_lossy(), &argv), "spawning FFmpeg");
    let ff = Ffmpeg::spawn(&run.ffmpeg, &argv)?;
    tracing::info!(pid = ff.pid(), "FFmpeg started");
    ready(number, ports);
    supervise(ff, run, id, number, watched, live).await
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The reason an exit is counted under, for status and metrics.
fn exit_reason(exit: &Exit, stalled: bool) -> &'static str {
    if stalled {
        "stalled"
    } else if exit.stopped {
        "stopped"
    } else if exit.status.success() {
        "clean"
    } else if exit.status.signal().is_some() {
        "killed"
    } else {
        "failed"
    }
}

/// Waits for FFmpeg while a watchdog looks for stalls; a stall stops this run
/// (SIGINT, then SIGKILL after the grace) without stopping the stream.
async fn supervise(
    ff: Ffmpeg,
    run: &StreamRun,
    id: &str,
    number: u32,
    sources: Vec<(String, Arc<SourceStats>)>,
    live_tx: &watch::Sender<bool>,
) -> RunResult {
    let ctl = StopControl {
        stop: run.ctl.stop.child_token(),
        kill_now: run.ctl.kill_now.clone(),
        grace: run.ctl.grace,
    };
    let (progress_tx, progress_rx) = watch::channel(None);
    let wait = ff.wait(ctl.clone(), progress_tx);
    tokio::pin!(wait);
    let mut stalled = None;
    let announced = std::sync::atomic::AtomicBool::new(false);
    let report = |p: Option<Progress>, live: bool| {
        run.streams.update_progress(id, p, live);
        if live && !announced.swap(true, Relaxed) {
            tracing::info!("media ready");
            live_tx.send_replace(true);
            let ready = Event {
                run: Some(number),
                ..Event::new(EventKind::Ready, id)
            };
            run.streams.tell(id, ready);
        }
    };
    let dog = watchdog(progress_rx, sources, run.plan.stale_timeout, report);
    tokio::pin!(dog);
    loop {
        tokio::select! {
            exit = &mut wait => {
                let exit = exit.map_err(Failure::setup("waiting for FFmpeg"))?;
                return Ok((exit, stalled));
            }
            why = &mut dog, if stalled.is_none() => {
                tracing::warn!(reason = %why, "FFmpeg stalled; stopping it");
                stalled = Some(why);
                ctl.stop.cancel();
            }
        }
    }
}

/// Hangs up every viewer and push, then closes the sources, then waits
/// for every task of the run (the pushes' DELETEs among them): the ports
/// are free and nothing of the run is left when this returns.
async fn teardown(
    id: &str,
    streams: &Streams,
    sources: RunSources,
    tasks: TaskTracker,
    pushes: TaskTracker,
) {
    let viewers = streams.unpublish(id);
    let hung_up = viewers.len();
    futures::future::join_all(viewers.iter().map(|v| v.hang_up())).await;
    // The run's end (unpublish) stops each push: it hangs up and leaves
    // its DELETE among the run's tasks.
    pushes.close();
    pushes.wait().await;
    sources.close().await;
    tasks.close();
    tasks.wait().await;
    tracing::info!(
        viewers_hung_up = hung_up,
        "teardown done: viewers hung up, sources closed, ports freed"
    );
}
