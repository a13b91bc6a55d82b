//! The RTCP sender reports of a connection of ffwhep's own (what `rtc`'s
//! report interceptor writes today): per track, the last timestamp change
//! and what was sent; a report a second after the first packet and every
//! second after. And the round-trip time from a receiver's report block.
//! Pure: time (monotonic and wall) is passed in.

use rtc::rtcp::sender_report::SenderReport;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a track reports.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Seconds from the NTP epoch (1900) to the Unix one (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// One track's sender-report state.
pub(crate) struct SenderClock {
    ssrc: u32,
    clock_rate: u32,
    /// The last in-order timestamp change: (timestamp, sequence number, when).
    last: Option<(u32, u16, Instant)>,
    packets: u32,
    octets: u32,
    next: Option<Instant>,
}

impl SenderClock {
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate,
            last: None,
            packets: 0,
            octets: 0,
            next: None,
        }
    }

    /// A packet was sent (retransmissions too: they count as sent).
    pub fn sent(&mut self, seq: u16, ts: u32, payload: usize, now: Instant) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload as u32);
        let newer = self.last.is_none_or(|(last_ts, last_seq, ..)| {
            let ahead = seq.wrapping_sub(last_seq);
            ahead != 0 && ahead < 0x8000 && ts != last_ts
        });
        if newer {
            self.last = Some((ts, seq, now));
        }
        self.next.get_or_insert(now + REPORT_EVERY);
    }

    /// The next report is due now (a probe's end wants its round trip).
    pub fn due_now(&mut self, now: Instant) {
        if self.last.is_some() {
            self.next = Some(now);
        }
    }

    /// When the next report is due (none before the first packet).
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// The report, when one is due at `now`.
    pub fn report(&mut self, now: Instant, wall: SystemTime) -> Option<SenderReport> {
        let next = self.next.filter(|t| *t <= now)?;
        let (ts, _, at) = self.last?;
        self.next = Some((next + REPORT_EVERY).max(now));
        let since = now.saturating_duration_since(at).as_secs_f64();
        Some(SenderReport {
            ssrc: self.ssrc,
            ntp_time: ntp(wall),
            rtp_time: ts.wrapping_add((since * f64::from(self.clock_rate)) as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

/// `wall` as a 64-bit NTP timestamp (32.32 fixed point since 1900).
pub(crate) fn ntp(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The round trip from a report block (RFC 3550 §6.4.1): arrival (the
/// middle 32 bits of `now_ntp`) minus the last SR's stamp (`lsr`) minus
/// the receiver's delay since (`dlsr`), both in 1/65536 s. None without an
/// SR to refer to, or for a result that cannot be (over a minute).
pub(crate) fn rtt(now_ntp: u64, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let arrival = (now_ntp >> 16) as u32;
    let units = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    (units < 60 << 16).then(|| Duration::from_secs_f64(f64::from(units) / 65536.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_comes_a_second_after_the_first_packet_and_maps_the_clock() {
        let t0 = Instant::now();
        let w0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut c = SenderClock::new(42, 90_000);
        assert_eq!(c.due(), None);
        assert!(c.report(t0, w0).is_none(), "nothing sent, nothing to say");
        c.sent(10, 9000, 1000, t0);
        c.sent(11, 9000, 500, t0); // same frame
        c.sent(9, 6000, 100, t0); // late: counted, not a clock point
        assert_eq!(c.due(), Some(t0 + REPORT_EVERY));
        assert!(c.report(t0 + Duration::from_millis(999), w0).is_none());
        let at = t0 + REPORT_EVERY;
        let wall = w0 + REPORT_EVERY;
        let sr = c.report(at, wall).unwrap();
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (42, 3, 1600));
        assert_eq!(sr.rtp_time, 9000 + 90_000, "the timestamp one second on");
        assert_eq!(sr.ntp_time >> 32, 1_700_000_001 + NTP_UNIX_OFFSET);
        assert_eq!(c.due(), Some(at + REPORT_EVERY));
    }

    #[test]
    fn the_round_trip_comes_from_the_report_block() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sent = ntp(wall);
        let lsr = (sent >> 16) as u32;
        // The receiver held it 0.5 s; it arrives 0.55 s after it left.
        let now = ntp(wall + Duration::from_millis(550));
        let rtt = rtt(now, lsr, 65536 / 2).unwrap();
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
        assert_eq!(super::rtt(now, 0, 0), None, "no SR referred to");
        assert_eq!(super::rtt(now, lsr, 65536), None, "a negative round trip");
    }
}
