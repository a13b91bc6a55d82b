//! Which rendition of a ladder one viewer's link can carry, from what the
//! link shows: loss in the viewer's receiver reports, the share of packets
//! it asks for again (NACK), its round trip growing past its floor, its
//! send queue overflowing, and the viewer's own estimate (REMB, from the
//! send times on each packet) falling well under what it is sent. Going up is tested first: a probe sends
//! duplicates of packets the viewer already has (which it drops), adding
//! the next rung's extra rate for a second; a NACK during it, or a round
//! trip grown by the queue it built (measured by a sender report at its
//! end), means the link has no room. Pure: every call takes `now` from its
//! caller.

use std::time::{Duration, Instant};

/// Loss at or above this in a report: the link cannot carry the rung.
const HEAVY_LOSS: f64 = 0.10;
/// Loss at or above this in two reports running: one rung down.
const MILD_LOSS: f64 = 0.03;
/// A rung is chosen to use at most this share of the estimated capacity.
const HEADROOM: f64 = 0.85;
/// The round trip this far above its floor in two reports running (a
/// queue that stays on the path, not a keyframe's passing one): one rung
/// down, before the queue overflows into loss.
const RTT_GROWTH: Duration = Duration::from_millis(300);
/// A round trip this far above its floor makes one report's heavy loss
/// the path's, and holds back the next probe.
const CORROBORATING_RTT: Duration = Duration::from_millis(100);
/// Reports this soon after a switch still describe the rung before it
/// (and the queue it left on the path).
const SETTLE: Duration = Duration::from_millis(2000);
/// A clean link this long (more after failed probes, up to the max; less
/// right after a probe went through) before a probe.
const PROBE_HOLD: Duration = Duration::from_secs(2);
const PROBE_HOLD_MAX: Duration = Duration::from_secs(4);
/// How long a probe adds its rate.
const PROBE_LENGTH: Duration = Duration::from_millis(1000);
/// After it, the first receiver report judges it (its round trip, up to
/// this much over the floor); without one this long after it ends, its
/// NACKs alone do.
const PROBE_RTT_RISE: Duration = Duration::from_millis(40);
/// The sender report that judges a probe is the one sent as it ended
/// (give or take these).
const PROBE_SR_SLACK: Duration = Duration::from_millis(50);
const PROBE_SR_LATE: Duration = Duration::from_millis(500);
/// The loss a probe causes shows for a while after it: NACKs and reports
/// this soon after it began (or failed) fail it, but move no rung down.
const PROBE_AFTERMATH: Duration = Duration::from_millis(400);
const PROBE_VERDICT_WAIT: Duration = Duration::from_millis(2500);
/// NACKs within one short window, as a share of what was sent, that mean
/// heavy loss before any report says so.
const NACK_WINDOW: Duration = Duration::from_millis(300);
const NACK_BURST: u64 = 8;
/// The viewer's estimate (REMB) under this share of what it was sent over
/// the last second: its link delivers less than it is sent, and a queue
/// builds before any loss. (A receiver that merely saw its delay jump
/// estimates 0.85 of what it gets, on a clean link all that is sent.)
const REMB_SHORTFALL: f64 = 0.75;
/// ...in estimates this far apart, before it moves.
const REMB_CONFIRM: Duration = Duration::from_millis(150);
/// A link estimated under this share of the current rung's bitrate is
/// overloaded: waiting for the target's keyframe, the rung stops sending.
const OVERLOAD: f64 = 0.8;
/// An estimate this much under the one before is the viewer seeing its
/// delay grow: a probe under way fails.
const REMB_FALL: f64 = 0.97;

/// A receiver report's block on the track.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Report {
    /// The share lost since the viewer's last report, 0 to 1.
    pub lost: f64,
    /// The round trip of the sender report it answers.
    pub rtt: Option<Duration>,
    /// How long ago that sender report was sent (its round trip and the
    /// viewer's delay since it): a round trip measured on one sent before
    /// a switch says nothing of the rung after it.
    pub sr_age: Option<Duration>,
}

/// What the controller asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Stay,
    /// Switch to rung `to` (0 is the best), for `reason`.
    Switch {
        to: usize,
        reason: String,
    },
}

/// A probe under way: the rung it tests and its rate on top of the stream.
#[derive(Debug, Clone, Copy)]
struct Probe {
    target: usize,
    started: Instant,
    /// The sender report at its end was asked for.
    reported: bool,
    extra_bps: f64,
    sent_bytes: u64,
}

/// One viewer's controller for one laddered video track.
#[derive(Debug)]
pub(crate) struct Adapt {
    /// Each rung's bitrate, the best first.
    bitrates: Vec<u64>,
    rung: usize,
    /// What was sent and asked for again since the last report.
    window_start: Instant,
    sent_bytes: u64,
    sent_packets: u64,
    nacked: u64,
    /// The last short window of NACKs: its start, what was sent and NACKed.
    nack_window: (Instant, u64, u64),
    rtt_floor_ms: Option<f64>,
    high_rtt: u32,
    mild_loss: u32,
    /// The last report had loss.
    lost_before: bool,
    /// Since when the link has shown no trouble.
    clean_since: Instant,
    last_switch: Instant,
    probe: Option<Probe>,
    /// Probes that failed in a row.
    failed_probes: u32,
    /// The last switch was up after a probe: the next probe may follow soon.
    climbing: bool,
    /// The link's capacity for video as last estimated, in bits/s.
    estimate_bps: Option<f64>,
    /// Until when loss is put down to the last probe.
    probe_aftermath: Option<Instant>,
    /// What went to the viewer over the last second.
    send_rate: SendRate,
    /// The viewer's last estimate (REMB), bits/s.
    last_remb: Option<f64>,
    /// A step down was asked for and not made yet.
    stepping_down: bool,
    /// Since when its estimates have been short of what it is sent.
    remb_short_since: Option<Instant>,
}

impl Adapt {
    pub fn new(bitrates: Vec<u64>, rung: usize, now: Instant) -> Self {
        Self {
            bitrates,
            rung,
            window_start: now,
            sent_bytes: 0,
            sent_packets: 0,
            nacked: 0,
            nack_window: (now, 0, 0),
            rtt_floor_ms: None,
            high_rtt: 0,
            mild_loss: 0,
            lost_before: false,
            clean_since: now,
            last_switch: now,
            probe: None,
            failed_probes: 0,
            climbing: false,
            estimate_bps: None,
            probe_aftermath: None,
            send_rate: SendRate::new(now),
            last_remb: None,
            stepping_down: false,
            remb_short_since: None,
        }
    }

    /// The rung the viewer is on now (after a switch it asked for is made).
    pub fn set_rung(&mut self, rung: usize, now: Instant) {
        self.stepping_down = false;
        if rung != self.rung {
            self.climbing = rung < self.rung && self.failed_probes == 0;
            self.rung = rung;
            self.last_switch = now;
            self.clean_since = now;
            self.mild_loss = 0;
            self.high_rtt = 0;
            self.probe = None;
            self.remb_short_since = None;
        }
    }

    /// The estimated capacity of the link for video, bits/s, if known.
    pub fn estimate_bps(&self) -> Option<f64> {
        self.estimate_bps
    }

    /// Whether the link, as last estimated, carries well under the current
    /// rung ([`OVERLOAD`]).
    pub fn overloaded(&self) -> bool {
        let rung = self.bitrates[self.rung] as f64;
        self.estimate_bps.is_some_and(|e| e < rung * OVERLOAD)
    }

    /// How long the link's queue holds a packet: what of the round trip
    /// `rtt` (the last report's) is over its floor.
    pub fn queue_delay(&self, rtt: Option<Duration>) -> Duration {
        let over = rtt
            .zip(self.rtt_floor_ms)
            .map_or(0.0, |(r, f)| (r.as_secs_f64() * 1000.0 - f).max(0.0));
        Duration::from_secs_f64(over / 1000.0)
    }

    /// A media packet of `bytes` went to the viewer.
    pub fn sent(&mut self, bytes: usize, now: Instant) {
        self.send_rate.add(bytes, now);
        self.sent_bytes += bytes as u64;
        self.sent_packets += 1;
        self.roll(now);
        self.nack_window.1 += 1;
    }

    /// Starts a new short NACK window once the last is over.
    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.nack_window.0) > NACK_WINDOW {
            self.nack_window = (now, 0, 0);
        }
    }

    /// The viewer asked again for `n` packets sent since the last probe
    /// began: the probe fails, and the loss is put down to it.
    pub fn nacked_in_probe(&mut self, n: usize, now: Instant) {
        self.nacked += n as u64;
        self.clean_since = now;
        self.climbing = false;
        self.refuse_probe(now);
    }

    /// The viewer asked for `n` packets again (not counting those it asks
    /// for again while their resend may still be on its way).
    pub fn nacked(&mut self, n: usize, now: Instant) -> Step {
        self.nacked += n as u64;
        self.refuse_probe(now);
        self.roll(now);
        self.nack_window.2 += n as u64;
        let (_, sent, lost) = self.nack_window;
        self.clean_since = now;
        self.climbing = false;
        // Right after a switch, NACKs are still about the rung before it.
        // (Those a probe caused come through `nacked_in_probe`.)
        let settling = now.duration_since(self.last_switch) < SETTLE;
        if !settling && lost >= NACK_BURST && lost as f64 >= HEAVY_LOSS * 2.0 * sent.max(1) as f64 {
            self.nack_window = (now, 0, 0);
            tracing::debug!(sent, lost, "NACK burst");
            let share = (lost as f64 / (sent + lost).max(1) as f64).min(0.9);
            // What got through is what the link carries now: the rung it
            // fits, and whether the current one stops at once.
            if let Some(sent_bps) = self.send_rate.bps(now) {
                self.estimate_bps = Some(sent_bps * (1.0 - share));
            }
            return self.lossy(share, now, "NACK burst");
        }
        Step::Stay
    }

    /// The link has no room for the probe under way: it fails now, and
    /// its aftermath (the loss and delay it caused) starts now, so that
    /// what the link shows after it counts again soon (a link that shrank
    /// during a probe must not hide behind it until the next report).
    fn refuse_probe(&mut self, now: Instant) {
        if self.probe.is_some() {
            let _ = self.verdict(false, now);
        }
    }

    /// Whether loss now is the last probe's doing: one is under way or
    /// waits for its verdict, or its loss may still be showing.
    pub fn after_probe(&self, now: Instant) -> bool {
        self.probe.is_some() || self.probe_aftermath.is_some_and(|t| now < t)
    }

    /// The viewer's estimate of what its link carries (REMB), bits/s. One
    /// that fell to well under what it is sent, and stays there: down to
    /// the rung that fits it, before the queue it speaks of overflows into
    /// loss. A falling one fails a probe under way.
    pub fn remb(&mut self, bps: f64, now: Instant) -> Step {
        let falling = self.last_remb.is_some_and(|last| bps < last * REMB_FALL);
        if falling {
            // While it sees its delay grow a viewer estimates on every
            // packet: trace, not one line per event.
            tracing::trace!(
                kbps = bps / 1000.0,
                sent_kbps = self.send_rate.bps(now).map(|b| b / 1000.0),
                "the viewer's estimate fell"
            );
        }
        self.last_remb = Some(bps);
        if falling {
            self.refuse_probe(now);
        }
        let short = self
            .send_rate
            .bps(now)
            .filter(|sent| bps < sent * REMB_SHORTFALL);
        let Some(sent) = short else {
            self.remb_short_since = None;
            return Step::Stay;
        };
        // A probe's queue makes the estimate fall to a share of what the
        // viewer takes in: not of the probe's duplicates, which SRTP's
        // replay check drops before any estimate (aiortc), so well under
        // what is sent. It fails the probe (above) and moves no rung.
        let settling = now.duration_since(self.last_switch) < SETTLE;
        if settling || self.after_probe(now) {
            self.remb_short_since = None;
            return Step::Stay;
        }
        // A short estimate counts from one that fell: one that is only
        // climbing after a step up (a receiver raises its estimate a few
        // per cent a second from what it got) says nothing of the link.
        if falling && self.remb_short_since.is_none() {
            self.remb_short_since = Some(now);
        }
        let Some(since) = self.remb_short_since else {
            return Step::Stay;
        };
        if now.duration_since(since) < REMB_CONFIRM {
            return Step::Stay;
        }
        self.remb_short_since = None;
        self.estimate_bps = Some(bps);
        self.clean_since = now;
        self.climbing = false;
        let to = self
            .fitting(bps)
            .max(self.rung + 1)
            .min(self.bitrates.len() - 1);
        if to == self.rung {
            return Step::Stay;
        }
        self.down(
            to,
            format!(
                "its estimate of {:.0} kb/s is under the {:.0} kb/s sent",
                bps / 1000.0,
                sent / 1000.0
            ),
        )
    }

    /// The send queue toward the viewer overflowed (an ICE-TCP stream).
    pub fn overflowed(&mut self, now: Instant) -> Step {
        self.clean_since = now;
        self.down_one(now, "its send queue overflowed".to_owned())
    }

    /// A receiver report on the track.
    pub fn report(&mut self, r: Report, now: Instant) -> Step {
        let lost = r.lost;
        // When the sender report it answers went out.
        let sr_sent = r.sr_age.and_then(|age| now.checked_sub(age));
        let rtt_ms = r.rtt.map(|d| d.as_secs_f64() * 1000.0);
        let secs = now.duration_since(self.window_start).as_secs_f64();
        let send_bps = if secs > 0.05 {
            self.sent_bytes as f64 * 8.0 / secs
        } else {
            0.0
        };
        let nack_share = self.nacked as f64 / self.sent_packets.max(1) as f64;
        self.window_start = now;
        self.sent_bytes = 0;
        self.sent_packets = 0;
        self.nacked = 0;
        let settling = now.duration_since(self.last_switch) < SETTLE;
        // The report's own figure first; NACKs (which a receiver may repeat,
        // and a probe's duplicates keep out of its report) count for at most
        // half.
        let loss = lost.max(nack_share.min(0.5));
        if let Some(p) = self.probe
            && now.duration_since(p.started) >= PROBE_LENGTH
        {
            // Judged by the round trip of the sender report sent as it
            // ended, while its queue (if any) was on the path; a report on
            // a later one comes after that queue drained, and tells nothing.
            let end = p.started + PROBE_LENGTH;
            match sr_sent {
                Some(t) if t + PROBE_SR_SLACK < end => {}
                Some(t) if t > end + PROBE_SR_LATE => {
                    self.probe = None;
                    self.probe_aftermath = Some(now + PROBE_AFTERMATH);
                    return Step::Stay;
                }
                _ => {
                    let floor = self.rtt_floor_ms.unwrap_or(f64::MAX);
                    let rise = PROBE_RTT_RISE.as_secs_f64() * 1000.0;
                    let queued = rtt_ms.is_some_and(|r| r > floor + rise);
                    tracing::debug!(
                        rtt_ms,
                        floor_ms = floor,
                        lost,
                        sr_after_end_ms =
                            sr_sent.map(|t| t.saturating_duration_since(end).as_millis() as u64),
                        sent_bytes = p.sent_bytes,
                        "probe judged"
                    );
                    return self.verdict(!queued && lost < MILD_LOSS, now);
                }
            }
        }
        if settling || self.after_probe(now) {
            return Step::Stay;
        }
        // Heavy loss in one report, with no queue on the path and none in
        // the report before, may be the viewer's own host (a starved
        // receiver drops what its socket cannot hold): it takes a second
        // report, or a round trip that grew, to move.
        let queue_grew = rtt_ms
            .zip(self.rtt_floor_ms)
            .is_some_and(|(r, f)| r > f + CORROBORATING_RTT.as_secs_f64() * 1000.0);
        let lost_before = std::mem::replace(&mut self.lost_before, loss >= MILD_LOSS);
        if loss >= HEAVY_LOSS && send_bps > 0.0 && (queue_grew || lost_before) {
            self.estimate_bps = Some(send_bps * (1.0 - loss));
            return self.lossy(loss, now, "loss");
        }
        if loss >= MILD_LOSS {
            self.clean_since = now;
            self.climbing = false;
            if self.probe.take().is_some() {
                self.failed_probes += 1;
            }
            self.mild_loss += 1;
            if self.mild_loss >= 2 {
                self.mild_loss = 0;
                return self.down_one(now, format!("loss {:.0}% in two reports", loss * 100.0));
            }
        } else {
            self.mild_loss = 0;
        }
        let fresh = sr_sent.is_none_or(|t| t >= self.last_switch);
        if let Some(rtt) = rtt_ms.filter(|_| fresh) {
            let floor = self.rtt_floor_ms.map_or(rtt, |f| f.min(rtt));
            self.rtt_floor_ms = Some(floor);
            if rtt > floor + RTT_GROWTH.as_secs_f64() * 1000.0 {
                self.clean_since = now;
                self.high_rtt += 1;
                if self.high_rtt >= 2 {
                    self.high_rtt = 0;
                    return self.down_one(
                        now,
                        format!("round trip grew from {floor:.0} to {rtt:.0} ms"),
                    );
                }
            } else {
                self.high_rtt = 0;
            }
            if rtt > floor + CORROBORATING_RTT.as_secs_f64() * 1000.0 {
                // A queue still on the path (a switch down drains it):
                // no probe adds to it yet.
                self.clean_since = now;
            }
        }
        if loss < MILD_LOSS && self.probe.is_none() && !self.stepping_down {
            // What the link carried cleanly is a floor of its capacity
            // (not while a step down waits: the link shrank).
            let carried = send_bps.max(self.estimate_bps.unwrap_or(0.0));
            self.estimate_bps = Some(carried.max(self.bitrates[self.rung] as f64));
        }
        Step::Stay
    }

    /// Heavy loss: down to the best rung that fits what got through.
    fn lossy(&mut self, loss: f64, now: Instant, what: &str) -> Step {
        self.clean_since = now;
        self.climbing = false;
        if self.probe.take().is_some() {
            self.failed_probes += 1;
        }
        let fits = self
            .estimate_bps
            .map_or(self.rung + 1, |cap| self.fitting(cap));
        let to = fits.max(self.rung + 1).min(self.bitrates.len() - 1);
        if to == self.rung {
            return Step::Stay;
        }
        self.down(to, format!("{what} {:.0}%", loss * 100.0))
    }

    fn down_one(&mut self, now: Instant, reason: String) -> Step {
        self.clean_since = now;
        let to = (self.rung + 1).min(self.bitrates.len() - 1);
        if to == self.rung {
            return Step::Stay;
        }
        self.down(to, reason)
    }

    /// Down to rung `to`. Until it is made, the rung being left is no
    /// floor of the link's estimate.
    fn down(&mut self, to: usize, reason: String) -> Step {
        self.stepping_down = true;
        Step::Switch { to, reason }
    }

    /// The best rung whose bitrate fits `capacity_bps` with headroom.
    fn fitting(&self, capacity_bps: f64) -> usize {
        self.bitrates
            .iter()
            .position(|&b| b as f64 <= capacity_bps * HEADROOM)
            .unwrap_or(self.bitrates.len() - 1)
    }

    /// Starts, ends and judges probes. Call it often (each pacing tick
    /// while probing, and on each report).
    pub fn tick(&mut self, now: Instant) -> Step {
        if let Some(p) = self.probe {
            if now.duration_since(p.started) >= PROBE_LENGTH + PROBE_VERDICT_WAIT {
                return self.verdict(true, now);
            }
            return Step::Stay;
        }
        let hold = if self.climbing {
            SETTLE
        } else {
            PROBE_HOLD
                .saturating_mul(1 << self.failed_probes.min(4))
                .min(PROBE_HOLD_MAX)
        };
        let quiet = now.duration_since(self.clean_since) >= hold
            && now.duration_since(self.last_switch) >= hold;
        if self.rung > 0 && quiet {
            let target = self.rung - 1;
            let extra = (self.bitrates[target] - self.bitrates[self.rung]) as f64 * 1.1;
            self.probe = Some(Probe {
                target,
                started: now,
                reported: false,
                extra_bps: extra,
                sent_bytes: 0,
            });
        }
        Step::Stay
    }

    /// The probe is over: up to its rung if the link took it.
    fn verdict(&mut self, passed: bool, now: Instant) -> Step {
        let Some(p) = self.probe.take() else {
            return Step::Stay;
        };
        if !passed {
            self.failed_probes += 1;
            self.clean_since = now;
            self.probe_aftermath = Some(now + PROBE_AFTERMATH);
            return Step::Stay;
        }
        self.failed_probes = 0;
        self.estimate_bps = Some(self.bitrates[p.target] as f64 / HEADROOM);
        let added_kbps = p.sent_bytes as f64 * 8.0 / PROBE_LENGTH.as_secs_f64() / 1000.0;
        Step::Switch {
            to: p.target,
            reason: format!(
                "a probe adding {added_kbps:.0} kb/s for {} ms drew no NACK and no queue",
                PROBE_LENGTH.as_millis()
            ),
        }
    }

    /// While a probe adds its rate: how many more bytes of duplicates it
    /// may send by `now`.
    pub fn probe_budget(&self, now: Instant) -> usize {
        let Some(p) = &self.probe else { return 0 };
        let elapsed = now.duration_since(p.started);
        if elapsed >= PROBE_LENGTH {
            return 0;
        }
        // The full extra rate for the whole probe: a link's burst allowance
        // (a shaper's bucket) takes a short or gentle one without a queue,
        // and would let a rung through that it cannot carry for long.
        let due = p.extra_bps / 8.0 * elapsed.as_secs_f64();
        (due as u64).saturating_sub(p.sent_bytes) as usize
    }

    /// Duplicates of `bytes` were sent for the probe.
    pub fn probed(&mut self, bytes: usize) {
        if let Some(p) = &mut self.probe {
            p.sent_bytes += bytes as u64;
        }
    }

    /// True once, when a probe has added its rate for its length: a sender
    /// report then measures the queue it built (the verdict's round trip).
    pub fn probe_ending(&mut self, now: Instant) -> bool {
        match &mut self.probe {
            Some(p) if !p.reported && now.duration_since(p.started) >= PROBE_LENGTH => {
                p.reported = true;
                true
            }
            _ => false,
        }
    }

    /// Whether a probe is adding its rate now (the track needs pacing
    /// ticks); it is judged later, by the next report.
    pub fn probing(&self, now: Instant) -> bool {
        self.probe
            .is_some_and(|p| now.duration_since(p.started) < PROBE_LENGTH || !p.reported)
    }
}

/// What went to a viewer over the last second, in tenths of it.
#[derive(Debug)]
struct SendRate {
    origin: Instant,
    /// The tenth the last byte fell in, counted from `origin`.
    tenth: u64,
    bytes: [u64; SendRate::TENTHS as usize],
}

impl SendRate {
    const TENTHS: u64 = 10;
    const TENTH: Duration = Duration::from_millis(100);

    fn new(now: Instant) -> Self {
        Self {
            origin: now,
            tenth: 0,
            bytes: [0; Self::TENTHS as usize],
        }
    }

    /// Moves on to `now`'s tenth, emptying the tenths passed.
    fn advance(&mut self, now: Instant) {
        let tenth = (now.saturating_duration_since(self.origin).as_millis()
            / Self::TENTH.as_millis()) as u64;
        if tenth >= self.tenth + Self::TENTHS {
            self.bytes = [0; Self::TENTHS as usize];
        } else {
            for t in self.tenth + 1..=tenth {
                self.bytes[(t % Self::TENTHS) as usize] = 0;
            }
        }
        self.tenth = self.tenth.max(tenth);
    }

    fn add(&mut self, bytes: usize, now: Instant) {
        self.advance(now);
        self.bytes[(self.tenth % Self::TENTHS) as usize] += bytes as u64;
    }

    /// Bits/s over the last second; None before a second has passed.
    fn bps(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        let elapsed = now.saturating_duration_since(self.origin);
        if elapsed < Self::TENTH * Self::TENTHS as u32 {
            return None;
        }
        // Nine whole tenths, and the part of this one gone by.
        let into = elapsed.as_secs_f64() % Self::TENTH.as_secs_f64();
        let span = Self::TENTH.as_secs_f64() * (Self::TENTHS - 1) as f64 + into;
        let total: u64 = self.bytes.iter().sum();
        Some(total as f64 * 8.0 / span.max(0.001))
    }
}

#[cfg(test)]
#[path = "adapt_tests.rs"]
mod tests;
