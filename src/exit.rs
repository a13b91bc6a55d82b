//! How a run ends, and the exit code each ending maps to: decided here and
//! nowhere else, so wrappers (cron, systemd, CI) can act on it.

use crate::ffmpeg::supervisor::{Exit, SpawnError};
use crate::ports::AllocError;
use crate::profile::ProfileError;
use std::os::unix::process::ExitStatusExt;

/// Exit codes, as documented in README.md.
pub mod code {
    /// FFmpeg ended cleanly (e.g. a finite input ran out).
    pub const OK: u8 = 0;
    /// FFmpeg failed: a non-zero exit, or killed by a signal ffwhep did not send.
    pub const FFMPEG_FAILED: u8 = 1;
    /// Bad command line or profile.
    pub const USAGE: u8 = 2;
    /// FFmpeg could not be found or started.
    pub const FFMPEG_NOT_FOUND: u8 = 3;
    /// No adjacent UDP port pair could be bound.
    pub const PORTS: u8 = 4;
    /// Any other setup failure (e.g. the HTTP address is taken).
    pub const SETUP: u8 = 5;
    /// Stopped by a signal: 128 + the signal number (130 SIGINT, 143 SIGTERM).
    pub const SIGNAL_BASE: u8 = 128;
}

/// A run that did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    FfmpegNotFound(#[from] SpawnError),
    #[error(transparent)]
    Ports(#[from] AllocError),
    #[error("{0}")]
    Ffmpeg(String),
    #[error("{0:#}")]
    Setup(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Profile(_) => code::USAGE,
            Failure::FfmpegNotFound(_) => code::FFMPEG_NOT_FOUND,
            Failure::Ports(_) => code::PORTS,
            Failure::Ffmpeg(_) => code::FFMPEG_FAILED,
            Failure::Setup(_) => code::SETUP,
        }
    }

    /// A setup step that failed, with what it was doing.
    pub fn setup<E>(context: &'static str) -> impl FnOnce(E) -> Failure
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| Failure::Setup(anyhow::Error::new(e).context(context))
    }
}

/// How a finished run maps to an exit code: `Ok` with the code for a clean
/// end or a stop by signal, `Err` for a failure to report.
pub fn judge(exit: &Exit, stopped_by: Option<i32>) -> Result<u8, Failure> {
    if let Some(sig) = stopped_by.filter(|_| exit.stopped) {
        return Ok(code::SIGNAL_BASE + u8::try_from(sig).unwrap_or(0));
    }
    if exit.status.success() {
        return Ok(code::OK);
    }
    let how = match (exit.status.code(), exit.status.signal()) {
        (Some(c), _) => format!("FFmpeg exited with status {c}"),
        (None, Some(s)) => format!("FFmpeg was killed by signal {s} ({})", signal_name(s)),
        _ => format!("FFmpeg ended: {}", exit.status),
    };
    let mut msg = how;
    if !exit.tail.is_empty() {
        msg.push_str("; its last lines:");
        for line in &exit.tail {
            msg.push_str("\n    ");
            msg.push_str(line);
        }
    }
    Err(Failure::Ffmpeg(msg))
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::ExitStatus;

    fn exit(raw: i32, stopped: bool) -> Exit {
        Exit {
            status: ExitStatus::from_raw(raw),
            stopped,
            tail: vec!["[error] boom".into()],
        }
    }

    #[test]
    fn clean_exit_is_zero() {
        assert_eq!(judge(&exit(0, false), None).unwrap(), code::OK);
    }

    #[test]
    fn failure_carries_status_and_tail() {
        let f = judge(&exit(1 << 8, false), None).unwrap_err();
        assert_eq!(f.code(), code::FFMPEG_FAILED);
        let msg = f.to_string();
        assert!(
            msg.contains("status 1") && msg.contains("[error] boom"),
            "{msg}"
        );
    }

    #[test]
    fn killed_ffmpeg_is_a_failure() {
        let f = judge(&exit(libc::SIGKILL, false), None).unwrap_err();
        assert!(
            f.to_string().contains("killed by signal 9 (SIGKILL)"),
            "{f}"
        );
    }

    #[test]
    fn stop_by_signal_is_128_plus_signal() {
        // FFmpeg exits 255 after SIGINT: still a stop, not a failure.
        assert_eq!(
            judge(&exit(255 << 8, true), Some(libc::SIGTERM)).unwrap(),
            143
        );
        assert_eq!(judge(&exit(0, true), Some(libc::SIGINT)).unwrap(), 130);
    }
}
