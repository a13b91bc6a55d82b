//! A laddered video track's switches between renditions: which live
//! packets it takes while a switch waits for its target's keyframe (made
//! only at the end of a frame), the switch itself (from the keyframe, or
//! from the target's cached GOP), the viewer's choice, and the probes that
//! test the next rung up. Pure, like the rest of the track.

use super::{PacketOut, Phase, REPLAY_STEP, TrackOut, packet};
use crate::engine::adapt::{Report, Step};
use crate::engine::ladder::{Choice, SwitchAt};
use crate::rtp::RtpPacket;
use std::time::{Duration, Instant};

/// A switch waiting for the target's keyframe longer than this (or, once
/// the current rung stopped at its own keyframe, [`HELD_WAIT`]; at a frame
/// end on an overloaded link, [`STOPPED_WAIT`]) is made from the target's
/// cached GOP instead.
const KEYFRAME_WAIT: Duration = Duration::from_secs(3);

const HELD_WAIT: Duration = Duration::from_millis(500);

/// A rung stopped at a frame end because the link could not carry it
/// waits this long for the target's keyframe before the cache is used:
/// the cached GOP's burst would land in the queue the stop is draining.
const STOPPED_WAIT: Duration = Duration::from_millis(1500);

/// A stopped rung's switch waits (within [`STOPPED_WAIT`]) for the link's
/// queue to drain: the delay it adds to the round trip, times
/// [`DRAIN_FACTOR`] (what else goes meanwhile, audio and resends, slows the
/// drain), and [`DRAIN_MARGIN`] for the age of the report that showed it.
const DRAIN_FACTOR: f64 = 1.5;
const DRAIN_MARGIN: Duration = Duration::from_millis(100);

/// Packets of a switch's target kept while the frame being sent ends.
const SWITCH_BUFFER: usize = 512;

/// Probe duplicates repeat packets sent this many packets ago and
/// earlier, over [`PROBE_SPREAD`] of them: old enough that the viewer has
/// already asked for any it lost (a duplicate must not hide a loss the
/// probe caused), recent enough that a receiver takes it for a late
/// packet rather than a jump (aiortc resets its jitter buffer 100 back).
const PROBE_FROM: u16 = 24;

const PROBE_SPREAD: u16 = 32;

impl TrackOut {
    /// For a laddered track: whether live packet `p` of feed `key` is one
    /// it sends now. A pending switch buffers the target's packets from its
    /// keyframe on, and is made once what was sent ends a frame (a frame
    /// cut short would look whole under the viewer's own numbering); the
    /// current rung's own keyframe is not sent while one is pending.
    pub(super) fn ladder_takes(
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
                if !self.mid_frame && now >= pd.drain_until {
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
        if !pd.from_cache && (pd.held || (!self.mid_frame && (p.keyframe_start || pd.stop_current)))
        {
            // The current rung's keyframe (not worth sending now), or the
            // next frame of a rung the link cannot carry.
            pd.held = true;
            return false;
        }
        true
    }

    /// After a packet was written: a pending switch that waited for the
    /// end of a frame is made.
    pub(super) fn after_take(&mut self, now: Instant, out: &mut impl PacketOut) {
        if self.mid_frame {
            return;
        }
        let ready = self
            .ladder
            .as_ref()
            .and_then(|l| l.pending.as_ref())
            .is_some_and(|pd| (pd.from_cache || !pd.buffer.is_empty()) && now >= pd.drain_until);
        if ready {
            self.make_switch(now, out);
        }
    }

    /// Whether a probe of the ladder's next rung up is under way.
    pub fn probing(&self, now: Instant) -> bool {
        self.ladder.as_ref().is_some_and(|l| l.adapt.probing(now))
    }

    /// A probe's share for now: duplicates of the last packets sent (the
    /// viewer drops them; a NACK meanwhile means the link had no room).
    /// Also ends probes and judges them, and makes a switch that waited
    /// too long for its keyframe. True while the probe goes on.
    pub(super) fn probe(&mut self, now: Instant, out: &mut impl PacketOut) -> bool {
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
        if !l.adapt.after_probe(now) {
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
    /// [`HELD_WAIT`] / [`STOPPED_WAIT`] once the current rung stopped) is
    /// made from the target's cached GOP instead.
    pub(super) fn overdue_switch(&mut self, now: Instant, out: &mut impl PacketOut) {
        let Some(pd) = self.ladder.as_mut().and_then(|l| l.pending.as_mut()) else {
            return;
        };
        let waited = now.saturating_duration_since(pd.since);
        let held_wait = if pd.stop_current {
            STOPPED_WAIT
        } else {
            HELD_WAIT
        };
        let due = pd.from_cache || waited >= KEYFRAME_WAIT || (pd.held && waited >= held_wait);
        if due && now >= pd.drain_until {
            pd.from_cache = true;
            pd.buffer.clear();
            if !self.mid_frame {
                self.make_switch(now, out);
            }
        }
    }

    /// A receiver report on this track: the share it lost and the round
    /// trip, for the ladder's choice (and the round trip for the resends').
    pub fn report(&mut self, report: Report, now: Instant) {
        self.link_rtt = report.rtt.or(self.link_rtt);
        let Some(l) = self.ladder.as_mut().filter(|l| l.choice == Choice::Auto) else {
            return;
        };
        let step = l.adapt.report(report, now);
        // A stopped rung's switch waits longer if the report shows more of
        // a queue than was known when it stopped.
        let queued = l.adapt.queue_delay(self.link_rtt);
        if let Some(pd) = l.pending.as_mut().filter(|pd| pd.stop_current) {
            pd.drain_until = pd.drain_until.max(pd.since + drain_for(queued));
        }
        self.steer(step, now);
        if let Some(l) = &mut self.ladder {
            let step = l.adapt.tick(now);
            self.steer(step, now);
        }
    }

    /// The viewer's estimate of its link (REMB), bits/s.
    pub fn remb(&mut self, bps: f64, now: Instant) {
        let Some(l) = self.ladder.as_mut().filter(|l| l.choice == Choice::Auto) else {
            return;
        };
        let step = l.adapt.remb(bps, now);
        self.steer(step, now);
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
    pub(super) fn steer(&mut self, step: Step, now: Instant) {
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
    pub(super) fn switch(&mut self, to: usize, reason: String, now: Instant) {
        let Some(l) = &mut self.ladder else { return };
        if !self.started {
            l.start_on(to, now);
            self.source = l.source().clone();
            return;
        }
        let from_cache = self.policy.switch_at == SwitchAt::Cache;
        // Down, by the controller, on a link that carries well under the
        // current rung: that rung stops at the end of its frame.
        let stop_current = to > l.current && l.choice == Choice::Auto && l.adapt.overloaded();
        let drain = if stop_current {
            drain_for(l.adapt.queue_delay(self.link_rtt))
        } else {
            Duration::ZERO
        };
        l.request(to, reason, from_cache, stop_current, drain, now);
        // From the cache at once when no frame is half sent (and no queue
        // drains); else at the end of it (`after_take`).
        if from_cache && !self.mid_frame && l.pending.is_some() && !stop_current {
            self.make_switch(now, &mut Discard);
        }
    }

    /// Makes the pending switch, at the end of a frame: from the target's
    /// cached GOP, or from the target's keyframe and what followed it
    /// (buffered), its timeline running on from the last packet sent by
    /// the time that passed. What was queued of the old rung (whole frames)
    /// is dropped.
    pub(super) fn make_switch(&mut self, now: Instant, out: &mut impl PacketOut) {
        let Some(l) = &mut self.ladder else { return };
        let Some(pd) = l.pending.take() else { return };
        l.commit(pd.to, &pd.reason, pd.since, self.numbers.next_seq(), now);
        let drained = self
            .link_rtt
            .is_none_or(|rtt| now.saturating_duration_since(pd.since) >= rtt);
        self.source = l.source().clone();
        if pd.stop_current && drained {
            // A stop as long as the viewer's round trip drained the link's
            // queue: what it lost goes now. (A shorter one left it full.)
            self.resend_allowance = self.resend_cap();
        }
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
}

/// How long a stopped rung's switch waits for a queue that adds `queued`
/// to the round trip to drain (none when no queue is known).
fn drain_for(queued: Duration) -> Duration {
    if queued.is_zero() {
        return Duration::ZERO;
    }
    (queued.mul_f64(DRAIN_FACTOR) + DRAIN_MARGIN).min(STOPPED_WAIT)
}

/// Writes nothing: for a switch made outside the packet path, which only
/// queues (a GOP from the cache).
struct Discard;

impl PacketOut for Discard {
    fn write(&mut self, _: rtc::rtp::Packet, _: Option<Instant>) {}
}
