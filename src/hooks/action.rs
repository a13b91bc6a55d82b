//! One run of a hook's action for one event: a command (its own process
//! group, killed whole when it ends or times out; its output logged line by
//! line) or a POST of the event as JSON.

use super::event::Event;
use crate::outbound::{CallError, Outbound};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Output lines of one run logged at most, per stream (stdout, stderr).
const MAX_LOGGED_LINES: usize = 50;
/// The most of a line, or of a response body, that is logged.
const MAX_LOGGED_CHARS: usize = 500;

/// How one run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(String),
    TimedOut,
}

/// Where a run's log lines say they come from.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub hook: usize,
    pub event: &'static str,
}

/// Runs `argv` with the event in its environment, for at most `timeout`.
pub async fn command(argv: &[String], event: &Event, timeout: Duration, at: Origin<'_>) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Failed("no program".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(event.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot start {program:?}: {e}")),
    };
    // The child leads its own process group; whatever it started is in it.
    let group = GroupKill(AtomicI32::new(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0),
    ));
    let out = log_lines(child.stdout.take(), false, at);
    let err = log_lines(child.stderr.take(), true, at);
    let wait = async {
        let status = child.wait().await;
        // Its leftovers would hold the output pipes open: they go with it.
        group.kill();
        status
    };
    let run = async { tokio::join!(wait, out, err).0 };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(s)) if s.success() => Outcome::Ok,
        Ok(Ok(s)) => Outcome::Failed(format!("{program:?} exited with {s}")),
        Ok(Err(e)) => Outcome::Failed(format!("waiting for {program:?}: {e}")),
        // `group` is dropped here: the whole group is killed.
        Err(_) => Outcome::TimedOut,
    }
}

/// POSTs the event to `url`, for at most `timeout`; a 2xx answer is success.
pub async fn post(client: &Outbound, url: &str, event: &Event, timeout: Duration) -> Outcome {
    match client.post_json(url, event.json(), timeout).await {
        Err(CallError::Timeout(_)) => Outcome::TimedOut,
        Err(CallError::Failed(why)) => Outcome::Failed(why),
        Ok(a) if (200..300).contains(&a.status) => Outcome::Ok,
        Ok(a) => Outcome::Failed(format!(
            "{url} answered {}: {}",
            a.status,
            clip(a.body.trim())
        )),
    }
}

/// Kills a process group when dropped, or when asked (once; 0 is none).
struct GroupKill(AtomicI32);

impl GroupKill {
    fn kill(&self) {
        let pgid = self.0.swap(0, Relaxed);
        if pgid > 0 {
            // SAFETY: killpg takes plain integers; a group already gone is ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Logs what a run writes, line by line: stdout at info, stderr at warn.
async fn log_lines(pipe: Option<impl AsyncRead + Unpin>, stderr: bool, at: Origin<'_>) {
    let Some(pipe) = pipe else { return };
    let mut lines = BufReader::new(pipe).lines();
    let mut n = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        n += 1;
        if n > MAX_LOGGED_LINES {
            continue;
        }
        let line = clip(&line);
        if stderr {
            tracing::warn!(
                stream = at.stream,
                hook = at.hook,
                event = at.event,
                "hook stderr: {line}"
            );
        } else {
            tracing::info!(
                stream = at.stream,
                hook = at.hook,
                event = at.event,
                "hook stdout: {line}"
            );
        }
    }
    if n > MAX_LOGGED_LINES {
        tracing::info!(
            stream = at.stream,
            hook = at.hook,
            event = at.event,
            stderr,
            lines = n - MAX_LOGGED_LINES,
            "hook output: more lines not logged"
        );
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_LOGGED_CHARS) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
