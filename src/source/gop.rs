//! The GOP cache of a video source: the packets from the last keyframe (its
//! SPS and PPS included) up to now, bounded in bytes and age, so a new
//! viewer can start decoding at once instead of waiting for the next IDR.

use crate::profile::CacheLimits;
use crate::rtp::RtpPacket;
use std::time::Instant;

/// What the cache holds, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CacheState {
    /// A complete GOP start is held.
    pub ready: bool,
    pub packets: usize,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct GopCache {
    limits: CacheLimits,
    packets: Vec<RtpPacket>,
    bytes: usize,
    started: Instant,
    /// False when there is no keyframe yet, or the GOP outgrew the limits.
    valid: bool,
}

impl GopCache {
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            packets: Vec::new(),
            bytes: 0,
            started: Instant::now(),
            valid: false,
        }
    }

    /// Takes one packet; `p.keyframe_start` begins a new GOP.
    pub fn push(&mut self, p: &RtpPacket, now: Instant) {
        if p.keyframe_start {
            self.packets.clear();
            self.bytes = 0;
            self.started = now;
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        let len = p.data.len();
        if self.bytes + len > self.limits.max_bytes
            || now.duration_since(self.started) > self.limits.max_age
        {
            self.valid = false;
            self.packets = Vec::new();
            self.bytes = 0;
            return;
        }
        self.bytes += len;
        self.packets.push(p.clone());
    }

    /// The cached GOP, oldest first; empty when there is none to give.
    pub fn snapshot(&self) -> Vec<RtpPacket> {
        if self.valid {
            self.packets.clone()
        } else {
            Vec::new()
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    pub fn state(&self) -> CacheState {
        CacheState {
            ready: self.valid && !self.packets.is_empty(),
            packets: self.packets.len(),
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn pkt(seq: u16, key: bool, len: usize) -> RtpPacket {
        RtpPacket {
            data: Bytes::from(vec![0u8; len]),
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 1,
            payload_offset: 12,
            payload_end: len,
            keyframe_start: key,
            received_at: None,
            after_drop: false,
        }
    }

    const LIMITS: CacheLimits = CacheLimits {
        max_bytes: 10_000,
        max_age: Duration::from_secs(5),
    };

    #[test]
    fn holds_from_the_last_keyframe() {
        let mut c = GopCache::new(LIMITS);
        let now = Instant::now();
        c.push(&pkt(1, false, 100), now);
        assert!(c.snapshot().is_empty(), "no keyframe yet");
        for (seq, key) in [(2, true), (3, false), (4, true), (5, false), (6, false)] {
            c.push(&pkt(seq, key, 100), now);
        }
        let seqs: Vec<u16> = c.snapshot().iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert_eq!(
            c.state(),
            CacheState {
                ready: true,
                packets: 3,
                bytes: 300
            }
        );
    }

    #[test]
    fn a_gop_over_the_byte_cap_is_dropped_until_the_next_keyframe() {
        let mut c = GopCache::new(LIMITS);
        let now = Instant::now();
        c.push(&pkt(1, true, 6000), now);
        c.push(&pkt(2, false, 6000), now);
        assert!(
            c.snapshot().is_empty(),
            "over the cap: a broken GOP must not be served"
        );
        c.push(&pkt(3, false, 10), now);
        assert!(c.snapshot().is_empty());
        c.push(&pkt(4, true, 10), now);
        assert_eq!(c.snapshot().len(), 1);
    }

    #[test]
    fn a_gop_older_than_the_age_cap_is_dropped() {
        let mut c = GopCache::new(LIMITS);
        let t0 = Instant::now();
        c.push(&pkt(1, true, 10), t0);
        c.push(&pkt(2, false, 10), t0 + Duration::from_secs(6));
        assert!(c.snapshot().is_empty());
        assert!(!c.state().ready);
    }
}
