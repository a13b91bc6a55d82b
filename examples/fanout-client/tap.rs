//! The reference tap: FFmpeg sends this client a third copy of every packet
//! (profiles/bench-fanout.yaml). The tap notes when each payload arrived, so
//! that a viewer receiving the same payload through a relay can tell the
//! relay's hop: its arrival minus the tap's, both on this process's clock.

use bytes::Bytes;
use ffwhep::rtp::{self, Datagram};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Arrivals older than this are forgotten (the clip loops every 20 s, so a
/// payload seen again later is a new packet). Only video is timed: a steady
/// tone's Opus frames repeat every few packets, a noisy picture's never.
const KEEP: Duration = Duration::from_secs(2);

/// A packet's identity across relays: its payload (length and first bytes),
/// which neither relay changes.
pub fn payload_key(payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.len().hash(&mut h);
    payload[..payload.len().min(64)].hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct Seen {
    /// When the tap saw each payload, oldest first in `order`.
    at: HashMap<u64, Instant>,
    order: VecDeque<(Instant, u64)>,
    /// Payloads a viewer got before the tap's copy was noted (the two
    /// arrive within microseconds, on different tasks), with when.
    early: HashMap<u64, Vec<Instant>>,
    early_order: VecDeque<(Instant, u64)>,
}

/// Hop times (µs, negative when the viewer's copy was noted first) of
/// sampled video packets, taken while `recording` is set.
#[derive(Default)]
pub struct Hops {
    pub recording: AtomicBool,
    samples: Mutex<Vec<i64>>,
    /// Sampled packets whose payload the tap never saw within 2 s.
    pub unmatched: AtomicU64,
}

impl Hops {
    /// (samples, p50 ms, p99 ms).
    pub fn percentiles(&self) -> (usize, Option<f64>, Option<f64>) {
        let mut v = self.samples.lock().unwrap().clone();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
            v.get(i).map(|&us| us as f64 / 1000.0)
        };
        (v.len(), at(0.5), at(0.99))
    }

    fn record(&self, from: Instant, to: Instant) {
        let us = if to >= from {
            to.duration_since(from).as_micros() as i64
        } else {
            -(from.duration_since(to).as_micros() as i64)
        };
        self.samples.lock().unwrap().push(us);
    }
}

/// What the tap has seen, shared with every viewer.
#[derive(Default)]
pub struct Tap {
    seen: Mutex<Seen>,
    /// Reference packets per kind (video, audio).
    pub packets: [AtomicU64; 2],
    pub hops: Hops,
}

impl Tap {
    /// Listens on the two tap ports (video, audio) until the process ends.
    pub async fn listen(self: &Arc<Self>, video_port: u16) -> anyhow::Result<()> {
        for (kind, port) in [(0, video_port), (1, video_port + 2)] {
            let sock = UdpSocket::bind(("127.0.0.1", port)).await?;
            let tap = self.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = sock.recv(&mut buf).await {
                    let now = Instant::now();
                    let Datagram::Rtp(p) = rtp::classify(Bytes::copy_from_slice(&buf[..n])) else {
                        continue; // FFmpeg's sender reports
                    };
                    tap.packets[kind].fetch_add(1, Relaxed);
                    if kind == 0 {
                        tap.note(payload_key(&p.payload()), now);
                    }
                }
            });
        }
        Ok(())
    }

    fn note(&self, key: u64, now: Instant) {
        let mut s = self.seen.lock().unwrap();
        if let Some(early) = s.early.remove(&key) {
            for at in early {
                self.hops.record(now, at);
            }
        }
        s.at.insert(key, now);
        s.order.push_back((now, key));
        while let Some(&(t, k)) = s.order.front() {
            if now.duration_since(t) < KEEP {
                break;
            }
            s.order.pop_front();
            if s.at.get(&k) == Some(&t) {
                s.at.remove(&k);
            }
        }
        while let Some(&(t, k)) = s.early_order.front() {
            if now.duration_since(t) < KEEP {
                break;
            }
            s.early_order.pop_front();
            if let Some(lost) = s.early.remove(&k) {
                self.hops.unmatched.fetch_add(lost.len() as u64, Relaxed);
            }
        }
    }

    /// A viewer received this video payload now: record the hop if recording.
    pub fn hop(&self, payload: &[u8]) {
        if !self.hops.recording.load(Relaxed) {
            return;
        }
        let now = Instant::now();
        let key = payload_key(payload);
        let mut s = self.seen.lock().unwrap();
        match s.at.get(&key) {
            Some(&t) => self.hops.record(t, now),
            None => {
                s.early.entry(key).or_default().push(now);
                s.early_order.push_back((now, key));
            }
        }
    }
}
