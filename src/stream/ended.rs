//! How a stream ended, and the exit code each ending maps to (the codes
//! themselves are in `exit`).

use crate::exit::{Failure, StopReason, code, signal_name};
use crate::ffmpeg::supervisor::Exit;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

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

/// How an ended stream maps to an exit code: `Ok` with the code for a clean
/// end or a requested stop, `Err` for a failure to report.
pub(crate) fn judge(ended: &Ended, stop: Option<StopReason>) -> Result<u8, Failure> {
    if !ended.failed(stop.is_some()) {
        return Ok(stop.map_or(code::OK, StopReason::code));
    }
    match ended {
        Ended::Exhausted {
            exit,
            stalled,
            restarts,
            window,
        } => {
            let gave_up = format!(
                "restarts exhausted ({restarts} within {} s)",
                window.as_secs()
            );
            Err(Failure::Ffmpeg(describe(
                exit,
                stalled.as_deref(),
                Some(&gave_up),
            )))
        }
        Ended::Exited { exit, stalled } => {
            Err(Failure::Ffmpeg(describe(exit, stalled.as_deref(), None)))
        }
        Ended::Stopped => Ok(stop.map_or(code::OK, StopReason::code)),
    }
}

/// What happened to FFmpeg, with its last lines.
fn describe(exit: &Exit, stalled: Option<&str>, prefix: Option<&str>) -> String {
    let how = match (exit.status.code(), exit.status.signal()) {
        (Some(c), _) => format!("FFmpeg exited with status {c}"),
        (None, Some(s)) => format!("FFmpeg was killed by signal {s} ({})", signal_name(s)),
        _ => format!("FFmpeg ended: {}", exit.status),
    };
    let mut msg = String::new();
    if let Some(p) = prefix {
        msg.push_str(p);
        msg.push_str("; last run: ");
    }
    if let Some(why) = stalled {
        msg.push_str(&format!("FFmpeg stalled ({why}) and was stopped; "));
    }
    msg.push_str(&how);
    if !exit.tail.is_empty() {
        msg.push_str("; its last lines:");
        for line in &exit.tail {
            msg.push_str("\n    ");
            msg.push_str(line);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::ExitStatus;

    fn exited(raw: i32, stopped: bool) -> Ended {
        let exit = Exit {
            status: ExitStatus::from_raw(raw),
            stopped,
            tail: vec!["[error] boom".into()],
        };
        Ended::Exited {
            exit,
            stalled: None,
        }
    }

    #[test]
    fn clean_exit_is_zero() {
        assert_eq!(judge(&exited(0, false), None).unwrap(), code::OK);
    }

    #[test]
    fn failure_carries_status_and_tail() {
        let f = judge(&exited(1 << 8, false), None).unwrap_err();
        assert_eq!(f.code(), code::FFMPEG_FAILED);
        let msg = f.to_string();
        assert!(
            msg.contains("status 1") && msg.contains("[error] boom"),
            "{msg}"
        );
    }

    #[test]
    fn killed_ffmpeg_is_a_failure() {
        let f = judge(&exited(libc::SIGKILL, false), None).unwrap_err();
        assert!(
            f.to_string().contains("killed by signal 9 (SIGKILL)"),
            "{f}"
        );
    }

    #[test]
    fn stop_by_signal_is_128_plus_signal_and_duration_is_clean() {
        // FFmpeg exits 255 after SIGINT: still a stop, not a failure.
        let sigterm = Some(StopReason::Signal(libc::SIGTERM));
        assert_eq!(judge(&exited(255 << 8, true), sigterm).unwrap(), 143);
        assert_eq!(
            judge(&exited(0, true), Some(StopReason::Signal(libc::SIGINT))).unwrap(),
            130
        );
        assert_eq!(
            judge(&exited(255 << 8, true), Some(StopReason::Duration)).unwrap(),
            0
        );
        assert_eq!(judge(&Ended::Stopped, sigterm).unwrap(), 143);
    }

    #[test]
    fn stall_and_exhaustion_are_failures_that_say_so() {
        let exit = Exit {
            status: ExitStatus::from_raw(255 << 8),
            stopped: true,
            tail: vec![],
        };
        let stalled = Ended::Exited {
            exit,
            stalled: Some("no RTP on the video source for 5 s".into()),
        };
        let msg = judge(&stalled, None).unwrap_err().to_string();
        assert!(
            msg.contains("FFmpeg stalled (no RTP on the video source for 5 s)"),
            "{msg}"
        );
        let exit = Exit {
            status: ExitStatus::from_raw(1 << 8),
            stopped: false,
            tail: vec![],
        };
        let gave_up = Ended::Exhausted {
            exit,
            stalled: None,
            restarts: 3,
            window: Duration::from_secs(60),
        };
        let f = judge(&gave_up, None).unwrap_err();
        assert_eq!(f.code(), code::FFMPEG_FAILED);
        assert!(
            f.to_string().starts_with(
                "restarts exhausted (3 within 60 s); last run: FFmpeg exited with status 1"
            ),
            "{f}"
        );
    }
}
