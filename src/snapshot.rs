//! Snapshots: a stream's current picture as a JPEG, decoded from its GOP
//! cache (the cached keyframe and every frame since) by a short FFmpeg run,
//! so it answers at once whatever the GOP's length. One decode at a time per
//! stream: requests that arrive while one runs are given its picture, and a
//! picture younger than a frame interval is given again.

use crate::h264::Depacketizer;
use crate::rtp::RtpPacket;
use bytes::Bytes;
use serde::Serialize;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The frame interval assumed for a GOP of one frame...
const DEFAULT_INTERVAL: Duration = Duration::from_millis(33);
/// ...and the longest one believed (timestamps that jump are not).
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Why there is no picture.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no cached GOP now (no keyframe yet, or the GOP is over the cache's limits)")]
    NoGop,
    #[error("decoding the cached GOP failed: {0:#}")]
    Decode(anyhow::Error),
}

/// What snapshots of one stream cost, for /status and /metrics.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Pictures served.
    pub served: AtomicU64,
    /// FFmpeg runs.
    pub decodes: AtomicU64,
    pub failed: AtomicU64,
    /// The last decode's wall time.
    pub last_decode_us: AtomicU64,
}

/// [`SnapshotStats`] read once.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct SnapshotCounts {
    pub served: u64,
    pub decodes: u64,
    pub failed: u64,
    pub last_decode_ms: Option<f64>,
}

impl SnapshotStats {
    pub fn counts(&self) -> SnapshotCounts {
        let us = self.last_decode_us.load(Relaxed);
        SnapshotCounts {
            served: self.served.load(Relaxed),
            decodes: self.decodes.load(Relaxed),
            failed: self.failed.load(Relaxed),
            last_decode_ms: (us > 0).then(|| us as f64 / 1000.0),
        }
    }
}

struct Picture {
    jpeg: Bytes,
    width: Option<u32>,
    made: Instant,
    /// The stream's frame interval when it was made.
    interval: Duration,
}

/// One stream's snapshots: the last picture and its counters.
#[derive(Default)]
pub struct StreamSnapshots {
    last: tokio::sync::Mutex<Option<Picture>>,
    pub stats: SnapshotStats,
}

impl StreamSnapshots {
    /// The current picture, `width` wide when given: the last one if it was
    /// made after this request arrived or is younger than a frame interval,
    /// else a new decode of `gop()` (read once the decode before it is done),
    /// run once one of `decoders` is free.
    pub async fn take(
        &self,
        ffmpeg: &OsStr,
        width: Option<u32>,
        decoders: &tokio::sync::Semaphore,
        gop: impl FnOnce() -> Vec<RtpPacket>,
    ) -> Result<Bytes, SnapshotError> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(p) = last.as_ref().filter(|p| p.width == width)
            && (p.made >= asked || asked.duration_since(p.made) < p.interval)
        {
            self.stats.served.fetch_add(1, Relaxed);
            return Ok(p.jpeg.clone());
        }
        // Closed only if the process is going away.
        let _permit = decoders.acquire().await.map_err(|_| SnapshotError::NoGop)?;
        let gop = AccessUnits::of(&gop());
        if gop.frames == 0 {
            return Err(SnapshotError::NoGop);
        }
        self.stats.decodes.fetch_add(1, Relaxed);
        let started = Instant::now();
        let decoded = crate::ffmpeg::snapshot::decode(ffmpeg, gop.annexb, gop.frames, width).await;
        let jpeg = match decoded {
            Ok(j) => Bytes::from(j),
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                return Err(SnapshotError::Decode(e));
            }
        };
        let took = started.elapsed();
        self.stats
            .last_decode_us
            .store(took.as_micros().max(1) as u64, Relaxed);
        self.stats.served.fetch_add(1, Relaxed);
        tracing::debug!(
            frames = gop.frames,
            ms = took.as_secs_f64() * 1000.0,
            "snapshot decoded"
        );
        *last = Some(Picture {
            jpeg: jpeg.clone(),
            width,
            made: Instant::now(),
            interval: gop.interval,
        });
        Ok(jpeg)
    }
}

/// A GOP's H.264 as FFmpeg reads it: Annex B, its frame count and interval.
#[derive(Debug)]
struct AccessUnits {
    annexb: Vec<u8>,
    frames: usize,
    interval: Duration,
}

impl AccessUnits {
    /// Depacketizes the complete frames of a GOP (up to the last packet that
    /// ends one, with the marker bit: a frame still arriving is left out); a
    /// frame is a run of packets with one timestamp.
    fn of(packets: &[RtpPacket]) -> Self {
        let complete = match packets.iter().rposition(|p| p.marker) {
            Some(last) => &packets[..=last],
            None => packets, // a sender that marks no frame ends: all of it
        };
        let mut depack = Depacketizer::default();
        let mut annexb = Vec::new();
        let mut stamps: Vec<u32> = Vec::new();
        for p in complete {
            let Some(payload) = p.data.get(p.payload_offset..p.payload_end) else {
                continue;
            };
            depack.push(payload, &mut annexb);
            if stamps.last() != Some(&p.timestamp) {
                stamps.push(p.timestamp);
            }
        }
        let frames = stamps.len();
        let interval = match (stamps.first(), stamps.last()) {
            (Some(first), Some(last)) if frames > 1 => {
                let ticks = last.wrapping_sub(*first) as f64 / (frames - 1) as f64;
                Duration::from_secs_f64(ticks / 90_000.0).min(MAX_INTERVAL)
            }
            _ => DEFAULT_INTERVAL,
        };
        Self {
            annexb,
            frames,
            interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ts: u32, payload: &[u8]) -> RtpPacket {
        packet_m(ts, payload, false)
    }

    fn packet_m(ts: u32, payload: &[u8], marker: bool) -> RtpPacket {
        let mut data = vec![0x80, 102, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        data.extend_from_slice(payload);
        RtpPacket {
            data: Bytes::from(data.clone()),
            marker,
            payload_type: 102,
            sequence: 1,
            timestamp: ts,
            ssrc: 1,
            payload_offset: 12,
            payload_end: data.len(),
            keyframe_start: false,
            received_at: None,
            after_drop: false,
        }
    }

    #[test]
    fn a_gop_becomes_annex_b_frames() {
        let packets = [
            // STAP-A: SPS (type 7) and PPS (type 8).
            packet(0, &[24, 0, 2, 0x67, 1, 0, 2, 0x68, 2]),
            // An IDR in two FU-A fragments (start, end).
            packet(0, &[0x7c, 0x85, 0xaa]),
            packet_m(0, &[0x7c, 0x45, 0xbb], true),
            // Two more frames, single NAL units, 3000 ticks apart.
            packet_m(3000, &[0x41, 1, 1], true),
            // A payload that is no H.264: skipped.
            packet(6000, &[]),
            packet_m(6000, &[0x41, 2, 2], true),
            // A frame still arriving: left out.
            packet(9000, &[0x7c, 0x85, 0xdd]),
        ];
        let gop = AccessUnits::of(&packets);
        assert_eq!(gop.frames, 3);
        assert_eq!(gop.interval, Duration::from_secs_f64(3000.0 / 90_000.0));
        let units: Vec<&[u8]> = crate::h264::annexb_units(&gop.annexb).collect();
        assert_eq!(
            units,
            [
                &[0x67, 1][..],
                &[0x68, 2],
                &[0x65, 0xaa, 0xbb],
                &[0x41, 1, 1],
                &[0x41, 2, 2]
            ]
        );
        assert_eq!(AccessUnits::of(&[]).frames, 0);
        // Timestamps that jump are not believed: at most a second a frame.
        let jump = [
            packet_m(0, &[0x41, 1, 1], true),
            packet_m(u32::MAX / 2, &[0x41, 2, 2], true),
        ];
        assert_eq!(AccessUnits::of(&jump).interval, MAX_INTERVAL);
    }
}
