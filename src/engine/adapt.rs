//! Which rendition of a ladder one viewer's link can carry, from what the
//! link shows: loss in the viewer's receiver reports, the share of packets
//! it asks for again (NACK), its round trip growing past its floor, its
//! send queue overflowing. Going up is tested first: a probe sends
//! duplicates of packets the viewer already has (which it drops), adding
//! the next rung's extra rate for a moment; a NACK during it means the link
//! has no room. Pure: every call takes `now` from its caller.

use std::time::{Duration, Instant};

/// Loss at or above this in a report: the link cannot carry the rung.
const HEAVY_LOSS: f64 = 0.10;
/// Loss at or above this in two reports running: one rung down.
const MILD_LOSS: f64 = 0.03;
/// A rung is chosen to use at most this share of the estimated capacity.
const HEADROOM: f64 = 0.85;
/// The round trip this far above its floor in two reports running (a
/// queue building up on the path): one rung down.
const RTT_GROWTH: Duration = Duration::from_millis(150);
/// Reports this soon after a switch still describe the rung before it
/// (and the queue it left on the path).
const SETTLE: Duration = Duration::from_millis(2000);
/// A clean link this long (more after failed probes, up to the max; less
/// right after a probe went through) before a probe.
const PROBE_HOLD: Duration = Duration::from_secs(2);
const PROBE_HOLD_MAX: Duration = Duration::from_secs(4);
/// How long a probe adds its rate, and how long after it a NACK still
/// counts against it.
const PROBE_LENGTH: Duration = Duration::from_millis(1000);
const PROBE_GRACE: Duration = Duration::from_millis(300);
/// NACKs within one short window, as a share of what was sent, that mean
/// heavy loss before any report says so.
const NACK_WINDOW: Duration = Duration::from_millis(300);
const NACK_BURST: u64 = 8;

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
    extra_bps: f64,
    sent_bytes: u64,
    nacked: bool,
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
            clean_since: now,
            last_switch: now,
            probe: None,
            failed_probes: 0,
            climbing: false,
            estimate_bps: None,
        }
    }

    /// The rung the viewer is on now (after a switch it asked for is made).
    pub fn set_rung(&mut self, rung: usize, now: Instant) {
        if rung != self.rung {
            self.climbing = rung < self.rung && self.failed_probes == 0;
            self.rung = rung;
            self.last_switch = now;
            self.clean_since = now;
            self.mild_loss = 0;
            self.high_rtt = 0;
            self.probe = None;
        }
    }

    /// The estimated capacity of the link for video, bits/s, if known.
    pub fn estimate_bps(&self) -> Option<f64> {
        self.estimate_bps
    }

    /// A media packet of `bytes` went to the viewer.
    pub fn sent(&mut self, bytes: usize, now: Instant) {
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

    /// The viewer asked for `n` packets again (not counting those it asks
    /// for again while their resend may still be on its way).
    pub fn nacked(&mut self, n: usize, now: Instant) -> Step {
        self.nacked += n as u64;
        if let Some(p) = &mut self.probe {
            p.nacked = true;
        }
        self.roll(now);
        self.nack_window.2 += n as u64;
        let (_, sent, lost) = self.nack_window;
        self.clean_since = now;
        self.climbing = false;
        // Right after a switch, NACKs are still about the rung before it.
        let settling = now.duration_since(self.last_switch) < SETTLE;
        if !settling && lost >= NACK_BURST && lost as f64 >= HEAVY_LOSS * 2.0 * sent.max(1) as f64 {
            self.nack_window = (now, 0, 0);
            let share = (lost as f64 / (sent + lost).max(1) as f64).min(0.9);
            return self.lossy(share, now, "NACK burst");
        }
        Step::Stay
    }

    /// The send queue toward the viewer overflowed (an ICE-TCP stream).
    pub fn overflowed(&mut self, now: Instant) -> Step {
        self.clean_since = now;
        self.down_one(now, "its send queue overflowed".to_owned())
    }

    /// A receiver report on the track: the share lost since the last one
    /// (0 to 1) and the round trip, if known.
    pub fn report(&mut self, lost: f64, rtt_ms: Option<f64>, now: Instant) -> Step {
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
        if settling {
            return Step::Stay;
        }
        if loss >= HEAVY_LOSS && send_bps > 0.0 {
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
        if let Some(rtt) = rtt_ms {
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
        }
        if loss < MILD_LOSS && self.probe.is_none() {
            // What the link carried cleanly is a floor of its capacity.
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
        Step::Switch {
            to,
            reason: format!("{what} {:.0}%", loss * 100.0),
        }
    }

    fn down_one(&mut self, now: Instant, reason: String) -> Step {
        self.clean_since = now;
        let to = (self.rung + 1).min(self.bitrates.len() - 1);
        if to == self.rung {
            return Step::Stay;
        }
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
            if now.duration_since(p.started) < PROBE_LENGTH + PROBE_GRACE && !p.nacked {
                return Step::Stay;
            }
            self.probe = None;
            if p.nacked {
                self.failed_probes += 1;
                return Step::Stay;
            }
            self.failed_probes = 0;
            self.estimate_bps = Some(self.bitrates[p.target] as f64 / HEADROOM);
            let added_kbps = p.sent_bytes as f64 * 8.0 / PROBE_LENGTH.as_secs_f64() / 1000.0;
            return Step::Switch {
                to: p.target,
                reason: format!(
                    "a probe adding {added_kbps:.0} kb/s for {} ms drew no NACK",
                    PROBE_LENGTH.as_millis()
                ),
            };
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
                extra_bps: extra,
                sent_bytes: 0,
                nacked: false,
            });
        }
        Step::Stay
    }

    /// While a probe adds its rate: how many more bytes of duplicates it
    /// may send by `now`.
    pub fn probe_budget(&self, now: Instant) -> usize {
        let Some(p) = &self.probe else { return 0 };
        let elapsed = now.duration_since(p.started);
        if elapsed >= PROBE_LENGTH || p.nacked {
            return 0;
        }
        let due = p.extra_bps / 8.0 * elapsed.as_secs_f64();
        (due as u64).saturating_sub(p.sent_bytes) as usize
    }

    /// Duplicates of `bytes` were sent for the probe.
    pub fn probed(&mut self, bytes: usize) {
        if let Some(p) = &mut self.probe {
            p.sent_bytes += bytes as u64;
        }
    }

    /// Whether a probe is under way (the track needs pacing ticks).
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }
}

#[cfg(test)]
#[path = "adapt_tests.rs"]
mod tests;
