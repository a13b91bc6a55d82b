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
//! history (`track/resend.rs`); PLI/FIR from the GOP cache, at most once
//! every [`ForwardPolicy::keyframe_answer_every`]. A video track on a ladder
//! moves between renditions and probes for room (`track/switch.rs`).

use super::counters::ViewerCounters;
use super::ladder::{SwitchAt, TrackLadder};
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
    /// Resends to make again, one queue per copy of
    /// [`resend::RESEND_AGAIN`]: sent sequence number, when.
    again: [VecDeque<(u16, Instant)>; resend::RESEND_AGAIN.len()],
    /// The round trip the viewer's last receiver report gave.
    link_rtt: Option<Duration>,
    /// When the viewer last asked for anything again (NACK).
    last_nack: Option<Instant>,
    /// Bytes that resends may still take ([`resend::RESEND_SHARE`]).
    resend_allowance: f64,
    /// When a laddered track's allowance last grew with time.
    accrued_at: Option<Instant>,
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
            again: Default::default(),
            link_rtt: None,
            last_nack: None,
            resend_allowance: resend::RESEND_ALLOWANCE_MAX,
            accrued_at: None,
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
        if self.resend_due(now) {
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
        self.resend_allowance = (self.resend_allowance
            + p.data.len() as f64 * resend::RESEND_SHARE)
            .min(self.resend_cap());
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

mod resend;
mod switch;

#[cfg(test)]
#[path = "track_tests.rs"]
mod tests;
