//! Resending what a viewer lost: from the shared history of the rendition
//! that sent each packet, at most once per [`RESEND_GUARD`], again on the
//! [`RESEND_AGAIN`] schedule while it is recent ([`AGAIN_WITHIN`]), within
//! [`RESEND_SHARE`] of the track's bytes;
//! and each loss counted once for the ladder's choice (a probe's own put
//! down to it).

use super::{PacketOut, TrackOut, packet};
use std::time::{Duration, Instant};

/// A packet resent this recently (or within the viewer's last round trip,
/// a queue on its path included, up to [`RESEND_GUARD_MAX`]) is not resent
/// again: a receiver that asks for every missing packet each time it finds
/// a new gap (aiortc does) would otherwise have each loss resent many times
/// over a congested link, spending the allowance that must carry them once
/// the link has room again.
const RESEND_GUARD: Duration = Duration::from_millis(100);
const RESEND_GUARD_MAX: Duration = Duration::from_millis(1000);

/// Resends remembered for [`RESEND_GUARD`].
const RESENDS_KEPT: usize = 256;

/// Resends may add at most this share of what the track sends (a link
/// that loses packets is often one that is full: resending all it lost,
/// twice, would keep it full).
pub(super) const RESEND_SHARE: f64 = 0.3;

/// What unspent resend allowance is kept, in bytes: the largest burst of
/// resends, kept under what a shallow link's queue holds (a burst that
/// overflows it is lost whole). What does not fit waits for the next copy.
pub(super) const RESEND_ALLOWANCE_MAX: f64 = 24_000.0;

/// On a ladder, with the link estimated, the burst is kept to what the
/// link carries in this long (within a floor of a few packets): on a
/// narrow link that loses packets because its queue is full, a full-size
/// burst of resends keeps it full, and the picture waits behind it.
const RESEND_BURST: Duration = Duration::from_millis(250);
const RESEND_ALLOWANCE_MIN: f64 = 4_000.0;

/// A later copy goes only while its packet is at most this many numbers
/// behind the next one: a receiver that already has it (an earlier copy
/// came through) takes a packet 100 or more behind what it holds for a
/// restart of the stream, and stalls (aiortc's jitter buffer does). What
/// it holds is at most what was sent before the copy, which arrives first.
const AGAIN_WITHIN: u16 = 80;

/// Each resend goes again this long after the copy before it: a receiver
/// that asks only once (aiortc asks again only when it finds a new gap)
/// would otherwise hold every later frame behind a resend the link lost.
/// The later copies outlast a link that is full when it loses packets:
/// they go once a switch down has let its queue drain.
pub(super) const RESEND_AGAIN: [Duration; 5] = [
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(700),
    Duration::from_millis(1000),
    Duration::from_millis(1300),
];

impl TrackOut {
    /// Resends what the viewer says it lost, from the shared history (of
    /// the rendition that sent it).
    pub fn nack(&mut self, lost: &[u16], now: Instant, out: &mut impl PacketOut) {
        self.accrue(now);
        self.count(|c| &c.nacks, lost.len() as u64);
        self.last_nack = Some(now);
        let guard = self.resend_guard();
        while self
            .resent
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= guard)
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
                if probed > 0 && l.adapt.after_probe(now) {
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
            match self.resend(out_seq, out) {
                // Sent: once more later; no room in the allowance yet:
                // tried again then.
                Resend::Sent | Resend::NoRoom => self.resend_later(0, out_seq, now),
                Resend::Gone => {}
            }
        }
    }

    /// How long a resend is on its way: the viewer's round trip (a queue
    /// on its path included) and a fifth, within bounds.
    fn resend_guard(&self) -> Duration {
        self.link_rtt
            .map_or(RESEND_GUARD, |rtt| rtt.mul_f64(1.2))
            .clamp(RESEND_GUARD, RESEND_GUARD_MAX)
    }

    /// A laddered track's allowance also grows with time, by its share of
    /// the link's estimate: while a rung stopped on an overloaded link
    /// sends nothing, what was lost must still go.
    pub(super) fn accrue(&mut self, now: Instant) {
        let Some(l) = &self.ladder else { return };
        let since = self.accrued_at.replace(now).unwrap_or(now);
        let rate = l
            .adapt
            .estimate_bps()
            .unwrap_or(l.rungs[l.current].bitrate as f64);
        let bytes = now.saturating_duration_since(since).as_secs_f64() * rate / 8.0;
        self.resend_allowance =
            (self.resend_allowance + bytes * RESEND_SHARE).min(self.resend_cap());
    }

    /// The most resend allowance kept: [`RESEND_ALLOWANCE_MAX`], or on a
    /// ladder what the link is estimated to carry in [`RESEND_BURST`].
    pub(super) fn resend_cap(&self) -> f64 {
        let estimate = self.ladder.as_ref().and_then(|l| l.adapt.estimate_bps());
        estimate.map_or(RESEND_ALLOWANCE_MAX, |bps| {
            (bps / 8.0 * RESEND_BURST.as_secs_f64())
                .clamp(RESEND_ALLOWANCE_MIN, RESEND_ALLOWANCE_MAX)
        })
    }

    /// Puts `out_seq` on the `k`th queue of resends to make again.
    fn resend_later(&mut self, k: usize, out_seq: u16, now: Instant) {
        let Some(delay) = RESEND_AGAIN.get(k) else {
            return;
        };
        let queue = &mut self.again[k];
        if queue.len() == RESENDS_KEPT {
            queue.pop_front();
        }
        queue.push_back((out_seq, now + *delay));
    }

    /// Whether a resend is due again by `now`.
    pub(super) fn resend_due(&self, now: Instant) -> bool {
        self.again
            .iter()
            .any(|q| q.front().is_some_and(|(_, t)| *t <= now))
    }

    /// The resends due again by `now` (each queue is in the order due).
    /// A copy goes only while the viewer has been silent since its last
    /// one could have been missed: a viewer that asked again for anything
    /// after that (it asks again, each round trip or at each new gap, for
    /// all it still misses) did not ask for this one, so it has it; one
    /// that still misses it asked, and the NACK resent it. Copies are for
    /// the viewer that has gone quiet, not more load on a full link.
    pub(super) fn resend_again(&mut self, now: Instant, out: &mut impl PacketOut) {
        self.accrue(now);
        let guard = self.resend_guard();
        for (k, delay) in RESEND_AGAIN.iter().enumerate() {
            while let Some(&(out_seq, due)) = self.again[k].front() {
                if due > now {
                    break;
                }
                self.again[k].pop_front();
                let behind = self.numbers.next_seq().wrapping_sub(out_seq);
                if behind > AGAIN_WITHIN {
                    continue;
                }
                let last_sent = due.checked_sub(*delay).unwrap_or(due);
                if self.last_nack.is_some_and(|t| t > last_sent + guard) {
                    continue;
                }
                match self.resend(out_seq, out) {
                    Resend::Sent => self.resend_later(k + 1, out_seq, now),
                    Resend::NoRoom => self.resend_later(k, out_seq, now),
                    Resend::Gone => {}
                }
            }
        }
    }

    /// Sends the packet sent as `out_seq` again, if it is still known.
    pub(super) fn resend(&mut self, out_seq: u16, out: &mut impl PacketOut) -> Resend {
        let next = self.numbers.next_seq();
        let Some((in_seq, out_ts)) = self.numbers.lookup(out_seq) else {
            return Resend::Gone;
        };
        let source = match &self.ladder {
            Some(l) => match l.rung_sent(out_seq, next) {
                Some(r) => &l.rungs[r].source,
                None => return Resend::Gone,
            },
            None => &self.source,
        };
        let Some(p) = source.history.get(in_seq) else {
            return Resend::Gone;
        };
        let size = p.data.len() as f64;
        if size > self.resend_allowance {
            return Resend::NoRoom;
        }
        self.resend_allowance -= size;
        out.write(packet(&p, self.pt, self.ssrc, out_seq, out_ts), None);
        self.count(|c| &c.retransmitted, 1);
        Resend::Sent
    }
}

/// What came of a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resend {
    Sent,
    /// The allowance has no room for it yet.
    NoRoom,
    /// No longer in the history (or never sent).
    Gone,
}
