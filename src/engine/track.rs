//! One kind of media toward one viewer, inside a shard: which source packets
//! it gets and with what numbers. Pure and synchronous: the shard hands it
//! each packet of its source and the viewer's feedback, with `now`, and it
//! answers with the packets to write.
//!
//! Video starts with the cached GOP (or waits for the next keyframe). The
//! cached GOP is paced out [`BACKLOG_BURST`] packets per pacing tick; live
//! packets that arrive meanwhile queue behind it. A viewer whose queue
//! overflows, or whose shard feed lost packets, resyncs the same way: a
//! whole frame or more is skipped, never part of one. A viewer that keeps
//! needing it is hung up. NACKs are answered from the source's shared
//! history; PLI/FIR from the GOP cache, at most once every
//! [`ForwardPolicy::keyframe_answer_every`].

use super::adapt::{Report, Step};
use super::counters::ViewerCounters;
use super::ladder::{Choice, SwitchAt, TrackLadder};
use super::renumber::{AUDIO_SLOTS, Renumber, VIDEO_SLOTS};
use crate::rtp::RtpPacket;
use crate::source::SourceHandle;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Packets a viewer may have queued in its shard (a paced GOP and the live
/// packets behind it) before it is resynced.
pub(crate) const VIEWER_QUEUE: usize = 2048;
/// A cached GOP goes out this many packets per pacing tick...
pub(crate) const BACKLOG_BURST: usize = 16;
/// ...one tick every this long (some 20 KB a millisecond).
pub(crate) const BACKLOG_PAUSE: Duration = Duration::from_millis(1);
/// 90 kHz ticks between a replayed GOP and what was sent before it.
const REPLAY_STEP: u32 = 3000;
/// A switch waiting for the target's keyframe longer than this (or, once
/// the current rung stopped at its own keyframe, [`HELD_WAIT`]) is made
/// from the target's cached GOP instead.
const KEYFRAME_WAIT: Duration = Duration::from_secs(3);
const HELD_WAIT: Duration = Duration::from_millis(500);
/// Packets of a switch's target kept while the frame being sent ends.
const SWITCH_BUFFER: usize = 512;
/// Probe duplicates repeat packets sent this many packets ago and
/// earlier, over [`PROBE_SPREAD`] of them: old enough that the viewer has
/// already asked for any it lost (a duplicate must not hide a loss the
/// probe caused), recent enough that a receiver takes it for a late
/// packet rather than a jump (aiortc resets its jitter buffer 100 back).
const PROBE_FROM: u16 = 24;
const PROBE_SPREAD: u16 = 32;
/// A packet resent this recently is not resent again: a receiver that asks
/// for every missing packet each time it finds a new gap (aiortc does)
/// would otherwise have each loss resent many times over a congested link.
const RESEND_GUARD: Duration = Duration::from_millis(100);
/// Resends remembered for [`RESEND_GUARD`].
const RESENDS_KEPT: usize = 256;
/// Resends may add at most this share of what the track sends (a link
/// that loses packets is often one that is full: resending all it lost,
/// twice, would keep it full).
const RESEND_SHARE: f64 = 0.3;
/// What unspent resend allowance is kept, in bytes.
const RESEND_ALLOWANCE_MAX: f64 = 64_000.0;
/// Each resend goes once more this much later: a receiver that asks only
/// once (aiortc asks again only when it finds a new gap) would otherwise
/// hold every later frame behind a resend the link lost.
const RESEND_AGAIN: Duration = Duration::from_millis(150);

/// When a viewer is resynced, hung up, or answered from the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardPolicy {
    /// A viewer that needs more resyncs than this within `resync_window` is
    /// hung up: it cannot keep up.
    pub max_resyncs: usize,
    pub resync_window: Duration,
    /// Keyframe requests are answered from the cache at most this often.
    pub keyframe_answer_every: Duration,
    /// Packets queued for the viewer before it is resynced.
    pub queue: usize,
    /// Where a switch between a ladder's renditions takes effect.
    pub switch_at: SwitchAt,
}

impl Default for ForwardPolicy {
    fn default() -> Self {
        Self {
            max_resyncs: 3,
            resync_window: Duration::from_secs(10),
            keyframe_answer_every: Duration::from_secs(2),
            queue: VIEWER_QUEUE,
            switch_at: SwitchAt::Keyframe,
        }
    }
}

/// Where a track's packets go: the viewer's connection in a shard, or a
/// test's list.
pub(crate) trait PacketOut {
    /// One packet for the viewer; `live_since` is when a sampled live packet
    /// reached its source (for the relay latency).
    fn write(&mut self, packet: rtc::rtp::Packet, live_since: Option<Instant>);

    /// A sender report on track `ssrc` now, off its schedule.
    fn report_now(&mut self, _ssrc: u32) {}
}

/// How many sent packets a track remembers for retransmissions.
fn slots(video: bool) -> usize {
    if video { VIDEO_SLOTS } else { AUDIO_SLOTS }
}

/// What the shard must do after a track took something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// The viewer keeps falling behind: hang it up.
    HangUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Flowing,
    /// Skipping until a keyframe starts.
    WaitKey,
}

/// One kind of media toward one viewer.
pub(crate) struct TrackOut {
    pub source: SourceHandle,
    pub video: bool,
    pub pt: u8,
    pub ssrc: u32,
    counters: Arc<ViewerCounters>,
    policy: ForwardPolicy,
    numbers: Renumber,
    phase: Phase,
    /// Packets waiting for their turn: a paced GOP, then live ones.
    queue: VecDeque<RtpPacket>,
    /// Live packets up to this source sequence number were in the GOP the
    /// viewer (re)started from: they are skipped.
    skip_through: Option<u16>,
    resyncs: Vec<Instant>,
    last_key_answer: Option<Instant>,
    /// Sending starts once the connection is up.
    started: bool,
    /// The viewer's link dropped packets (a full ICE-TCP stream).
    link_overflowed: bool,
    /// A laddered video track's renditions and choice.
    pub ladder: Option<TrackLadder>,
    /// The next keyframe taken starts a new timeline this many ticks after
    /// the last timestamp sent (a switch of rendition).
    new_timeline: Option<u32>,
    /// When the last live packet was taken.
    last_live: Option<Instant>,
    /// The last packet written did not end its frame.
    mid_frame: bool,
    /// Which of the last packets the next probe duplicate repeats.
    probe_turn: u16,
    /// The first number sent while the current probe added its rate.
    probe_from: Option<u16>,
    probe_logged: bool,
    /// Recent resends: sent sequence number, when.
    resent: VecDeque<(u16, Instant)>,
    /// Resends to make once more: sent sequence number, when.
    again: VecDeque<(u16, Instant)>,
    /// Bytes that resends may still take ([`RESEND_SHARE`]).
    resend_allowance: f64,
    /// The last numbers NACKed, each counted once as a loss for the ladder
    /// however often the viewer asks for it.
    nacked: VecDeque<u16>,
}

impl TrackOut {
    pub fn new(
        source: SourceHandle,
        video: bool,
        pt: u8,
        ssrc: u32,
        counters: Arc<ViewerCounters>,
        policy: ForwardPolicy,
    ) -> Self {
        Self {
            source,
            video,
            pt,
            ssrc,
            counters,
            policy,
            numbers: Renumber::new(rand::random(), 0, rand::random(), slots(video)),
            phase: if video {
                Phase::WaitKey
            } else {
                Phase::Flowing
            },
            queue: VecDeque::new(),
            skip_through: None,
            resyncs: Vec::new(),
            last_key_answer: None,
            started: false,
            link_overflowed: false,
            ladder: None,
            new_timeline: None,
            last_live: None,
            mid_frame: false,
            probe_turn: 0,
            probe_from: None,
            probe_logged: false,
            resent: VecDeque::new(),
            again: VecDeque::new(),
            resend_allowance: RESEND_ALLOWANCE_MAX,
            nacked: VecDeque::new(),
        }
    }

    /// A laddered video track: its source is the ladder's current rung.
    pub fn with_ladder(mut self, ladder: TrackLadder) -> Self {
        self.source = ladder.source().clone();
        self.ladder = Some(ladder);
        self
    }

    /// The connection is up: video starts from the cached GOP.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        if self.video {
            let gop = self.source.gop();
            if let Some(first) = gop.first() {
                // The numbering starts where the GOP does.
                self.numbers =
                    Renumber::new(rand::random(), first.timestamp, rand::random(), slots(true));
            }
            self.replay(gop);
        }
    }

    /// Packets toward the viewer were dropped after this track (a full
    /// ICE-TCP stream): video resyncs with its next packet.
    pub fn link_overflowed(&mut self) {
        self.link_overflowed = true;
    }

    /// Packets waiting to be paced out.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes one live packet of the source whose feed is `key` (a ladder's
    /// track takes those of its rung, and a keyframe of a switch's target).
    pub fn live(
        &mut self,
        p: &RtpPacket,
        key: usize,
        now: Instant,
        out: &mut impl PacketOut,
    ) -> Verdict {
        if !self.started {
            return Verdict::Fine;
        }
        if self.again.front().is_some_and(|(_, t)| *t <= now) {
            self.resend_again(now, out);
        }
        if !self.ladder_takes(p, key, now, out) {
            return Verdict::Fine;
        }
        if let Some(last) = self.skip_through {
            if (p.sequence.wrapping_sub(last) as i16) <= 0 {
                return Verdict::Fine; // already in the replayed GOP
            }
            self.skip_through = None;
        }
        if p.after_drop && self.video {
            // The feed lost packets: part of a frame is gone.
            return self.resync(now, "the shard's feed overflowed");
        }
        if std::mem::take(&mut self.link_overflowed) && self.video {
            if let Some(l) = &mut self.ladder {
                let step = l.adapt.overflowed(now);
                self.steer(step, now);
            }
            return self.resync(now, "its link's queue overflowed");
        }
        if !self.queue.is_empty() {
            if self.queue.len() >= self.policy.queue {
                self.count(|c| &c.dropped, self.queue.len() as u64);
                return self.resync(now, "its queue overflowed");
            }
            self.queue.push_back(p.clone());
            return Verdict::Fine;
        }
        self.last_live = Some(now);
        self.take(p, true, now, out);
        Verdict::Fine
    }

    /// For a laddered track: whether live packet `p` of feed `key` is one
    /// it sends now. A pending switch buffers the target's packets from its
    /// keyframe on, and is made once what was sent ends a frame (a frame
    /// cut short would look whole under the viewer's own numbering); the
    /// current rung's own keyframe is not sent while one is pending.
    fn ladder_takes(
        &mut self,
        p: &RtpPacket,
        key: usize,
        now: Instant,
        out: &mut impl PacketOut,
    ) -> bool {
        let Some(l) = &mut self.ladder else {
            return true;
        };
        let current = l.rungs[l.current].key;
        let Some(pd) = &mut l.pending else {
            return key == current; // else a feed it is leaving
        };
        if key == l.rungs[pd.to].key {
            if !pd.from_cache && (p.keyframe_start || !pd.buffer.is_empty()) {
                if pd.buffer.len() >= SWITCH_BUFFER {
                    pd.buffer.clear(); // wait for its next keyframe
                } else {
                    pd.buffer.push(p.clone());
                }
                if !self.mid_frame {
                    self.make_switch(now, out);
                }
            } else {
                self.overdue_switch(now, out);
            }
            return false;
        }
        if key != current {
            return false;
        }
        if !pd.from_cache && (pd.held || (p.keyframe_start && !self.mid_frame)) {
            // The current rung's keyframe: not worth sending now.
            pd.held = true;
            return false;
        }
        true
    }

    /// After a packet was written: a pending switch that waited for the
    /// end of a frame is made.
    fn after_take(&mut self, now: Instant, out: &mut impl PacketOut) {
        if self.mid_frame {
            return;
        }
        let ready = self
            .ladder
            .as_ref()
            .and_then(|l| l.pending.as_ref())
            .is_some_and(|pd| pd.from_cache || !pd.buffer.is_empty());
        if ready {
            self.make_switch(now, out);
        }
    }

    /// Sends up to `burst` packets of the queue, and what a probe is due;
    /// true while more is left (or the probe goes on).
    pub fn pace(&mut self, burst: usize, now: Instant, out: &mut impl PacketOut) -> bool {
        for _ in 0..burst {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            // Cached packets left the source long ago: not relay latency.
            self.take(&p, false, now, out);
        }
        let probing = self.probe(now, out);
        if self.queue.is_empty() {
            // A replayed GOP held hundreds of packets: give the room back,
            // or every viewer keeps a GOP's worth of queue for good.
            self.queue = VecDeque::new();
            return probing;
        }
        true
    }

    /// Whether a probe of the ladder's next rung up is under way.
    pub fn probing(&self, now: Instant) -> bool {
        self.ladder.as_ref().is_some_and(|l| l.adapt.probing(now))
    }

    /// A probe's share for now: duplicates of the last packets sent (the
    /// viewer drops them; a NACK meanwhile means the link had no room).
    /// Also ends probes and judges them, and makes a switch that waited
    /// too long for its keyframe. True while the probe goes on.
    fn probe(&mut self, now: Instant, out: &mut impl PacketOut) -> bool {
        let Some(l) = self.ladder.as_mut().filter(|l| l.choice == Choice::Auto) else {
            return false;
        };
        let step = l.adapt.tick(now);
        self.steer(step, now);
        let Some(l) = &mut self.ladder else {
            return false;
        };
        if l.adapt.probe_ending(now) {
            // Its queue (if any) is on the path now: the answer to this
            // report tells.
            out.report_now(self.ssrc);
        }
        let mut budget = l.adapt.probe_budget(now);
        let next = self.numbers.next_seq();
        if budget > 0 && self.probe_from.is_none() {
            self.probe_from = Some(next);
        }
        if !l.adapt.probe_pending(now) {
            self.probe_from = None;
        }
        for _ in 0..PROBE_SPREAD {
            if budget == 0 {
                break;
            }
            self.probe_turn = (self.probe_turn + 1) % PROBE_SPREAD;
            let out_seq = next.wrapping_sub(PROBE_FROM + self.probe_turn);
            if l.rung_sent(out_seq, next) != Some(l.current) {
                continue;
            }
            let Some((in_seq, ts)) = self.numbers.lookup(out_seq) else {
                continue;
            };
            let Some(p) = l.source().history.get(in_seq) else {
                continue;
            };
            out.write(packet(&p, self.pt, self.ssrc, out_seq, ts), None);
            budget = budget.saturating_sub(p.data.len());
            l.adapt.probed(p.data.len());
        }
        l.adapt.probing(now)
    }

    /// A switch still waiting for its keyframe after [`KEYFRAME_WAIT`] (or
    /// [`HELD_WAIT`] once the current rung stopped) is made from the
    /// target's cached GOP instead.
    fn overdue_switch(&mut self, now: Instant, out: &mut impl PacketOut) {
        let Some(pd) = self.ladder.as_mut().and_then(|l| l.pending.as_mut()) else {
            return;
        };
        let waited = now.saturating_duration_since(pd.since);
        if waited >= KEYFRAME_WAIT || (pd.held && waited >= HELD_WAIT) {
            pd.from_cache = true;
            pd.buffer.clear();
            if !self.mid_frame {
                self.make_switch(now, out);
            }
        }
    }

    /// A receiver report on this track: the share it lost and the round
    /// trip, for the ladder's choice.
    pub fn report(&mut self, report: Report, now: Instant) {
        let Some(l) = self.ladder.as_mut().filter(|l| l.choice == Choice::Auto) else {
            return;
        };
        let step = l.adapt.report(report, now);
        self.steer(step, now);
        if let Some(l) = &mut self.ladder {
            let step = l.adapt.tick(now);
            self.steer(step, now);
        }
    }

    /// The viewer's own choice of rendition (a pinned rung, or automatic).
    pub fn choose(&mut self, choice: Choice, now: Instant) -> Result<(), String> {
        let Some(l) = &mut self.ladder else {
            return Err("the stream has no ladder".to_owned());
        };
        if let Some(to) = l.choose(choice) {
            self.switch(to, "pinned by the viewer".to_owned(), now);
        }
        Ok(())
    }

    /// Follows the ladder controller's step, unless the viewer pinned a rung.
    fn steer(&mut self, step: Step, now: Instant) {
        let Some(l) = &mut self.ladder else { return };
        if l.adapt.probing(now) && !self.probe_logged {
            self.probe_logged = true;
            tracing::debug!(rung = l.current, "probe started");
        } else if !l.adapt.probing(now) {
            self.probe_logged = false;
        }
        if let Some((to, reason)) = l.steer(step) {
            self.switch(to, reason, now);
        }
    }

    /// Switches to rung `to`: before the start at once; then at its next
    /// keyframe, or from its cached GOP, as the policy says, once what was
    /// sent ends a frame.
    fn switch(&mut self, to: usize, reason: String, now: Instant) {
        let Some(l) = &mut self.ladder else { return };
        if !self.started {
            l.start_on(to, now);
            self.source = l.source().clone();
            return;
        }
        let from_cache = self.policy.switch_at == SwitchAt::Cache;
        l.request(to, reason, from_cache, now);
        // From the cache at once when no frame is half sent; else at the
        // end of it (`after_take`).
        if from_cache && !self.mid_frame && l.pending.is_some() {
            self.make_switch(now, &mut Discard);
        }
    }

    /// Makes the pending switch, at the end of a frame: from the target's
    /// cached GOP, or from the target's keyframe and what followed it
    /// (buffered), its timeline running on from the last packet sent by
    /// the time that passed. What was queued of the old rung (whole frames)
    /// is dropped.
    fn make_switch(&mut self, now: Instant, out: &mut impl PacketOut) {
        let Some(l) = &mut self.ladder else { return };
        let Some(pd) = l.pending.take() else { return };
        l.commit(pd.to, &pd.reason, pd.since, self.numbers.next_seq(), now);
        self.source = l.source().clone();
        self.skip_through = None;
        if pd.from_cache || pd.buffer.is_empty() {
            self.new_timeline = Some(REPLAY_STEP);
            self.replay(self.source.gop());
            return;
        }
        let elapsed = self
            .last_live
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let ticks = (elapsed.as_secs_f64() * 90_000.0).round() as u32;
        self.new_timeline = Some(ticks.max(1));
        self.queue.clear();
        self.phase = Phase::WaitKey;
        self.last_live = Some(now);
        for p in &pd.buffer {
            self.take(p, true, now, out);
        }
    }

    /// Resends what the viewer says it lost, from the shared history (of
    /// the rendition that sent it).
    pub fn nack(&mut self, lost: &[u16], now: Instant, out: &mut impl PacketOut) {
        self.count(|c| &c.nacks, lost.len() as u64);
        while self
            .resent
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= RESEND_GUARD)
        {
            self.resent.pop_front();
        }
        let fresh: Vec<u16> = lost
            .iter()
            .copied()
            .filter(|s| !self.resent.iter().any(|(r, _)| r == s))
            .collect();
        if self.ladder.is_some() {
            // Each number counted once; those sent since the last probe
            // began (a link drops what arrives at a full queue, so only
            // those) are put down to it while it is judged.
            let (mut new, mut probed) = (0, 0);
            let next = self.numbers.next_seq();
            for s in lost {
                if self.nacked.contains(s) {
                    continue;
                }
                if self.nacked.len() == RESENDS_KEPT {
                    self.nacked.pop_front();
                }
                self.nacked.push_back(*s);
                let since_probe = self
                    .probe_from
                    .is_some_and(|f| next.wrapping_sub(*s) <= next.wrapping_sub(f));
                if since_probe { probed += 1 } else { new += 1 }
            }
            if let Some(l) = &mut self.ladder {
                if probed > 0 && l.adapt.probe_pending(now) {
                    l.adapt.nacked_in_probe(probed, now);
                } else {
                    new += probed;
                }
                if new > 0 {
                    let step = l.adapt.nacked(new, now);
                    self.steer(step, now);
                }
            }
        }
        for out_seq in fresh {
            if self.resent.len() == RESENDS_KEPT {
                self.resent.pop_front();
            }
            self.resent.push_back((out_seq, now));
            if self.resend(out_seq, out) {
                if self.again.len() == RESENDS_KEPT {
                    self.again.pop_front();
                }
                self.again.push_back((out_seq, now + RESEND_AGAIN));
            }
        }
    }

    /// The resends due again by `now`.
    fn resend_again(&mut self, now: Instant, out: &mut impl PacketOut) {
        while let Some(&(out_seq, due)) = self.again.front() {
            if due > now {
                break;
            }
            self.again.pop_front();
            self.resend(out_seq, out);
        }
    }

    /// Sends the packet sent as `out_seq` again, if it is still known.
    fn resend(&mut self, out_seq: u16, out: &mut impl PacketOut) -> bool {
        let next = self.numbers.next_seq();
        {
            let Some((in_seq, out_ts)) = self.numbers.lookup(out_seq) else {
                return false;
            };
            let source = match &self.ladder {
                Some(l) => match l.rung_sent(out_seq, next) {
                    Some(r) => &l.rungs[r].source,
                    None => return false,
                },
                None => &self.source,
            };
            let Some(p) = source.history.get(in_seq) else {
                return false;
            };
            let size = p.data.len() as f64;
            if size > self.resend_allowance {
                return false;
            }
            self.resend_allowance -= size;
            out.write(packet(&p, self.pt, self.ssrc, out_seq, out_ts), None);
            self.count(|c| &c.retransmitted, 1);
            true
        }
    }

    /// A PLI or FIR: restarts from the cached GOP, at most once every
    /// `keyframe_answer_every` (not counted as falling behind).
    pub fn keyframe_request(&mut self, now: Instant) {
        self.count(|c| &c.keyframe_requests, 1);
        let recent = self
            .last_key_answer
            .is_some_and(|t| now.duration_since(t) < self.policy.keyframe_answer_every);
        let cached = self.source.cache_state().is_some_and(|c| c.ready);
        if !self.video || recent || !cached || !self.started {
            return;
        }
        self.last_key_answer = Some(now);
        self.replay(self.source.gop());
    }

    /// Starts again from `gop` (or, when empty, from the next keyframe).
    fn replay(&mut self, gop: Vec<RtpPacket>) {
        self.queue.clear();
        self.phase = Phase::WaitKey;
        self.skip_through = gop.last().map(|p| p.sequence);
        self.queue.extend(gop);
    }

    /// Starts this viewer again from the cached GOP, or from the next
    /// keyframe when there is none; hangs up a viewer that keeps needing it.
    fn resync(&mut self, now: Instant, why: &'static str) -> Verdict {
        let window = self.policy.resync_window;
        self.resyncs.retain(|t| now.duration_since(*t) < window);
        self.resyncs.push(now);
        self.count(|c| &c.resyncs, 1);
        if self.resyncs.len() > self.policy.max_resyncs {
            tracing::warn!(
                reason = why,
                resyncs = self.resyncs.len(),
                window_s = window.as_secs(),
                "viewer cannot keep up: hanging up"
            );
            self.queue.clear();
            return Verdict::HangUp;
        }
        tracing::debug!(reason = why, "resyncing viewer from the GOP cache");
        self.replay(self.source.gop());
        Verdict::Fine
    }

    /// Numbers and writes one packet, unless it must wait for a keyframe.
    fn take(&mut self, p: &RtpPacket, live: bool, now: Instant, out: &mut impl PacketOut) {
        if self.phase == Phase::WaitKey {
            if !p.keyframe_start {
                return;
            }
            match self.new_timeline.take() {
                // Another rendition's timestamps: a new timeline.
                Some(step) => self.numbers.continue_after(p.timestamp, step),
                None => self.numbers.rebase(p.timestamp, REPLAY_STEP),
            }
            self.phase = Phase::Flowing;
        }
        let (seq, ts) = self.numbers.next(p.sequence, p.timestamp);
        self.count(|c| &c.packets_sent, 1);
        self.count(|c| &c.bytes_sent, p.data.len() as u64);
        self.resend_allowance =
            (self.resend_allowance + p.data.len() as f64 * RESEND_SHARE).min(RESEND_ALLOWANCE_MAX);
        if let Some(l) = &mut self.ladder {
            l.adapt.sent(p.data.len(), now);
        }
        out.write(
            packet(p, self.pt, self.ssrc, seq, ts),
            p.received_at.filter(|_| live),
        );
        self.mid_frame = !p.marker;
        self.after_take(now, out);
    }

    fn count(&self, field: impl Fn(&ViewerCounters) -> &std::sync::atomic::AtomicU64, n: u64) {
        field(&self.counters).fetch_add(n, Relaxed);
    }
}

/// Source packet `p` as the viewer gets it: its payload type, SSRC and
/// numbers.
fn packet(p: &RtpPacket, pt: u8, ssrc: u32, seq: u16, ts: u32) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: p.marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: p.payload(),
    }
}

/// Writes nothing: for a switch made outside the packet path, which only
/// queues (a GOP from the cache).
struct Discard;

impl PacketOut for Discard {
    fn write(&mut self, _: rtc::rtp::Packet, _: Option<Instant>) {}
}

#[cfg(test)]
#[path = "track_tests.rs"]
mod tests;
