//! Moving one kind of media from a source to one viewer, once its connection
//! is up: rewritten to the viewer's payload type, SSRC and own numbering.
//!
//! Video starts with the cached GOP (or waits for the next keyframe), and
//! when the viewer's queue overflowed it resyncs the same way: a whole frame
//! or more is skipped, never part of one. A viewer that keeps falling behind
//! is hung up. NACKs are answered from the source's shared history; a
//! keyframe request (PLI/FIR) is answered from the GOP cache, at most once
//! every [`ForwardPolicy::keyframe_answer_every`].

use super::counters::ViewerCounters;
use super::renumber::Renumber;
use crate::rtp::RtpPacket;
use crate::source::{DropCount, SourceHandle, Subscription};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Packets queued between a source and one viewer.
pub(crate) const VIEWER_QUEUE: usize = 512;

/// When a viewer is resynced, hung up, or answered from the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardPolicy {
    /// A viewer that needs more resyncs than this within `resync_window` is
    /// hung up: it cannot keep up.
    pub max_resyncs: usize,
    pub resync_window: Duration,
    /// Keyframe requests are answered from the cache at most this often.
    pub keyframe_answer_every: Duration,
}

impl Default for ForwardPolicy {
    fn default() -> Self {
        Self {
            max_resyncs: 3,
            resync_window: Duration::from_secs(10),
            keyframe_answer_every: Duration::from_secs(2),
        }
    }
}
/// A cached GOP goes out this many packets at a time...
const BACKLOG_BURST: usize = 16;
/// ...with this pause between (some 20 KB a millisecond).
const BACKLOG_PAUSE: Duration = Duration::from_millis(1);
/// 90 kHz ticks between a replayed GOP and what was sent before it.
const REPLAY_STEP: u32 = 3000;

/// What a viewer asks of its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// Retransmit these (viewer-numbered) sequence numbers.
    Nack(Vec<u16>),
    /// PLI or FIR: the viewer needs a keyframe.
    KeyframeRequest,
}

/// Where a forwarder's packets go: a viewer's track, or a test's stand-in.
#[async_trait::async_trait]
pub trait MediaSink: Send + Sync {
    async fn write(&self, packet: rtc::rtp::Packet) -> Result<(), String>;
    /// The next feedback from the viewer; `None` once there will be none.
    async fn feedback(&self) -> Option<Feedback>;
}

/// Moves one kind of media from a source to one viewer.
pub struct Forwarder {
    pub sink: Arc<dyn MediaSink>,
    pub source: SourceHandle,
    pub video: bool,
    pub pt: u8,
    pub ssrc: u32,
    pub cancel: CancellationToken,
    /// This viewer's counters.
    pub counters: Arc<ViewerCounters>,
    /// Where sampled packets' relay latency goes.
    pub latency: Arc<crate::latency::Histogram>,
    pub policy: ForwardPolicy,
}

enum Phase {
    Flowing,
    /// Skipping until a keyframe starts.
    WaitKey,
}

struct Run {
    numbers: Renumber,
    phase: Phase,
    resyncs: Vec<Instant>,
    last_key_answer: Option<Instant>,
    feedback_open: bool,
    /// A write to the viewer failed already (logged once).
    write_failed: bool,
}

impl Forwarder {
    /// Forwards until the viewer or the source ends.
    pub async fn run(self) {
        if let Some(sub) = self.subscribe().await {
            self.forward(sub).await;
        }
    }

    /// Forwards `sub` (this forwarder's subscription, taken with
    /// [`Forwarder::subscribe`]) until the viewer or the source ends.
    pub async fn forward(self, sub: Subscription) {
        let mut live = sub.live;
        let mut run = Run {
            numbers: Renumber::new(
                rand::random(),
                sub.backlog.first().map_or(0, |p| p.timestamp),
                rand::random(),
            ),
            phase: if self.video {
                Phase::WaitKey
            } else {
                Phase::Flowing
            },
            resyncs: Vec::new(),
            last_key_answer: None,
            feedback_open: true,
            write_failed: false,
        };
        if !self.send_backlog(&mut run, sub.backlog).await {
            return;
        }
        // Both kept across packets: making them anew for each packet cost
        // more than the forwarding itself.
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        let mut feedback = self.sink.feedback();
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                fb = &mut feedback, if run.feedback_open => {
                    feedback = self.sink.feedback();
                    match fb {
                        Some(f) => {
                            if let Some(new_live) = self.answer(&mut run, f).await {
                                live = new_live;
                            }
                        }
                        None => run.feedback_open = false,
                    }
                }
                p = live.recv() => {
                    let Some(p) = p else { break };
                    if let Some(new_live) = self.take(&mut run, p).await {
                        live = new_live;
                    }
                }
            }
        }
    }

    /// The cached GOP and a live queue from the source; `None` once it closed.
    pub async fn subscribe(&self) -> Option<Subscription> {
        let drops = vec![Arc::clone(&self.counters) as Arc<dyn DropCount>];
        self.source.subscribe(VIEWER_QUEUE, drops).await
    }

    /// Sends a cached GOP; false when the viewer is gone.
    async fn send_backlog(&self, run: &mut Run, backlog: Vec<RtpPacket>) -> bool {
        let Some(first) = backlog.first() else {
            return true;
        };
        run.numbers.rebase(first.timestamp, REPLAY_STEP);
        run.phase = Phase::Flowing;
        for (i, p) in backlog.iter().enumerate() {
            // Cached packets left the source long ago: not relay latency.
            self.send(run, p, false).await;
            // Paced, not all at once: a whole GOP in one burst overflows a
            // viewer's socket buffer. The keyframe goes first regardless.
            if (i + 1) % BACKLOG_BURST == 0 {
                tokio::time::sleep(BACKLOG_PAUSE).await;
                if self.cancel.is_cancelled() {
                    return false;
                }
            }
        }
        !self.cancel.is_cancelled()
    }

    /// Takes one live packet; returns a new live queue after a resync.
    async fn take(
        &self,
        run: &mut Run,
        p: RtpPacket,
    ) -> Option<tokio::sync::mpsc::Receiver<RtpPacket>> {
        if p.after_drop && self.video {
            // The source dropped packets for this viewer: part of a frame is
            // gone. (A gap from loss before the source is everyone's and is
            // passed on as it is.)
            return self.resync(run, "its queue overflowed").await;
        }
        if matches!(run.phase, Phase::WaitKey) {
            if !p.keyframe_start {
                return None;
            }
            run.numbers.rebase(p.timestamp, REPLAY_STEP);
            run.phase = Phase::Flowing;
        }
        self.send(run, &p, true).await;
        None
    }

    /// Starts this viewer again from the cached GOP, or from the next
    /// keyframe when there is none; hangs up a viewer that keeps needing it.
    async fn resync(
        &self,
        run: &mut Run,
        why: &str,
    ) -> Option<tokio::sync::mpsc::Receiver<RtpPacket>> {
        let now = Instant::now();
        let window = self.policy.resync_window;
        run.resyncs.retain(|t| now.duration_since(*t) < window);
        run.resyncs.push(now);
        self.count(|c| &c.resyncs, 1);
        if run.resyncs.len() > self.policy.max_resyncs {
            tracing::warn!(
                reason = why,
                resyncs = run.resyncs.len(),
                window_s = window.as_secs(),
                "viewer cannot keep up: hanging up"
            );
            self.cancel.cancel();
            return None;
        }
        tracing::debug!(reason = why, "resyncing viewer from the GOP cache");
        self.restart(run).await
    }

    /// Subscribes anew: the cached GOP (or, without one, the next keyframe),
    /// then a new live queue.
    async fn restart(&self, run: &mut Run) -> Option<tokio::sync::mpsc::Receiver<RtpPacket>> {
        let sub = self.subscribe().await?;
        run.phase = Phase::WaitKey;
        self.send_backlog(run, sub.backlog).await;
        Some(sub.live)
    }

    /// Answers feedback; returns a new live queue when it resynced.
    async fn answer(
        &self,
        run: &mut Run,
        f: Feedback,
    ) -> Option<tokio::sync::mpsc::Receiver<RtpPacket>> {
        match f {
            Feedback::Nack(seqs) => {
                self.count(|c| &c.nacks, seqs.len() as u64);
                for out_seq in seqs {
                    let Some((in_seq, out_ts)) = run.numbers.lookup(out_seq) else {
                        continue;
                    };
                    let Some(p) = self.source.history.get(in_seq) else {
                        continue;
                    };
                    if self
                        .sink
                        .write(self.packet(&p, out_seq, out_ts))
                        .await
                        .is_ok()
                    {
                        self.count(|c| &c.retransmitted, 1);
                    }
                }
                None
            }
            Feedback::KeyframeRequest => {
                self.count(|c| &c.keyframe_requests, 1);
                let now = Instant::now();
                let recent = run
                    .last_key_answer
                    .is_some_and(|t| now.duration_since(t) < self.policy.keyframe_answer_every);
                let cached = self.source.cache_state().is_some_and(|c| c.ready);
                if !self.video || recent || !cached {
                    return None;
                }
                run.last_key_answer = Some(now);
                // Not counted as falling behind: the viewer asked.
                self.restart(run).await
            }
        }
    }

    /// Sends one packet; `live` packets that were sampled add their relay
    /// latency.
    async fn send(&self, run: &mut Run, p: &RtpPacket, live: bool) {
        let (seq, ts) = run.numbers.next(p.sequence, p.timestamp);
        let bytes = p.data.len() as u64;
        match self.sink.write(self.packet(p, seq, ts)).await {
            Ok(()) => {
                self.count(|c| &c.packets_sent, 1);
                self.count(|c| &c.bytes_sent, bytes);
                if let Some(t) = p.received_at.filter(|_| live) {
                    self.latency.record(t.elapsed());
                }
            }
            Err(e) => {
                if !run.write_failed {
                    run.write_failed = true;
                    tracing::debug!(error = %e, "write to viewer failed");
                }
            }
        }
    }

    fn count(&self, field: impl Fn(&ViewerCounters) -> &std::sync::atomic::AtomicU64, n: u64) {
        field(&self.counters).fetch_add(n, Relaxed);
    }

    fn packet(&self, p: &RtpPacket, seq: u16, ts: u32) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: p.marker,
                payload_type: self.pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: p.payload(),
        }
    }
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
