//! RTP datagrams as they arrive from FFmpeg: telling media from RTCP and
//! garbage, and reading the few header fields the relay needs.
//!
//! Pure functions over bytes; nothing here can panic on any input.

use bytes::Bytes;

/// The fixed RTP header length (RFC 3550 §5.1).
const FIXED_HEADER: usize = 12;

/// An RTP packet whose header has been checked. The datagram is kept whole;
/// the payload is the slice `payload_offset..payload_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub data: Bytes,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload_offset: usize,
    pub payload_end: usize,
    /// The first packet of a keyframe (set by a video source, which parses
    /// the payload once for all viewers).
    pub keyframe_start: bool,
    /// When the source received it, for the packets sampled for latency.
    pub received_at: Option<std::time::Instant>,
    /// Set on one subscriber's copy: the source dropped packets for that
    /// subscriber (its queue was full) just before this one. A gap in the
    /// sequence numbers alone may be loss before the source, which every
    /// viewer shares and no resync can mend.
    pub after_drop: bool,
}

impl RtpPacket {
    pub fn payload(&self) -> Bytes {
        self.data.slice(self.payload_offset..self.payload_end)
    }
}

/// What a datagram on a source port turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    Rtp(RtpPacket),
    /// An RTCP packet (payload type byte 200..=204), e.g. FFmpeg's sender reports.
    Rtcp,
    /// Anything else, with why it was refused.
    Garbage(&'static str),
}

/// Classifies one datagram.
pub fn classify(data: Bytes) -> Datagram {
    if data.len() < 2 {
        return Datagram::Garbage("shorter than an RTP header");
    }
    if data[0] >> 6 != 2 {
        return Datagram::Garbage("not RTP version 2");
    }
    if (200..=204).contains(&data[1]) {
        return Datagram::Rtcp;
    }
    match parse_header(&data) {
        Ok(h) => Datagram::Rtp(RtpPacket {
            marker: data[1] & 0x80 != 0,
            payload_type: data[1] & 0x7f,
            sequence: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload_offset: h.payload_offset,
            payload_end: h.payload_end,
            keyframe_start: false,
            received_at: None,
            after_drop: false,
            data,
        }),
        Err(why) => Datagram::Garbage(why),
    }
}

/// The extended (32-bit-and-up) sequence numbers of one RTP stream as a
/// receiver sees them: each 16-bit number is placed in the cycle nearest the
/// highest seen so far, so wraps and late packets both land right.
#[derive(Default, Debug, Clone)]
pub struct SeqRange {
    first: Option<u64>,
    highest: u64,
}

impl SeqRange {
    /// Places `seq`; returns its extended number.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(_) = self.first else {
            // One cycle up, so that a late packet from before the first
            // still has a number below it.
            let ext = u64::from(seq) + (1 << 16);
            self.first = Some(ext);
            self.highest = ext;
            return ext;
        };
        let h = self.highest;
        let candidate = (h & !0xffff) | u64::from(seq);
        let ext = [
            candidate.wrapping_sub(1 << 16),
            candidate,
            candidate + (1 << 16),
        ]
        .into_iter()
        .min_by_key(|c| c.abs_diff(h))
        .unwrap_or(candidate);
        self.highest = h.max(ext);
        ext
    }

    /// How many packets the range from the first to the highest spans.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest.saturating_sub(f) + 1)
    }
}

struct Layout {
    payload_offset: usize,
    payload_end: usize,
}

fn parse_header(data: &[u8]) -> Result<Layout, &'static str> {
    if data.len() < FIXED_HEADER {
        return Err("shorter than an RTP header");
    }
    let csrc_count = usize::from(data[0] & 0x0f);
    let mut offset = FIXED_HEADER + 4 * csrc_count;
    if data[0] & 0x10 != 0 {
        let ext = data
            .get(offset..offset + 4)
            .ok_or("truncated header extension")?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
    }
    if offset > data.len() {
        return Err("header longer than the packet");
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        let pad = usize::from(data[end - 1]);
        if pad == 0 || offset + pad > end {
            return Err("bad padding");
        }
        end -= pad;
    }
    if offset == end {
        return Err("no payload");
    }
    Ok(Layout {
        payload_offset: offset,
        payload_end: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, pt: u8, extra: &[u8]) -> Bytes {
        let mut v = vec![
            first, pt, 0x12, 0x34, 0, 0, 0x03, 0xe8, 0xde, 0xad, 0xbe, 0xef,
        ];
        v.extend_from_slice(extra);
        Bytes::from(v)
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap() {
        let mut r = SeqRange::default();
        assert_eq!(r.expected(), 0);
        let ext: Vec<u64> = [65534u16, 65535, 0, 1, 65533]
            .into_iter()
            .map(|s| r.extend(s))
            .collect();
        assert_eq!(ext[2] - ext[1], 1, "0 follows 65535");
        assert_eq!(ext[1] - ext[4], 2, "a late 65533 stays before 65535");
        assert_eq!(r.expected(), 4, "65534..=1");
    }

    #[test]
    fn reads_a_plain_rtp_packet() {
        let Datagram::Rtp(p) = classify(packet(0x80, 0x80 | 102, &[1, 2, 3])) else {
            panic!("not RTP")
        };
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (102, 0x1234, 1000, 0xdeadbeef)
        );
        assert_eq!(&p.payload()[..], &[1, 2, 3]);
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        let mut extra = vec![0; 4]; // one CSRC
        extra.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        extra.extend_from_slice(&[7, 8, 0, 2]); // payload 7 8, two bytes of padding
        let Datagram::Rtp(p) = classify(packet(0x80 | 0x20 | 0x10 | 1, 96, &extra)) else {
            panic!("not RTP")
        };
        assert_eq!(&p.payload()[..], &[7, 8]);
    }

    #[test]
    fn recognises_rtcp() {
        for pt in 200..=204 {
            assert_eq!(classify(packet(0x80, pt, &[0; 16])), Datagram::Rtcp);
        }
    }

    #[test]
    fn refuses_garbage() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80",
            b"hello world, this is not rtp",
            &[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x8f, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[
                0x90, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
            ],
            &[0xa0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9],
            &[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ];
        for c in cases {
            assert!(
                matches!(classify(Bytes::copy_from_slice(c)), Datagram::Garbage(_)),
                "{c:?} was accepted"
            );
        }
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Every prefix of a tricky packet, and every first byte.
        let base = packet(
            0xb1,
            96,
            &[0, 0, 0, 0, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 5, 6, 7, 3],
        );
        for n in 0..=base.len() {
            for first in 0..=255u8 {
                let mut v = base[..n].to_vec();
                if let Some(b) = v.first_mut() {
                    *b = first;
                }
                let _ = classify(Bytes::from(v));
            }
        }
    }
}
