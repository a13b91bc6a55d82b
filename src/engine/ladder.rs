//! One viewer's place on a video ladder: the rendition it is sent, a switch
//! waiting for the target rendition's keyframe, which rendition each sent
//! packet came from (so a NACK is answered from the right history), the
//! viewer's own choice (a pinned rung, or automatic by [`Adapt`]) and what
//! status shows of it. Pure: the track drives it with `now`.

use super::adapt::{Adapt, Step};
use super::counters::ViewerCounters;
use crate::source::SourceHandle;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Switches remembered for answering NACKs across them.
const SEGMENTS: usize = 8;

/// One rendition as a viewer's track sees it.
#[derive(Clone)]
pub(crate) struct RungOut {
    pub source: SourceHandle,
    /// Its feed in the shard.
    pub key: usize,
    pub name: String,
    pub bitrate: u64,
}

/// How the viewer's rendition is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Auto,
    Pinned(usize),
}

pub(crate) use crate::profile::ladder::SwitchAt;

/// A switch decided but not made yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub to: usize,
    pub reason: String,
    pub since: Instant,
    /// The current rung reached its own keyframe first, or the end of a
    /// frame when `stop_current`: it is not sent any more (with aligned
    /// GOPs the target's keyframe comes with the same frame).
    pub held: bool,
    /// The link carries well under the current rung: it stops at the end
    /// of the frame being sent rather than fill the link's queue (and
    /// overflow it into loss) while the target's keyframe is awaited.
    pub stop_current: bool,
    /// Made from the target's cached GOP rather than its next keyframe.
    pub from_cache: bool,
    /// Not made before this: a stopped rung's queue on the link drains
    /// first, so that the target's keyframe is not lost at its tail.
    pub drain_until: Instant,
    /// The target's packets from its keyframe on, while the frame being
    /// sent ends.
    pub buffer: Vec<crate::rtp::RtpPacket>,
}

pub(crate) struct TrackLadder {
    pub rungs: Vec<RungOut>,
    pub current: usize,
    /// The rung sent before every remembered switch.
    first: usize,
    pub pending: Option<Pending>,
    pub choice: Choice,
    pub adapt: Adapt,
    /// (first sent sequence number, rung) of the latest switches.
    segments: VecDeque<(u16, usize)>,
    /// Its feeds must be changed in the shard.
    pub feeds_changed: bool,
    counters: Arc<ViewerCounters>,
    /// The viewer's span (stream and session), for the switch log lines.
    span: tracing::Span,
}

impl TrackLadder {
    /// Starts on `choice`'s rung (the best one when automatic).
    pub fn new(
        rungs: Vec<RungOut>,
        choice: Choice,
        counters: Arc<ViewerCounters>,
        span: tracing::Span,
        now: Instant,
    ) -> Self {
        let current = match choice {
            Choice::Pinned(k) => k.min(rungs.len() - 1),
            Choice::Auto => 0,
        };
        let bitrates = rungs.iter().map(|r| r.bitrate).collect();
        let ladder = Self {
            adapt: Adapt::new(bitrates, current, now),
            rungs,
            current,
            first: current,
            pending: None,
            choice,
            segments: VecDeque::new(),
            feeds_changed: false,
            counters,
            span,
        };
        ladder
            .counters
            .pinned
            .store(matches!(choice, Choice::Pinned(_)), Relaxed);
        ladder.publish();
        ladder
    }

    pub fn source(&self) -> &SourceHandle {
        &self.rungs[self.current].source
    }

    /// The feeds the track takes: its rung's, and a pending target's.
    pub fn feeds(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.rungs[self.current].key)
            .chain(self.pending.as_ref().map(|p| self.rungs[p.to].key))
    }

    /// The viewer's own choice; a rung to switch to, if it changes one.
    pub fn choose(&mut self, choice: Choice) -> Option<usize> {
        self.choice = choice;
        self.counters
            .pinned
            .store(matches!(choice, Choice::Pinned(_)), Relaxed);
        match choice {
            Choice::Pinned(k) => Some(k.min(self.rungs.len() - 1)),
            Choice::Auto => None,
        }
    }

    /// What the controller says, unless the viewer pinned its rung.
    pub fn steer(&mut self, step: Step) -> Option<(usize, String)> {
        if matches!(self.choice, Choice::Pinned(_)) {
            return None;
        }
        self.publish();
        match step {
            Step::Switch { to, reason } if to != self.current => Some((to, reason)),
            _ => None,
        }
    }

    /// Asks for a switch to `to`, to be made at its keyframe (or from its
    /// cache) at the end of a frame.
    pub fn request(
        &mut self,
        to: usize,
        reason: String,
        from_cache: bool,
        stop_current: bool,
        drain: Duration,
        now: Instant,
    ) {
        if self.pending.as_ref().is_some_and(|p| p.to == to) {
            return;
        }
        if to == self.current {
            if self.pending.take().is_some() {
                self.feeds_changed = true;
            }
            self.adapt.set_rung(to, now);
            return;
        }
        self.pending = Some(Pending {
            to,
            reason,
            since: now,
            held: false,
            stop_current,
            from_cache,
            drain_until: now + drain,
            buffer: Vec::new(),
        });
        self.feeds_changed = true;
    }

    /// The switch is made: from the next sequence number `first_seq` on,
    /// the track sends rung `to`. Logs it, with its reason and wait.
    pub fn commit(
        &mut self,
        to: usize,
        reason: &str,
        since: Instant,
        first_seq: u16,
        now: Instant,
    ) {
        let from = self.current;
        self.pending = None;
        self.current = to;
        self.feeds_changed = true;
        self.adapt.set_rung(to, now);
        if self.segments.len() == SEGMENTS {
            self.segments.pop_front();
        }
        self.segments.push_back((first_seq, to));
        let up = to < from;
        let c = &self.counters;
        if up { &c.switches_up } else { &c.switches_down }.fetch_add(1, Relaxed);
        self.publish();
        tracing::info!(
            parent: &self.span,
            from = %self.rungs[from].name,
            to = %self.rungs[to].name,
            direction = if up { "up" } else { "down" },
            reason,
            waited_ms = now.saturating_duration_since(since).as_millis() as u64,
            "viewer switched rendition"
        );
    }

    /// The rung the packet sent as `out_seq` came from; None when it is
    /// older than the switches remembered.
    pub fn rung_sent(&self, out_seq: u16, next_seq: u16) -> Option<usize> {
        // How far back `out_seq` is from the next number to be sent; the
        // newest switch at least that far back sent it.
        let back = next_seq.wrapping_sub(out_seq);
        let sent_by = self
            .segments
            .iter()
            .rev()
            .find(|(first, _)| next_seq.wrapping_sub(*first) >= back);
        match sent_by {
            Some(&(_, rung)) => Some(rung),
            // Before every remembered switch: the first rung, if there was
            // none to forget.
            None if self.segments.len() < SEGMENTS => Some(self.first),
            None => None,
        }
    }

    /// Before anything was sent: the track starts on rung `k`.
    pub fn start_on(&mut self, k: usize, now: Instant) {
        self.current = k;
        self.first = k;
        self.pending = None;
        self.feeds_changed = true;
        self.adapt.set_rung(k, now);
        self.publish();
    }

    /// Status: the rung, the estimate.
    pub fn publish(&self) {
        let c = &self.counters;
        c.rung.store(self.current as u64 + 1, Relaxed);
        c.estimate_bps
            .store(self.adapt.estimate_bps().unwrap_or(0.0) as u64, Relaxed);
    }
}
