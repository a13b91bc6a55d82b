//! One run of a hook's action for one event: a command (its own process
//! group, killed whole when it ends or times out; its output logged line by
//! line) or a POST of the event as JSON.

use super::event::Event;
use crate::outbound::{CallError, Outbound};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// The variables of ffwhep's environment a command gets (besides the
/// event's own).
const PASSED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];
/// Output lines of one run logged at most, per stream (stdout, stderr).
const MAX_LOGGED_LINES: usize = 50;
/// The most of an output line that is kept (what is logged is shorter).
const MAX_LINE_BYTES: usize = 4096;
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
    // Nothing of ffwhep's own environment (its tokens among it) but what
    // a program needs to run, and the event.
    let kept = PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
    cmd.args(args)
        .env_clear()
        .envs(kept)
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
            "{} answered {}: {}",
            crate::outbound::redact(url),
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
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut n = 0;
    while let Ok(true) = next_line(&mut reader, &mut line).await {
        n += 1;
        if n > MAX_LOGGED_LINES {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let line = clip(text.trim_end());
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

/// Reads the next line into `line` (at most `MAX_LINE_BYTES` of it kept,
/// the rest skipped: a line without end costs no memory); false at the end.
async fn next_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any);
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_LOGGED_CHARS) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_or_capped_and_never_fail_on_bytes() {
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let mut input = b"one\n\xff\xfe two\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast");
        let mut reader = BufReader::with_capacity(64, &input[..]);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        while next_line(&mut reader, &mut line).await.unwrap() {
            seen.push(line.clone());
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], b"one\n");
        assert_eq!(String::from_utf8_lossy(&seen[1]), "\u{fffd}\u{fffd} two\n");
        assert_eq!(seen[2].len(), MAX_LINE_BYTES, "a long line is capped");
        assert_eq!(seen[3], b"last");
    }
}
