//! A stream's event hooks: each hook has a bounded queue of events and at
//! most its `concurrency` runs at once. Telling an event never waits: a full
//! queue drops it and counts the drop, so hooks cannot slow the stream. A
//! hook that fails or times out is logged and counted, never fatal. When the
//! stream ends, what is queued gets the hooks' longest timeout to finish.

mod action;
pub(crate) mod event;

use crate::outbound::Outbound;
use crate::profile::hooks::{EventKind, HookConfig};
use action::{Origin, Outcome};
use event::Event;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a stream's hooks did, for /status and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HookCounts {
    /// Events queued for a hook (one per hook that takes the event).
    pub queued: u64,
    /// Events dropped: the hook's queue was full, or the stream ended first.
    pub dropped: u64,
    /// Runs that succeeded, failed, or were killed at their timeout.
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Runs going on now.
    pub running: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    running: AtomicU64,
}

/// The queue into one hook, and the events it takes.
struct Inlet {
    events: Vec<EventKind>,
    queue: mpsc::Sender<Arc<Event>>,
}

/// The hooks of one stream.
pub struct Hooks {
    stream: String,
    /// `None` once the stream has ended: later events are not told.
    inlets: Mutex<Option<Vec<Inlet>>>,
    counters: Arc<Counters>,
    tasks: TaskTracker,
    /// Cancelled when the time to finish is up: queued events are dropped,
    /// runs killed.
    cancel: CancellationToken,
    /// The longest timeout of the stream's hooks.
    longest: Duration,
    count: usize,
}

impl Default for Hooks {
    fn default() -> Self {
        Self::start("", &[])
    }
}

impl Hooks {
    /// Starts a worker per hook (none without hooks).
    pub fn start(stream: &str, configs: &[HookConfig]) -> Self {
        let counters = Arc::new(Counters::default());
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let urls: Vec<&str> = configs.iter().filter_map(|c| c.url.as_deref()).collect();
        let client = (!urls.is_empty()).then(|| Outbound::for_urls(urls));
        let inlets = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                let (tx, rx) = mpsc::channel(config.queue);
                let worker = Worker {
                    stream: stream.to_owned(),
                    index,
                    config: Arc::new(config.clone()),
                    counters: counters.clone(),
                    cancel: cancel.clone(),
                    tasks: tasks.clone(),
                    client: client.clone(),
                };
                tasks.spawn(worker.serve(rx));
                Inlet {
                    events: config.events.clone(),
                    queue: tx,
                }
            })
            .collect();
        Self {
            stream: stream.to_owned(),
            inlets: Mutex::new(Some(inlets)),
            counters,
            tasks,
            cancel,
            longest: configs.iter().map(|c| c.timeout).max().unwrap_or_default(),
            count: configs.len(),
        }
    }

    /// Whether the stream has any hooks.
    pub fn any(&self) -> bool {
        self.count > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Inlet>>> {
        // Only whole-value swaps and sends happen under it.
        self.inlets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every hook that takes it about `event`, without waiting.
    pub fn tell(&self, event: Event) {
        let inlets = self.lock();
        let Some(inlets) = inlets.as_ref() else {
            return;
        };
        let event = Arc::new(event);
        for inlet in inlets.iter().filter(|i| i.events.contains(&event.kind)) {
            match inlet.queue.try_send(event.clone()) {
                Ok(()) => self.counters.queued.fetch_add(1, Relaxed),
                Err(_) => {
                    // The first drop, then every hundredth: a flood of
                    // events is not a flood of log lines.
                    let dropped = self.counters.dropped.fetch_add(1, Relaxed) + 1;
                    if dropped == 1 || dropped.is_multiple_of(100) {
                        tracing::warn!(stream = %self.stream, event = event.kind.name(), dropped, "hook queue full: event dropped");
                    }
                    dropped
                }
            };
        }
    }

    pub fn counts(&self) -> HookCounts {
        let c = &self.counters;
        HookCounts {
            queued: c.queued.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            ok: c.ok.load(Relaxed),
            failed: c.failed.load(Relaxed),
            timed_out: c.timed_out.load(Relaxed),
            running: c.running.load(Relaxed),
        }
    }

    /// The stream has ended: no more events; what is queued or running gets
    /// the longest hook timeout to finish, then is dropped or killed.
    pub async fn finish(&self) {
        if self.lock().take().is_none() {
            return;
        }
        self.tasks.close();
        if tokio::time::timeout(self.longest, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(stream = %self.stream, "hooks still busy when the stream ended: the rest dropped");
            self.cancel.cancel();
            self.tasks.wait().await;
        }
    }
}

/// Runs one hook's queue.
struct Worker {
    stream: String,
    index: usize,
    config: Arc<HookConfig>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Makes the POSTs (made when a hook has a URL).
    client: Option<Outbound>,
}

impl Worker {
    async fn serve(self, mut queue: mpsc::Receiver<Arc<Event>>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let me = Arc::new(self);
        loop {
            let next = async {
                // The semaphore is never closed.
                let slot = slots.clone().acquire_owned().await.ok()?;
                Some((slot, queue.recv().await?))
            };
            let (slot, event) = tokio::select! {
                n = next => match n {
                    Some(n) => n,
                    None => break,
                },
                _ = me.cancel.cancelled() => break,
            };
            let worker = me.clone();
            me.tasks.spawn(async move {
                worker.run(&event).await;
                drop(slot);
            });
        }
        queue.close();
        while queue.try_recv().is_ok() {
            me.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// One event: the command and the POST, side by side.
    async fn run(&self, event: &Event) {
        let at = Origin {
            stream: &self.stream,
            hook: self.index,
            event: event.kind.name(),
        };
        let timeout = self.config.timeout;
        let command = async {
            if let Some(argv) = &self.config.command {
                let started = Instant::now();
                let outcome = action::command(argv, event, timeout, at).await;
                self.record("command", outcome, started, at);
            }
        };
        let post = async {
            if let (Some(url), Some(client)) = (&self.config.url, &self.client) {
                let started = Instant::now();
                let outcome = action::post(client, url, event, timeout).await;
                self.record("post", outcome, started, at);
            }
        };
        self.counters.running.fetch_add(1, Relaxed);
        tokio::select! {
            _ = async { tokio::join!(command, post) } => {}
            _ = self.cancel.cancelled() => {
                tracing::warn!(stream = at.stream, hook = at.hook, event = at.event, "hook killed: the stream ended");
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
        self.counters.running.fetch_sub(1, Relaxed);
    }

    fn record(&self, action: &'static str, outcome: Outcome, started: Instant, at: Origin<'_>) {
        let ms = started.elapsed().as_millis() as u64;
        let (stream, hook, event) = (at.stream, at.hook, at.event);
        match outcome {
            Outcome::Ok => {
                self.counters.ok.fetch_add(1, Relaxed);
                tracing::info!(stream, hook, event, action, ms, "hook ran");
            }
            Outcome::Failed(why) => {
                self.counters.failed.fetch_add(1, Relaxed);
                tracing::warn!(stream, hook, event, action, ms, "hook failed: {why}");
            }
            Outcome::TimedOut => {
                self.counters.timed_out.fetch_add(1, Relaxed);
                let limit_ms = self.config.timeout.as_millis() as u64;
                tracing::warn!(
                    stream,
                    hook,
                    event,
                    action,
                    ms,
                    limit_ms,
                    "hook timed out: killed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(argv: &[&str], timeout_ms: u64) -> HookConfig {
        HookConfig {
            events: vec![EventKind::Ready],
            command: Some(argv.iter().map(|s| (*s).to_owned()).collect()),
            url: None,
            timeout: Duration::from_millis(timeout_ms),
            concurrency: 1,
            queue: 10,
        }
    }

    #[tokio::test]
    async fn what_is_queued_when_the_stream_ends_still_runs() {
        let hooks = Hooks::start("s", &[hook(&["true"], 10_000)]);
        for _ in 0..3 {
            hooks.tell(Event::new(EventKind::Ready, "s"));
        }
        // Not taken by this hook: not queued.
        hooks.tell(Event::new(EventKind::Exit, "s"));
        hooks.finish().await;
        let c = hooks.counts();
        assert_eq!(
            (c.queued, c.ok, c.dropped, c.running),
            (3, 3, 0, 0),
            "{c:?}"
        );
        // Ended: later events are not told.
        hooks.tell(Event::new(EventKind::Ready, "s"));
        assert_eq!(hooks.counts().queued, 3);
    }

    #[tokio::test]
    async fn at_the_end_a_stuck_hook_gets_its_timeout_then_the_rest_is_dropped() {
        let hooks = Hooks::start("s", &[hook(&["sleep", "600"], 300)]);
        for _ in 0..3 {
            hooks.tell(Event::new(EventKind::Ready, "s"));
        }
        hooks.finish().await;
        let c = hooks.counts();
        assert_eq!(c.queued, 3, "{c:?}");
        assert_eq!(c.ok, 0, "{c:?}");
        assert_eq!(c.timed_out + c.failed + c.dropped, 3, "{c:?}");
        assert!(c.dropped >= 1, "{c:?}");
        assert_eq!(c.running, 0, "{c:?}");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let mut config = hook(&["sleep", "600"], 600_000);
        config.queue = 1;
        let hooks = Hooks::start("s", &[config]);
        for _ in 0..5 {
            hooks.tell(Event::new(EventKind::Ready, "s"));
        }
        let c = hooks.counts();
        assert_eq!(c.queued + c.dropped, 5, "{c:?}");
        // One run and one waiting at most.
        assert!(c.queued <= 2 && c.dropped >= 3, "{c:?}");
        hooks.cancel.cancel();
        hooks.finish().await;
    }
}
