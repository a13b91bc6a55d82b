//! Spawning FFmpeg and seeing it through to its exit: its output lines go to
//! tracing at their own severity, the last ones are kept for error reports,
//! and a stop request becomes SIGINT, then SIGKILL after a grace period.
//!
//! Knows nothing of WebRTC, HTTP or ports.

use super::lines::{LineSplitter, Severity};
use super::progress::{Line as ProgressLine, Progress, ProgressParser};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::watch;
use tokio_process_stream::{Item, ProcessChunkStream};
use tokio_util::sync::CancellationToken;

/// How many of FFmpeg's last lines are kept for the error report.
pub const TAIL_LINES: usize = 20;

/// FFmpeg could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "FFmpeg not found: {program:?} is not an executable on PATH or at that path \
             (install it, e.g. `apt-get install -y ffmpeg`, or pass --ffmpeg PATH / set FFWHEP_FFMPEG)"
    )]
    NotFound { program: OsString },
    #[error("cannot start FFmpeg ({program:?}): {source}")]
    Other {
        program: OsString,
        source: io::Error,
    },
}

/// How a run of FFmpeg ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// True when the exit followed a stop request from ffwhep.
    pub stopped: bool,
    /// FFmpeg's last lines, oldest first.
    pub tail: Vec<String>,
}

/// A running FFmpeg.
pub struct Ffmpeg {
    stream: ProcessChunkStream,
    pid: Option<u32>,
    tail: VecDeque<String>,
    stdout: LineSplitter,
    stderr: LineSplitter,
    progress: ProgressParser,
}

/// How a run is asked to stop.
#[derive(Clone)]
pub struct StopControl {
    /// Fires to ask FFmpeg to finish (SIGINT).
    pub stop: CancellationToken,
    /// Fires to kill FFmpeg at once (SIGKILL), e.g. on a second signal.
    pub kill_now: CancellationToken,
    /// How long FFmpeg has after SIGINT before SIGKILL.
    pub grace: Duration,
}

impl StopControl {
    pub fn new(grace: Duration) -> Self {
        Self {
            stop: CancellationToken::new(),
            kill_now: CancellationToken::new(),
            grace,
        }
    }
}

impl Ffmpeg {
    /// Spawns `program argv`: stdin closed, stdout and stderr piped, killed
    /// if ffwhep dies (parent-death signal) or drops it.
    pub fn spawn(program: &OsString, argv: &[String]) -> Result<Self, SpawnError> {
        let mut cmd = Command::new(program);
        cmd.args(argv)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        set_parent_death_signal(&mut cmd);
        let stream = ProcessChunkStream::try_from(cmd).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                SpawnError::NotFound {
                    program: program.clone(),
                }
            } else {
                SpawnError::Other {
                    program: program.clone(),
                    source,
                }
            }
        })?;
        let pid = stream.child().and_then(|c| c.id());
        Ok(Self {
            stream,
            pid,
            tail: VecDeque::with_capacity(TAIL_LINES),
            stdout: LineSplitter::default(),
            stderr: LineSplitter::default(),
            progress: ProgressParser::default(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Relays FFmpeg's output until it exits, publishing progress reports
    /// on `progress`. When `ctl.stop` fires FFmpeg gets SIGINT, and SIGKILL
    /// once `ctl.grace` has passed or `ctl.kill_now` fires.
    pub async fn wait(
        mut self,
        ctl: StopControl,
        progress: watch::Sender<Option<Progress>>,
    ) -> io::Result<Exit> {
        let mut stopped = false;
        let mut killed = false;
        let kill_at = tokio::time::sleep(Duration::MAX);
        tokio::pin!(kill_at);
        loop {
            tokio::select! {
                item = self.stream.next() => match item {
                    Some(Item::Stdout(chunk)) => self.take_chunk(chunk, false, &progress),
                    Some(Item::Stderr(chunk)) => self.take_chunk(chunk, true, &progress),
                    Some(Item::Done(status)) => {
                        self.flush(&progress);
                        let tail = self.tail.into_iter().collect();
                        return status.map(|status| Exit { status, stopped, tail });
                    }
                    None => return Err(io::Error::other("FFmpeg's output ended without an exit status")),
                },
                _ = ctl.stop.cancelled(), if !stopped => {
                    stopped = true;
                    tracing::info!(pid = self.pid, grace_ms = ctl.grace.as_millis() as u64, "asking FFmpeg to stop (SIGINT)");
                    self.signal(libc::SIGINT);
                    kill_at.as_mut().reset(tokio::time::Instant::now() + ctl.grace);
                },
                _ = &mut kill_at, if stopped && !killed => {
                    killed = true;
                    tracing::warn!(pid = self.pid, "FFmpeg did not stop within the grace period: SIGKILL");
                    self.signal(libc::SIGKILL);
                },
                _ = ctl.kill_now.cancelled(), if !killed => {
                    killed = true;
                    stopped = true;
                    tracing::warn!(pid = self.pid, "stopping FFmpeg at once: SIGKILL");
                    self.signal(libc::SIGKILL);
                },
            }
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        let Some(pid) = self.pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        // The child has not been reaped yet (its Done item is still to come),
        // so the pid still names it.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }

    fn take_chunk(
        &mut self,
        chunk: Bytes,
        stderr: bool,
        progress: &watch::Sender<Option<Progress>>,
    ) {
        let splitter = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        let mut lines = Vec::new();
        splitter.push(&chunk, |l| lines.push(l));
        for line in lines {
            self.emit(line, stderr, progress);
        }
    }

    fn flush(&mut self, progress: &watch::Sender<Option<Progress>>) {
        let mut lines = Vec::new();
        self.stdout.finish(|l| lines.push((l, false)));
        self.stderr.finish(|l| lines.push((l, true)));
        for (line, stderr) in lines {
            self.emit(line, stderr, progress);
        }
    }

    fn emit(&mut self, line: String, stderr: bool, progress: &watch::Sender<Option<Progress>>) {
        if line.trim().is_empty() {
            return;
        }
        if !stderr {
            match self.progress.line(&line) {
                ProgressLine::Key => return,
                ProgressLine::Report(p) => {
                    progress.send_replace(Some(p));
                    return;
                }
                ProgressLine::Other => {}
            }
        }
        log_line(&line, stderr);
        #[cfg(debug_assertions)]
        injected_panic(&line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// Debug builds only: a line of FFmpeg's that contains the text of
/// `FFWHEP_DEBUG_PANIC_ON` panics the stream that read it, so tests can
/// check that a panic stays within its stream.
#[cfg(debug_assertions)]
fn injected_panic(line: &str) {
    static MARK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let mark = MARK.get_or_init(|| {
        std::env::var("FFWHEP_DEBUG_PANIC_ON")
            .ok()
            .filter(|m| !m.is_empty())
    });
    if let Some(m) = mark
        && line.contains(m.as_str())
    {
        panic!("injected panic: FFmpeg printed {m:?}");
    }
}

/// Logs one FFmpeg line at the severity its `[level]` tag gives.
fn log_line(line: &str, stderr: bool) {
    let severity = if stderr {
        Severity::of(line)
    } else {
        Severity::Debug
    };
    match severity {
        Severity::Error => tracing::error!(target: "ffmpeg", "{line}"),
        Severity::Warn => tracing::warn!(target: "ffmpeg", "{line}"),
        Severity::Info => tracing::info!(target: "ffmpeg", "{line}"),
        Severity::Debug => tracing::debug!(target: "ffmpeg", "{line}"),
        Severity::Trace => tracing::trace!(target: "ffmpeg", "{line}"),
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let err = Ffmpeg::spawn(&"/nonexistent/ffmpeg".into(), &[])
            .err()
            .unwrap();
        assert!(matches!(err, SpawnError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("FFmpeg not found"));
    }

    #[tokio::test]
    async fn keeps_the_tail_and_the_exit_status() {
        let script = "for i in $(seq 1 30); do echo \"[error] line $i\" >&2; done; exit 3";
        let argv = vec!["-c".to_owned(), script.to_owned()];
        let ff = Ffmpeg::spawn(&"sh".into(), &argv).unwrap();
        let exit = ff
            .wait(
                StopControl::new(Duration::from_secs(5)),
                watch::channel(None).0,
            )
            .await
            .unwrap();
        assert_eq!(exit.status.code(), Some(3));
        assert!(!exit.stopped);
        assert_eq!(exit.tail.len(), TAIL_LINES);
        assert_eq!(exit.tail.last().unwrap(), "[error] line 30");
    }

    #[tokio::test]
    async fn progress_lines_are_parsed_not_logged() {
        let script = "printf 'frame=5\\ntotal_size=100\\nprogress=continue\\nSDP:\\n'";
        let argv = vec!["-c".to_owned(), script.to_owned()];
        let ff = Ffmpeg::spawn(&"sh".into(), &argv).unwrap();
        let (tx, rx) = watch::channel(None);
        let exit = ff
            .wait(StopControl::new(Duration::from_secs(5)), tx)
            .await
            .unwrap();
        assert_eq!(rx.borrow().as_ref().map(|p| p.frame), Some(5));
        assert_eq!(
            exit.tail,
            ["SDP:"],
            "progress keys leaked into the log tail"
        );
    }

    /// A child that ignores SIGINT, and says so with a progress report once
    /// its trap is in place: the event a test waits for before stopping it.
    fn sigint_ignoring_child() -> Ffmpeg {
        let script = "trap '' INT; printf 'frame=1\\nprogress=continue\\n'; exec sleep 30";
        Ffmpeg::spawn(&"sh".into(), &["-c".to_owned(), script.to_owned()]).unwrap()
    }

    #[tokio::test]
    async fn kill_now_skips_the_grace() {
        let ff = sigint_ignoring_child();
        let ctl = StopControl::new(Duration::from_secs(3600));
        let (stop, kill) = (ctl.stop.clone(), ctl.kill_now.clone());
        let (tx, mut rx) = watch::channel(None);
        let exit = tokio::spawn(ff.wait(ctl, tx));
        rx.changed().await.unwrap();
        stop.cancel();
        kill.cancel();
        // Without kill_now this would wait out the hour's grace.
        let exit = exit.await.unwrap().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn stop_sends_sigint_then_sigkill() {
        // Ignores SIGINT, so only SIGKILL after the grace ends it.
        let ff = sigint_ignoring_child();
        let ctl = StopControl::new(Duration::from_millis(200));
        let later = ctl.stop.clone();
        let (tx, mut rx) = watch::channel(None);
        let exit = tokio::spawn(ff.wait(ctl, tx));
        rx.changed().await.unwrap();
        later.cancel();
        let exit = exit.await.unwrap().unwrap();
        assert!(exit.stopped);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    }
}
