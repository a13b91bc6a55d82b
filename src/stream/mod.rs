//! One stream's lifecycle: its runs of FFmpeg one after another, as the
//! restart policy decides, and the registry of every stream's state.
//!
//! Each run (`run.rs`) is a full cycle: bind the port pair and start the
//! sources, publish them, spawn FFmpeg and watch it for stalls, and when it
//! exits run the teardown broadcast in order: every viewer hung up, then the
//! sources closed, then the ports are free.

mod ended;
pub(crate) mod push;
mod record;
pub(crate) mod registry;
pub(crate) mod restart;
mod run;
mod sources;
mod watchdog;

pub(crate) use ended::{Ended, judge};

use crate::exit::Failure;
use crate::ffmpeg::args::LegPorts;
use crate::ffmpeg::supervisor::StopControl;
use crate::hooks::Hooks;
use crate::hooks::event::Event;
use crate::profile::Plan;
use crate::profile::hooks::EventKind;
use registry::Guard;
use registry::{State, Streams};
use restart::{Backoff, Decision, RunEnd};
use std::ffi::OsString;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::Instrument;

/// What a stream needs to run.
pub(crate) struct StreamRun {
    pub plan: Plan,
    pub ffmpeg: OsString,
    pub streams: Arc<Streams>,
    /// Stops the stream: the running FFmpeg, or the wait for the next run.
    pub ctl: StopControl,
    /// Who may watch (the profile's token resolved, or its service).
    pub guard: Guard,
    /// Where the stream is pushed over WHIP.
    pub pushes: Vec<Arc<push::Push>>,
}

/// Runs the stream until it ends for good. `ready` is called after each
/// spawn of FFmpeg, with the run number and the port pair.
pub(crate) async fn run(run: StreamRun, ready: impl Fn(u32, LegPorts)) -> Result<Ended, Failure> {
    let id = run.plan.id.to_string();
    let hooks = Arc::new(Hooks::start(&id, &run.plan.hooks));
    run.streams
        .declare(&id, run.guard.clone(), run.plan.max_viewers, hooks.clone());
    run.streams.set_pushes(&id, run.pushes.clone());
    let ended = runs(&run, &id, &ready).await;
    hooks.finish().await;
    ended
}

/// The runs of the stream, one after another, as the restart policy says.
async fn runs(run: &StreamRun, id: &str, ready: &impl Fn(u32, LegPorts)) -> Result<Ended, Failure> {
    let mut backoff = Backoff::new(run.plan.restart.clone());
    let mut number = 0;
    let ended = loop {
        number += 1;
        let started = Instant::now();
        let span = tracing::info_span!("run", run = number);
        let (exit, stalled) = match run::one_run(run, id, number, ready).instrument(span).await {
            Ok(r) => r,
            Err(f) => {
                run.streams.finish(id, State::Failed);
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
        run.streams.tell(
            id,
            Event {
                run: Some(number),
                attempt: Some(attempt),
                delay_ms: Some(delay.as_millis() as u64),
                ..Event::new(EventKind::Restart, id)
            },
        );
        run.streams
            .wait_for_restart(id, std::time::Instant::now() + delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = run.ctl.stop.cancelled() => break Ended::Stopped,
        }
    };
    let failed = ended.failed(run.ctl.stop.is_cancelled());
    run.streams.finish(
        id,
        if failed {
            State::Failed
        } else {
            State::Stopped
        },
    );
    Ok(ended)
}
