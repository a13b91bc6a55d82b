//! The `hooks:` section: what to run, or where to POST, when something
//! happens to a stream (its media is ready, a viewer joins or leaves, FFmpeg
//! exits, a restart is scheduled). Plain data.

use super::access::service_url;
use super::restart::Secs;
use serde::Deserialize;
use std::time::Duration;

/// How long a hook may take when the profile does not say.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Events a hook holds while it is busy, when the profile does not say.
pub const DEFAULT_HOOK_QUEUE: usize = 256;

/// Something that happened to a stream, as hooks subscribe to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run's media is live: FFmpeg progresses and every leg has RTP.
    Ready,
    ViewerJoin,
    ViewerLeave,
    /// FFmpeg exited (any run).
    Exit,
    /// FFmpeg will be started again after a delay.
    Restart,
    /// A WHIP push changed state (connecting, connected, retrying, ...).
    PushState,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Ready,
        EventKind::ViewerJoin,
        EventKind::ViewerLeave,
        EventKind::Exit,
        EventKind::Restart,
        EventKind::PushState,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Ready => "ready",
            EventKind::ViewerJoin => "viewer_join",
            EventKind::ViewerLeave => "viewer_leave",
            EventKind::Exit => "exit",
            EventKind::Restart => "restart",
            EventKind::PushState => "push_state",
        }
    }
}

/// One entry of `hooks:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// The events it runs for.
    pub events: Vec<EventKind>,
    /// A program and its arguments (no shell), run with the event in its
    /// environment.
    pub command: Option<Vec<String>>,
    /// A URL the event is POSTed to as JSON.
    pub url: Option<String>,
    /// The longest one run (command or POST) may take; then it is killed.
    pub timeout: Duration,
    /// Runs of this hook at once; events beyond wait in its queue.
    pub concurrency: usize,
    /// Events waiting for this hook; when full, an event is dropped (counted).
    pub queue: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    events: Option<Vec<EventKind>>,
    command: Option<Vec<String>>,
    url: Option<String>,
    timeout: Option<Secs>,
    concurrency: Option<usize>,
    queue: Option<usize>,
}

impl<'de> Deserialize<'de> for HookConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked_section::<D, RawHook, Self>(d)
    }
}

impl TryFrom<RawHook> for HookConfig {
    type Error = String;

    fn try_from(h: RawHook) -> Result<Self, String> {
        if h.command.is_none() && h.url.is_none() {
            return Err("expected a command, a url, or both".into());
        }
        if let Some(argv) = &h.command
            && argv.first().is_none_or(|p| p.trim().is_empty())
        {
            return Err("command: expected a program and its arguments, e.g. \
                        [/usr/local/bin/notify, --quiet]"
                .into());
        }
        let url = h
            .url
            .as_deref()
            .map(|u| service_url("url", u))
            .transpose()?;
        let mut events = h.events.unwrap_or_else(|| EventKind::ALL.to_vec());
        if events.is_empty() {
            return Err("events: empty list; leave it out for every event".into());
        }
        events.dedup();
        let timeout = match h.timeout {
            None => DEFAULT_HOOK_TIMEOUT,
            Some(Secs(d)) if d.is_zero() || d > Duration::from_secs(600) => {
                return Err(format!("timeout {d:?}: expected above 0 and at most 600 s"));
            }
            Some(Secs(d)) => d,
        };
        let concurrency = h.concurrency.unwrap_or(1);
        if !(1..=64).contains(&concurrency) {
            return Err(format!("concurrency {concurrency}: expected 1 to 64"));
        }
        let queue = h.queue.unwrap_or(DEFAULT_HOOK_QUEUE);
        if !(1..=65_536).contains(&queue) {
            return Err(format!("queue {queue}: expected 1 to 65536"));
        }
        Ok(Self {
            events,
            command: h.command,
            url,
            timeout,
            concurrency,
            queue,
        })
    }
}
