//! Every failure ffwhep reports and the exit code it maps to, and how the
//! outcomes of several streams make one code: wrappers (cron, systemd, CI)
//! act on it. How a stream's ending becomes an outcome is `stream::ended`.

use crate::ffmpeg::supervisor::SpawnError;
use crate::profile::ProfileError;
use crate::source::ports::AllocError;

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
    /// `ffwhep smoke`: the stream ran but the expected media did not arrive.
    pub const SMOKE_FAILED: u8 = 6;
    /// Stopped by a signal: 128 + the signal number (130 SIGINT, 143 SIGTERM).
    pub const SIGNAL_BASE: u8 = 128;
}

/// A run that did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A command line that cannot work (exit code 2, like a bad profile).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    FfmpegNotFound(#[from] SpawnError),
    #[error(transparent)]
    Ports(#[from] AllocError),
    #[error("{0}")]
    Ffmpeg(String),
    #[error("{0:#}")]
    Setup(anyhow::Error),
    #[error("smoke check failed: {0}")]
    Smoke(String),
    /// A bug: the stream's task panicked. It was stopped; others go on.
    #[error("internal error (a panic): {0}; the stream was stopped")]
    Panicked(String),
    /// Several streams failed: each with its id. The code is the worst one's.
    #[error("{}", .0.iter().map(|(id, f)| format!("stream {id}: {f}")).collect::<Vec<_>>().join("\nerror: "))]
    Several(Vec<(String, Failure)>),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Profile(_) | Failure::Usage(_) => code::USAGE,
            Failure::FfmpegNotFound(_) => code::FFMPEG_NOT_FOUND,
            Failure::Ports(_) => code::PORTS,
            Failure::Ffmpeg(_) | Failure::Panicked(_) => code::FFMPEG_FAILED,
            Failure::Setup(_) => code::SETUP,
            Failure::Smoke(_) => code::SMOKE_FAILED,
            Failure::Several(list) => list
                .iter()
                .map(|(_, f)| f.code())
                .max_by_key(|c| severity(*c))
                .unwrap_or(code::OK),
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

/// Why ffwhep asked its streams to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM (the number).
    Signal(i32),
    /// `--duration` ran out: a clean end.
    Duration,
}

impl StopReason {
    pub fn code(self) -> u8 {
        match self {
            StopReason::Signal(sig) => code::SIGNAL_BASE + u8::try_from(sig).unwrap_or(0),
            StopReason::Duration => code::OK,
        }
    }
}

/// One exit for several streams: the worst outcome decides the code; every
/// failure is reported.
pub fn worst(outcomes: Vec<(String, Result<u8, Failure>)>) -> Result<u8, Failure> {
    let single = outcomes.len() == 1;
    let mut best_ok = code::OK;
    let mut failures = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Ok(c) if severity(c) > severity(best_ok) => best_ok = c,
            Ok(_) => {}
            Err(f) => failures.push((id, f)),
        }
    }
    match failures.len() {
        0 => Ok(best_ok),
        1 if single => Err(failures.pop().map(|(_, f)| f).expect("one failure")),
        _ => Err(Failure::Several(failures)),
    }
}

/// Orders exit codes from best to worst, for a process that ran several
/// streams: clean, then stopped by a signal, then failures.
pub fn severity(code: u8) -> u16 {
    match code {
        code::OK => 0,
        c if c >= code::SIGNAL_BASE => 1,
        c => 2 + u16::from(c),
    }
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

    #[test]
    fn each_failure_has_its_code() {
        let ports = AllocError {
            count: "two",
            attempts: 10,
            last: std::io::Error::other("taken"),
        };
        assert_eq!(Failure::Ports(ports).code(), code::PORTS);
        let nf = SpawnError::NotFound {
            program: "ffmpeg".into(),
        };
        assert_eq!(Failure::FfmpegNotFound(nf).code(), code::FFMPEG_NOT_FOUND);
        assert_eq!(Failure::Smoke("x".into()).code(), code::SMOKE_FAILED);
        assert_eq!(Failure::Usage("x".into()).code(), code::USAGE);
        assert_eq!(Failure::Setup(anyhow::anyhow!("x")).code(), code::SETUP);
        let several = Failure::Several(vec![
            ("a".into(), Failure::Smoke("x".into())),
            ("b".into(), Failure::Ffmpeg("y".into())),
        ]);
        assert_eq!(several.code(), code::SMOKE_FAILED, "the worst code wins");
        assert!(
            several
                .to_string()
                .contains("stream a: smoke check failed: x\nerror: stream b: y")
        );
    }

    #[test]
    fn severity_ranks_failures_over_signals_over_clean() {
        assert!(severity(0) < severity(130));
        assert!(severity(143) < severity(1));
        assert!(severity(1) < severity(3));
    }
}
