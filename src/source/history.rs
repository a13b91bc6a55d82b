//! The recent packets of a source by sequence number, shared by all its
//! viewers, so a retransmission request is answered from one copy.

use crate::rtp::RtpPacket;
use std::sync::Mutex;

/// Slots in the ring: a power of two, some 4 s of 2.5 Mb/s video.
pub const HISTORY_SLOTS: usize = 1024;

pub struct History {
    slots: Mutex<Vec<Option<RtpPacket>>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            slots: Mutex::new(vec![None; HISTORY_SLOTS]),
        }
    }
}

impl History {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<RtpPacket>>> {
        // A slot write cannot be left half done: poison carries no risk.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, p: &RtpPacket) {
        let i = usize::from(p.sequence) % HISTORY_SLOTS;
        self.slots()[i] = Some(p.clone());
    }

    /// The packet with sequence number `seq`, if still held.
    pub fn get(&self, seq: u16) -> Option<RtpPacket> {
        let i = usize::from(seq) % HISTORY_SLOTS;
        self.slots()[i]
            .as_ref()
            .filter(|p| p.sequence == seq)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(seq: u16) -> RtpPacket {
        RtpPacket {
            data: Bytes::from_static(&[0; 13]),
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 1,
            payload_offset: 12,
            payload_end: 13,
            keyframe_start: false,
            received_at: None,
            after_drop: false,
        }
    }

    #[test]
    fn keeps_the_latest_window_only() {
        let h = History::default();
        for seq in 0..2000u16 {
            h.put(&pkt(seq));
        }
        assert_eq!(h.get(1999).map(|p| p.sequence), Some(1999));
        assert_eq!(
            h.get(2000 - HISTORY_SLOTS as u16).map(|p| p.sequence),
            Some(976)
        );
        assert!(h.get(500).is_none(), "overwritten");
    }
}
