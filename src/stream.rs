//! One stream's lifecycle. Each FFmpeg run is a full cycle: bind the port
//! pair and start the sources, publish them, spawn FFmpeg and watch it for
//! stalls, and when it exits run the teardown broadcast in order: every
//! viewer hung up, then the sources closed, then the ports are free. The
//! restart policy then decides whether another run follows.

use crate::auth::Secret;
use crate::exit::Failure;
use crate::ffmpeg::args::{self, LegPorts};
use crate::ffmpeg::progress::Progress;
use crate::ffmpeg::supervisor::{Exit, Ffmpeg, StopControl};
use crate::peer::StreamMedia;
use crate::ports::allocate_pair;
use crate::profile::Plan;
use crate::registry::{State, Streams};
use crate::restart::{Backoff, Decision, RunEnd};
use crate::source::{Source, SourceKind, SourceStats};
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// How often the watchdog looks at progress and the sources.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// Media counts as live while it moved within this window.
const LIVE_WINDOW: Duration = Duration::from_secs(3);
/// How often progress is logged.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// What a stream needs to run.
pub struct StreamRun {
    pub plan: Plan,
    pub ffmpeg: OsString,
    pub streams: Arc<Streams>,
    /// Stops the stream: the running FFmpeg, or the wait for the next run.
    pub ctl: StopControl,
    /// The stream's own bearer token (resolved from its profile).
    pub token: Option<Secret>,
}

/// How a stream ended.
#[derive(Debug)]
pub enum Ended {
    /// FFmpeg exited and no restart follows. `stalled` says why ffwhep
    /// stopped it, when it did.
    Exited { exit: Exit, stalled: Option<String> },
    /// The restart policy gave up: too many restarts within its window.
    Exhausted {
        exit: Exit,
        stalled: Option<String>,
        restarts: usize,
        window: Duration,
    },
    /// Stopped on request while waiting to restart.
    Stopped,
}

impl Ended {
    /// Whether this ending is a failure; `stop_requested`: ffwhep was asked
    /// to stop (a signal or `--duration`), so an exit it caused is not one.
    pub fn failed(&self, stop_requested: bool) -> bool {
        match self {
            Ended::Stopped => false,
            Ended::Exhausted { .. } => true,
            Ended::Exited { exit, stalled } => {
                stalled.is_some() || !(exit.status.success() || (exit.stopped && stop_requested))
            }
        }
    }
}

/// Runs the stream until it ends for good. `ready` is called after each
/// spawn of FFmpeg, with the run number and the port pair.
pub async fn run(run: StreamRun, ready: impl Fn(u32, LegPorts)) -> Result<Ended, Failure> {
    let id = run.plan.id.to_string();
    run.streams
        .declare(&id, run.token.clone(), run.plan.max_viewers);
    let mut backoff = Backoff::new(run.plan.restart.clone());
    let mut number = 0;
    let ended = loop {
        number += 1;
        let started = Instant::now();
        let span = tracing::info_span!("run", run = number);
        let (exit, stalled) = match one_run(&run, &id, number, &ready).instrument(span).await {
            Ok(r) => r,
            Err(f) => {
                run.streams.finish(&id, State::Failed);
                return Err(f);
            }
        };
        if run.ctl.stop.is_cancelled() {
            break Ended::Exited {
                exit,
                stalled: None,
            };
        }
        let end = RunEnd {
            clean: exit.status.success() && stalled.is_none(),
            ran_for: started.elapsed(),
        };
        let decision = backoff.after(end, std::time::Instant::now(), rand::random::<f64>());
        let (delay, attempt) = match decision {
            Decision::Stop => break Ended::Exited { exit, stalled },
            Decision::Exhausted { restarts, window } => {
                tracing::error!(stream = %id, run = number, restarts, window_s = window.as_secs(), status = %exit.status, "restarts exhausted");
                break Ended::Exhausted {
                    exit,
                    stalled,
                    restarts,
                    window,
                };
            }
            Decision::RestartAfter { delay, attempt } => (delay, attempt),
        };
        tracing::warn!(
            stream = %id, run = number, attempt, status = %exit.status, stalled = stalled.as_deref(),
            delay_ms = delay.as_millis() as u64, policy = %backoff.policy(), "FFmpeg exited; restarting after the delay"
        );
        run.streams
            .wait_for_restart(&id, std::time::Instant::now() + delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = run.ctl.stop.cancelled() => break Ended::Stopped,
        }
    };
    let failed = ended.failed(run.ctl.stop.is_cancelled());
    run.streams.finish(
        &id,
        if failed {
            State::Failed
        } else {
            State::Stopped
        },
    );
    Ok(ended)
}

/// The reason an exit is counted under, for status and metrics.
fn exit_reason(exit: &Exit, stalled: bool) -> &'static str {
    use std::os::unix::process::ExitStatusExt;
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

/// One FFmpeg run, from binding the ports to the end of the teardown.
async fn one_run(
    run: &StreamRun,
    id: &str,
    number: u32,
    ready: &impl Fn(u32, LegPorts),
) -> Result<(Exit, Option<String>), Failure> {
    let pair = allocate_pair()?;
    let ports = LegPorts {
        video: pair.video_port(),
        audio: pair.audio_port(),
    };
    run.streams.run_starting(id, number, ports);
    let video = Source::start(
        pair.video,
        "video",
        SourceKind::Video {
            pt: run.plan.video.as_ref().map(|l| l.payload_type),
            cache: run.plan.gop_cache,
        },
    )
    .map_err(Failure::setup("starting the video source"))?;
    let audio = Source::start(
        pair.audio,
        "audio",
        SourceKind::Audio {
            pt: run.plan.audio.as_ref().map(|l| l.payload_type),
        },
    )
    .map_err(Failure::setup("starting the audio source"))?;
    tracing::info!(
        video_port = ports.video,
        audio_port = ports.audio,
        "sources bound"
    );
    let media = StreamMedia {
        video: run.plan.video.as_ref().map(|_| video.handle()),
        audio: run.plan.audio.as_ref().map(|_| audio.handle()),
        latency: run.streams.latency(id),
    };
    let watched: Vec<_> = [(&media.video, "video"), (&media.audio, "audio")]
        .into_iter()
        .filter_map(|(h, name)| h.as_ref().map(|h| (name, h.stats.clone())))
        .collect();
    run.streams.publish(id, media, watched.clone());

    let argv = args::build(&run.plan, ports);
    tracing::debug!(command = %args::shell_line(&run.ffmpeg.to_string_lossy(), &argv), "spawning FFmpeg");
    let result = match Ffmpeg::spawn(&run.ffmpeg, &argv) {
        Ok(ff) => {
            tracing::info!(pid = ff.pid(), "FFmpeg started");
            ready(number, ports);
            supervise(ff, run, id, watched).await
        }
        Err(e) => Err(Failure::from(e)),
    };
    if let Ok((exit, stalled)) = &result {
        tracing::info!(status = %exit.status, "FFmpeg exited");
        let reason = exit_reason(exit, stalled.is_some());
        run.streams
            .record_exit(id, reason, format!("{reason}: {}", exit.status));
    }
    teardown(id, &run.streams, video, audio).await;
    result
}

/// Waits for FFmpeg while a watchdog looks for stalls; a stall stops this run
/// (SIGINT, then SIGKILL after the grace) without stopping the stream.
async fn supervise(
    ff: Ffmpeg,
    run: &StreamRun,
    id: &str,
    sources: Vec<(&'static str, Arc<SourceStats>)>,
) -> Result<(Exit, Option<String>), Failure> {
    let ctl = StopControl {
        stop: run.ctl.stop.child_token(),
        kill_now: run.ctl.kill_now.clone(),
        grace: run.ctl.grace,
    };
    let (progress_tx, progress_rx) = watch::channel(None);
    let wait = ff.wait(ctl.clone(), progress_tx);
    tokio::pin!(wait);
    let mut stalled = None;
    let report = |p: Option<Progress>, live: bool| run.streams.update_progress(id, p, live);
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

/// Resolves with the reason once FFmpeg has made no progress, or a source
/// has had no RTP, for `timeout`; never when `timeout` is `None`. Each tick
/// it hands `report` the latest progress and whether media is live (all of
/// it moved within `LIVE_WINDOW`), and now and then logs the progress.
async fn watchdog(
    mut progress: watch::Receiver<Option<Progress>>,
    sources: Vec<(&'static str, Arc<SourceStats>)>,
    timeout: Option<Duration>,
    report: impl Fn(Option<Progress>, bool),
) -> String {
    let start = Instant::now();
    let mut last_progress = (start, Progress::default());
    let mut last_rtp: Vec<(Instant, u64)> = sources.iter().map(|_| (start, 0)).collect();
    let mut logged = start;
    let mut tick = tokio::time::interval(WATCH_TICK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if let Some(p) = progress.borrow_and_update().clone() {
            if p.advanced_from(&last_progress.1) {
                last_progress = (now, p.clone());
            }
            if now.duration_since(logged) >= PROGRESS_LOG_EVERY {
                logged = now;
                tracing::info!(
                    frame = p.frame,
                    fps = p.fps,
                    bitrate_kbps = p.bitrate_kbps,
                    speed = p.speed,
                    drop_frames = p.drop_frames,
                    dup_frames = p.dup_frames,
                    "progress"
                );
            }
        }
        for ((_, stats), last) in sources.iter().zip(&mut last_rtp) {
            let n = stats.rtp_packets.load(Relaxed);
            if n != last.1 {
                *last = (now, n);
            }
        }
        let fresh = |t: Instant| t > start && now.duration_since(t) < LIVE_WINDOW;
        let live = fresh(last_progress.0) && last_rtp.iter().all(|(t, _)| fresh(*t));
        report(progress.borrow().clone(), live);
        let Some(timeout) = timeout else { continue };
        if now.duration_since(last_progress.0) >= timeout {
            return format!("no progress from FFmpeg for {} s", timeout.as_secs_f64());
        }
        for ((name, _), last) in sources.iter().zip(&last_rtp) {
            if now.duration_since(last.0) >= timeout {
                return format!(
                    "no RTP on the {name} source for {} s",
                    timeout.as_secs_f64()
                );
            }
        }
    }
}

/// Hangs up every viewer, then closes both sources; the ports are free when
/// this returns.
async fn teardown(id: &str, streams: &Streams, video: Source, audio: Source) {
    let viewers = streams.unpublish(id);
    let hung_up = viewers.len();
    futures::future::join_all(viewers.iter().map(|v| v.hang_up())).await;
    for source in [&video, &audio] {
        let h = source.handle();
        let s = &h.stats;
        tracing::info!(
            port = h.port,
            rtp_packets = s.rtp_packets.load(Relaxed),
            rtp_bytes = s.rtp_bytes.load(Relaxed),
            rtcp_packets = s.rtcp_packets.load(Relaxed),
            garbage_packets = s.garbage_packets.load(Relaxed),
            dropped_for_slow_viewers = s.dropped.load(Relaxed),
            "source totals"
        );
    }
    video.close().await;
    audio.close().await;
    tracing::info!(
        viewers_hung_up = hung_up,
        "teardown done: viewers hung up, sources closed, ports freed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watchdog_fires_on_missing_progress() {
        let (tx, rx) = watch::channel(None);
        let dog = tokio::spawn(watchdog(
            rx,
            vec![],
            Some(Duration::from_secs(5)),
            |_, _| {},
        ));
        // Progress for 3 s, then silence.
        for frame in 1..=3 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let started_silence = Instant::now();
        let why = dog.await.unwrap();
        assert!(why.contains("no progress from FFmpeg for 5 s"), "{why}");
        let waited = Instant::now().duration_since(started_silence);
        assert!(
            waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_fires_on_a_silent_source() {
        let (tx, rx) = watch::channel(None);
        let video = Arc::new(SourceStats::default());
        let dog = tokio::spawn(watchdog(
            rx,
            vec![("video", video.clone())],
            Some(Duration::from_secs(5)),
            |_, _| {},
        ));
        for frame in 1..=20 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            if frame < 3 {
                video.rtp_packets.fetch_add(10, Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if dog.is_finished() {
                break;
            }
        }
        let why = dog.await.unwrap();
        assert!(why.contains("no RTP on the video source"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_reports_media_live_only_while_it_moves() {
        let (tx, rx) = watch::channel(None);
        let video = Arc::new(SourceStats::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let report = move |_: Option<Progress>, live: bool| log.lock().unwrap().push(live);
        let dog = tokio::spawn(watchdog(rx, vec![("video", video.clone())], None, report));
        for frame in 1..=5 {
            tx.send_replace(Some(Progress {
                frame,
                ..Default::default()
            }));
            video.rtp_packets.fetch_add(10, Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        dog.abort();
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen[1..5].iter().all(|l| *l),
            "not live while moving: {seen:?}"
        );
        assert!(
            !seen.last().unwrap(),
            "still live after media stopped: {seen:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_without_timeout_never_fires() {
        let (_tx, rx) = watch::channel(None);
        let dog = watchdog(rx, vec![], None, |_, _| {});
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), dog)
                .await
                .is_err()
        );
    }
}
