//! What each viewer was sent and asked for, counted by the viewer's own
//! forwarders (no counter shared across viewers on the per-packet path).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one viewer was sent, as plain numbers that add up across viewers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SentTotals {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub nacks: u64,
    pub retransmitted: u64,
    pub keyframe_requests: u64,
    pub resyncs: u64,
    /// Switches of rendition on a ladder, to a better and a leaner one.
    pub switches_up: u64,
    pub switches_down: u64,
}

impl std::ops::AddAssign for SentTotals {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.dropped += o.dropped;
        self.nacks += o.nacks;
        self.retransmitted += o.retransmitted;
        self.keyframe_requests += o.keyframe_requests;
        self.resyncs += o.resyncs;
        self.switches_up += o.switches_up;
        self.switches_down += o.switches_down;
    }
}

impl ViewerCounters {
    pub fn totals(&self) -> SentTotals {
        SentTotals {
            packets: self.packets_sent.load(Relaxed),
            bytes: self.bytes_sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            nacks: self.nacks.load(Relaxed),
            retransmitted: self.retransmitted.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
            switches_up: self.switches_up.load(Relaxed),
            switches_down: self.switches_down.load(Relaxed),
        }
    }
}

/// Packets and bytes written toward one viewer, and packets dropped because
/// its queue was full. Each viewer counts only its own (no counter shared
/// across viewers on the per-packet path); stream totals are summed.
#[derive(Debug, Default)]
pub struct ViewerCounters {
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Packets the viewer asked to have again.
    pub nacks: AtomicU64,
    pub retransmitted: AtomicU64,
    /// PLI and FIR received.
    pub keyframe_requests: AtomicU64,
    /// Restarts from the GOP cache (or the next keyframe) after falling behind.
    pub resyncs: AtomicU64,
    /// On a ladder: the rung sent, plus one (0 without a ladder).
    pub rung: AtomicU64,
    /// Switches to a better rung, and to a leaner one.
    pub switches_up: AtomicU64,
    pub switches_down: AtomicU64,
    /// The link's estimated capacity for video, bits/s (0: not known yet).
    pub estimate_bps: AtomicU64,
    /// The viewer pinned its rung.
    pub pinned: std::sync::atomic::AtomicBool,
}
