//! One viewer's own RTP numbering for one track: sequence numbers that run
//! on without gaps whatever the relay skipped, timestamps shifted by a
//! per-viewer offset that only ever moves forward, and a map back from each
//! sent number to the source packet, for retransmissions. Pure.

/// How many sent video packets can be looked up again: some 3 s of a
/// 2.5 Mb/s stream, longer than a NACK is worth answering.
pub const VIDEO_SLOTS: usize = 1024;
/// The same for audio (some 5 s of 20 ms packets).
pub const AUDIO_SLOTS: usize = 256;

/// One sent packet: its sequence number, its source's, its timestamp.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    in_seq: u16,
    ts: u32,
}

#[derive(Debug, Clone)]
pub struct Renumber {
    next_seq: u16,
    ts_offset: u32,
    last_out_ts: Option<u32>,
    slots: usize,
    /// By sent sequence number modulo `slots`; made at the first packet, so
    /// a viewer that never starts costs nothing.
    map: Vec<Sent>,
}

impl Renumber {
    /// Starts at sequence number `first_seq` and maps the source timestamp
    /// `first_in_ts` to `first_out_ts`; remembers the last `slots` (a power
    /// of two) for retransmissions.
    pub fn new(first_seq: u16, first_in_ts: u32, first_out_ts: u32, slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two() && slots > 1);
        Self {
            next_seq: first_seq,
            ts_offset: first_out_ts.wrapping_sub(first_in_ts),
            last_out_ts: None,
            slots,
            map: Vec::new(),
        }
    }

    /// Starts a new segment at source timestamp `in_ts` that must follow
    /// what was sent: when it would go back in time (a cached GOP replayed),
    /// it is placed `step` after the last sent timestamp instead.
    pub fn rebase(&mut self, in_ts: u32, step: u32) {
        let Some(last) = self.last_out_ts else { return };
        let out = in_ts.wrapping_add(self.ts_offset);
        // Serial-number comparison: is `out` at or before `last`?
        if out.wrapping_sub(last) as i32 <= 0 {
            self.ts_offset = last.wrapping_add(step).wrapping_sub(in_ts);
        }
    }

    /// Starts a new timeline at source timestamp `in_ts` (another source's,
    /// whose timestamps have nothing to do with the last one's): it is
    /// placed `step` after the last sent timestamp.
    pub fn continue_after(&mut self, in_ts: u32, step: u32) {
        if let Some(last) = self.last_out_ts {
            self.ts_offset = last.wrapping_add(step).wrapping_sub(in_ts);
        }
    }

    /// The sequence number the next packet is sent with.
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// The sequence number and timestamp to send a source packet with.
    pub fn next(&mut self, in_seq: u16, in_ts: u32) -> (u16, u32) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let ts = in_ts.wrapping_add(self.ts_offset);
        self.last_out_ts = Some(ts);
        if self.map.is_empty() {
            // Slot i starts with a number that no lookup of slot i asks for.
            self.map = (0..self.slots)
                .map(|i| Sent {
                    seq: (i as u16).wrapping_add(1),
                    in_seq: 0,
                    ts: 0,
                })
                .collect();
        }
        let slot = usize::from(seq) % self.slots;
        self.map[slot] = Sent { seq, in_seq, ts };
        (seq, ts)
    }

    /// For a sent sequence number still remembered: the source sequence
    /// number and the timestamp it was sent with.
    pub fn lookup(&self, out_seq: u16) -> Option<(u16, u32)> {
        let sent = self.map.get(usize::from(out_seq) % self.slots)?;
        (sent.seq == out_seq).then_some((sent.in_seq, sent.ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_timeline_runs_on_from_the_last_timestamp_sent() {
        let mut r = Renumber::new(100, 5_000, 9_000, 8);
        assert_eq!(r.next(1, 5_000), (100, 9_000));
        assert_eq!(r.next(2, 8_000), (101, 12_000));
        // Another source, whose clock is far ahead: it follows on.
        r.continue_after(4_000_000_000, 3_000);
        assert_eq!(r.next(77, 4_000_000_000), (102, 15_000));
        assert_eq!(r.next(78, 4_000_003_000), (103, 18_000));
        assert_eq!(r.next_seq(), 104);
    }

    #[test]
    fn numbers_run_on_across_skipped_source_packets() {
        let mut r = Renumber::new(65534, 1000, 50, VIDEO_SLOTS);
        assert_eq!(r.next(10, 1000), (65534, 50));
        assert_eq!(r.next(11, 4000), (65535, 3050));
        // Source packets 12-19 were skipped: no gap for the viewer.
        assert_eq!(r.next(20, 7000), (0, 6050));
        assert_eq!(r.lookup(0), Some((20, 6050)));
        assert_eq!(r.lookup(65535), Some((11, 3050)));
        assert_eq!(r.lookup(1), None, "not sent yet");
    }

    #[test]
    fn a_replayed_gop_is_moved_after_what_was_sent() {
        let mut r = Renumber::new(0, 90_000, 0, VIDEO_SLOTS);
        r.next(1, 90_000);
        r.next(2, 93_000); // sent up to out_ts 3000
        // Replay from a keyframe at 60_000, before what was sent.
        r.rebase(60_000, 3000);
        assert_eq!(r.next(3, 60_000), (2, 6000));
        assert_eq!(r.next(4, 63_000), (3, 9000));
        // A later keyframe needs no move: time just runs on.
        r.rebase(200_000, 3000);
        assert_eq!(r.next(5, 200_000).1, 146_000);
    }

    #[test]
    fn rebase_handles_timestamp_wrap() {
        let mut r = Renumber::new(0, u32::MAX - 1000, u32::MAX - 1000, VIDEO_SLOTS);
        r.next(1, u32::MAX - 1000);
        r.next(2, 2000); // wrapped forward: fine
        r.rebase(1000, 3000); // before 2000: moved after it
        assert_eq!(r.next(3, 1000).1, 5000);
    }

    #[test]
    fn the_map_forgets_after_its_window() {
        let mut r = Renumber::new(0, 0, 0, AUDIO_SLOTS);
        assert_eq!(r.lookup(0), None, "nothing sent");
        r.next(7, 0);
        // Slot 1 holds its initial marker: no number asks for it.
        for seq in [1, 1 + AUDIO_SLOTS as u16, 2] {
            assert_eq!(r.lookup(seq), None);
        }
        for i in 1..(AUDIO_SLOTS as u16 + 10) {
            r.next(i, 0);
        }
        assert_eq!(r.lookup(5), None);
        assert_eq!(
            r.lookup(AUDIO_SLOTS as u16 + 5),
            Some((AUDIO_SLOTS as u16 + 5, 0))
        );
    }
}
