//! An RTP source: one UDP socket that FFmpeg sends one media kind to, drained
//! from the moment it is bound, with its packets fanned out to subscribers.
//!
//! The reader task owns the subscriber list (the engine shards' feeds;
//! subscribe requests arrive as messages). For video it keeps the GOP
//! cache, pushing each packet there before it fans it out, so a snapshot of
//! the cache holds everything a subscriber was given since the cached
//! keyframe: a viewer joins with the snapshot and skips the live packets it
//! already holds (no gap, no duplicate). Each subscriber has a bounded
//! queue; when it is full that subscriber's packet is dropped and counted
//! (the next one it gets is marked), and the source never waits.
//! Knows nothing of WebRTC or HTTP.

pub(crate) mod gop;
pub(crate) mod history;
pub(crate) mod ports;

use crate::h264::payload_nals;
use crate::profile::CacheLimits;
use crate::rtp::{Datagram, RtpPacket, classify};
use bytes::BytesMut;
use gop::{CacheState, GopCache};
use history::History;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Largest datagram read; FFmpeg sends at most 1200 bytes.
const RECV_BUFFER: usize = 2048;

/// What a source has seen, readable while it runs.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub rtp_packets: AtomicU64,
    pub rtp_bytes: AtomicU64,
    pub rtcp_packets: AtomicU64,
    pub garbage_packets: AtomicU64,
    /// Well-formed packets refused: not from loopback, an unexpected payload
    /// type, or another SSRC while the current one is live.
    pub rejected_packets: AtomicU64,
    /// Packets not queued for a subscriber whose queue was full.
    pub dropped: AtomicU64,
}

/// A running source. [`Source::close`] stops it and waits; dropping it stops
/// it without waiting.
pub struct Source {
    handle: SourceHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// One subscriber: its queue, and whether it missed packets since the last
/// one it got.
struct Subscriber {
    tx: mpsc::Sender<RtpPacket>,
    missed: bool,
}

/// What kind of source, and for video whether and how much to cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Video {
        pt: Option<u8>,
        cache: Option<CacheLimits>,
    },
    Audio {
        pt: Option<u8>,
    },
}

/// After this long without a packet from the locked SSRC, another SSRC may
/// take over the source (as when FFmpeg restarts its output).
pub const SSRC_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A cheap, clonable way to subscribe to a source.
#[derive(Clone)]
pub struct SourceHandle {
    subscribe_tx: mpsc::Sender<Subscriber>,
    pub stats: Arc<SourceStats>,
    /// Recent packets by sequence number, for retransmissions.
    pub history: Arc<History>,
    /// The GOP cache as of the last packet (video with the cache on).
    pub cache: Arc<Mutex<Option<CacheState>>>,
    /// The GOP cache itself (video with the cache on), shared with the
    /// reader: it pushes each packet here before fanning it out, so a
    /// snapshot holds every packet a subscriber has been given since the
    /// cached keyframe.
    gop: Option<Arc<Mutex<GopCache>>>,
    pub port: u16,
}

impl SourceHandle {
    /// Queues this source's packets from now on to `tx` (a shard's feed;
    /// the cached GOP is [`SourceHandle::gop`]). False when the source has
    /// closed.
    pub async fn subscribe(&self, tx: mpsc::Sender<RtpPacket>) -> bool {
        self.subscribe_tx
            .send(Subscriber { tx, missed: false })
            .await
            .is_ok()
    }

    /// The cached GOP as it is now (empty without a cache or a keyframe).
    pub fn gop(&self) -> Vec<RtpPacket> {
        self.gop.as_ref().map_or_else(Vec::new, |g| {
            g.lock().unwrap_or_else(|p| p.into_inner()).snapshot()
        })
    }

    pub fn cache_state(&self) -> Option<CacheState> {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Source {
    /// Starts draining `socket` at once. `name` labels the log lines.
    pub fn start(
        socket: StdUdpSocket,
        name: impl Into<String>,
        kind: SourceKind,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let socket = UdpSocket::from_std(socket)?;
        let (subscribe_tx, subscribe_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let cache_on = matches!(kind, SourceKind::Video { cache: Some(_), .. });
        let (video, cache, pt) = match kind {
            SourceKind::Video { pt, cache } => (
                true,
                cache.map(|limits| Arc::new(Mutex::new(GopCache::new(limits)))),
                pt,
            ),
            SourceKind::Audio { pt } => (false, None, pt),
        };
        let handle = SourceHandle {
            subscribe_tx,
            stats: Arc::default(),
            history: Arc::default(),
            // `Some` from the start when the cache is on, so status can say so.
            cache: Arc::new(Mutex::new(cache_on.then(CacheState::default))),
            gop: cache.clone(),
            port,
        };
        let reader = Reader {
            socket,
            handle: handle.clone(),
            subscribers: Vec::new(),
            name: name.into(),
            video,
            cache,
            last_key_ts: None,
            pt,
            ssrc: None,
        };
        let task = tokio::spawn(reader.run(subscribe_rx, cancel.clone()).in_current_span());
        Ok(Self {
            handle,
            cancel,
            task,
        })
    }

    pub fn handle(&self) -> SourceHandle {
        self.handle.clone()
    }

    /// Stops reading and waits until the socket is closed and every
    /// subscriber's queue has ended.
    pub async fn close(mut self) {
        self.cancel.cancel();
        if let Err(e) = (&mut self.task).await {
            tracing::error!(port = self.handle.port, error = %e, "source task failed");
        }
    }
}

/// A source dropped without [`Source::close`] (as when a panic unwinds its
/// run) still stops reading, so its port is freed.
impl Drop for Source {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The GOP cache, whatever a panicking holder left (pushes are whole).
fn lock(cache: &Mutex<GopCache>) -> std::sync::MutexGuard<'_, GopCache> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

struct Reader {
    socket: UdpSocket,
    handle: SourceHandle,
    subscribers: Vec<Subscriber>,
    name: String,
    /// Parse H.264 payloads to mark keyframe starts.
    video: bool,
    cache: Option<Arc<Mutex<GopCache>>>,
    /// The timestamp of the last keyframe start.
    last_key_ts: Option<u32>,
    /// The only payload type taken, when set.
    pt: Option<u8>,
    /// The SSRC the source is locked to, and when it was last heard.
    ssrc: Option<(u32, Instant)>,
}

impl Reader {
    async fn run(
        mut self,
        mut subscribe_rx: mpsc::Receiver<Subscriber>,
        cancel: CancellationToken,
    ) {
        let mut buf = BytesMut::with_capacity(RECV_BUFFER * 16);
        loop {
            if buf.capacity() < RECV_BUFFER {
                buf.reserve(RECV_BUFFER * 16);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(sub) = subscribe_rx.recv() => self.add(sub),
                r = self.socket.recv_buf_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let datagram = buf.split_to(n).freeze();
                        if from.ip().is_loopback() {
                            self.take(datagram);
                        } else {
                            self.reject("not from loopback");
                        }
                    }
                    Err(e) => {
                        buf.clear();
                        tracing::debug!(source = self.name.as_str(), error = %e, "UDP receive error");
                    }
                },
            }
        }
        tracing::debug!(
            source = self.name.as_str(),
            subscribers = self.subscribers.len(),
            "source closed"
        );
    }

    fn add(&mut self, sub: Subscriber) {
        self.subscribers.push(sub);
    }

    /// Counts a well-formed packet refused for where it came from or what it
    /// carries, logging the first and then at powers of two.
    fn reject(&self, why: &'static str) {
        let n = self.handle.stats.rejected_packets.fetch_add(1, Relaxed);
        if n.is_power_of_two() || n == 0 {
            tracing::warn!(
                source = self.name.as_str(),
                reason = why,
                total = n + 1,
                "refused a packet"
            );
        }
    }

    /// The payload type and SSRC checks: true when the packet may be used.
    fn admit(&mut self, packet: &RtpPacket, now: Instant) -> bool {
        if self.pt.is_some_and(|pt| pt != packet.payload_type) {
            self.reject("unexpected payload type");
            return false;
        }
        match self.ssrc {
            Some((ssrc, _)) if ssrc == packet.ssrc => {}
            Some((ssrc, seen)) if now.duration_since(seen) < SSRC_SILENCE => {
                let _ = ssrc;
                self.reject("another SSRC while the current one is live");
                return false;
            }
            previous => {
                if let Some((old, _)) = previous {
                    tracing::info!(
                        source = self.name.as_str(),
                        old,
                        new = packet.ssrc,
                        "SSRC changed after silence"
                    );
                    if let Some(cache) = &self.cache {
                        let mut cache = lock(cache);
                        *cache = GopCache::new(cache.limits());
                    }
                    self.last_key_ts = None;
                }
            }
        }
        self.ssrc = Some((packet.ssrc, now));
        true
    }

    fn take(&mut self, datagram: bytes::Bytes) {
        let packet = match classify(datagram) {
            Datagram::Rtp(p) => p,
            Datagram::Rtcp => {
                self.handle.stats.rtcp_packets.fetch_add(1, Relaxed);
                return;
            }
            Datagram::Garbage(why) => {
                let n = self.handle.stats.garbage_packets.fetch_add(1, Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        source = self.name.as_str(),
                        reason = why,
                        total = n + 1,
                        "dropped a datagram that is not RTP"
                    );
                }
                return;
            }
        };
        let now = Instant::now();
        if !self.admit(&packet, now) {
            return;
        }
        let mut packet = packet;
        if self.video {
            let nals = payload_nals(&packet.data[packet.payload_offset..packet.payload_end]);
            // A keyframe begins with the first packet carrying its SPS (or,
            // without one, its IDR) at a new timestamp.
            if (nals.sps || nals.idr_start) && self.last_key_ts != Some(packet.timestamp) {
                packet.keyframe_start = true;
                self.last_key_ts = Some(packet.timestamp);
            }
        }
        let stats = &self.handle.stats;
        let n = stats.rtp_packets.fetch_add(1, Relaxed);
        if n.is_multiple_of(crate::latency::SAMPLE_EVERY) {
            packet.received_at = Some(now);
        }
        stats.rtp_bytes.fetch_add(packet.data.len() as u64, Relaxed);
        self.handle.history.put(&packet);
        if let Some(cache) = &self.cache {
            let mut cache = lock(cache);
            cache.push(&packet, now);
            if packet.keyframe_start || n.is_multiple_of(32) {
                *self.handle.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cache.state());
            }
        }
        self.subscribers.retain_mut(|sub| {
            let mut copy = packet.clone();
            copy.after_drop = sub.missed;
            match sub.tx.try_send(copy) {
                Ok(()) => {
                    sub.missed = false;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.dropped.fetch_add(1, Relaxed);
                    sub.missed = true;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut v = vec![0x80, 96];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 7, 0xaa]);
        v
    }

    async fn source() -> (Source, StdUdpSocket) {
        source_of(SourceKind::Audio { pt: None }).await
    }

    async fn source_of(kind: SourceKind) -> (Source, StdUdpSocket) {
        let sock = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let src = Source::start(sock, "test", kind).unwrap();
        let sender = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(("127.0.0.1", port)).unwrap();
        (src, sender)
    }

    async fn feed(h: &SourceHandle, capacity: usize) -> mpsc::Receiver<RtpPacket> {
        let (tx, rx) = mpsc::channel(capacity);
        assert!(h.subscribe(tx).await, "the source is closed");
        rx
    }

    async fn next(rx: &mut mpsc::Receiver<RtpPacket>) -> RtpPacket {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn forwards_rtp_to_every_subscriber_and_never_rtcp_or_garbage() {
        let (src, tx) = source().await;
        let h = src.handle();
        let mut a = feed(&h, 64).await;
        let mut b = feed(&h, 64).await;
        tx.send(&rtp(1)).unwrap();
        tx.send(&[0x80, 200, 0, 6, 0, 0, 0, 1]).unwrap(); // RTCP SR
        tx.send(b"garbage!").unwrap();
        tx.send(&rtp(2)).unwrap();
        for rx in [&mut a, &mut b] {
            assert_eq!(next(rx).await.sequence, 1);
            assert_eq!(next(rx).await.sequence, 2);
        }
        assert_eq!(h.stats.rtcp_packets.load(Relaxed), 1);
        assert_eq!(h.stats.garbage_packets.load(Relaxed), 1);
        assert_eq!(h.stats.rtp_packets.load(Relaxed), 2);
        src.close().await;
        assert!(
            a.recv().await.is_none(),
            "queue did not end when the source closed"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_for_that_subscriber_only() {
        let (src, tx) = source().await;
        let h = src.handle();
        let mut slow = feed(&h, 1).await;
        let mut fast = feed(&h, 64).await;
        for seq in 0..10 {
            tx.send(&rtp(seq)).unwrap();
        }
        for seq in 0..10 {
            assert_eq!(next(&mut fast).await.sequence, seq);
        }
        assert_eq!(next(&mut slow).await.sequence, 0);
        assert_eq!(h.stats.dropped.load(Relaxed), 9);
        src.close().await;
    }

    /// An H.264 RTP packet: `nal` is the first payload byte.
    fn h264(seq: u16, ts: u32, nal: u8) -> Vec<u8> {
        let mut v = vec![0x80, 102];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 7, nal, 0xaa]);
        v
    }

    #[tokio::test]
    async fn a_new_subscriber_gets_the_cached_gop_then_live_without_gap() {
        let limits = CacheLimits {
            max_bytes: 100_000,
            max_age: Duration::from_secs(5),
        };
        let (src, tx) = source_of(SourceKind::Video {
            pt: None,
            cache: Some(limits),
        })
        .await;
        let h = src.handle();
        let mut probe = feed(&h, 64).await;
        // A P slice before any keyframe, then a keyframe (SPS, PPS, IDR) and P slices.
        let frames: [(u16, u32, u8); 6] = [
            (1, 0, 0x41),
            (2, 3000, 0x67),
            (3, 3000, 0x68),
            (4, 3000, 0x65),
            (5, 6000, 0x41),
            (6, 9000, 0x41),
        ];
        for (seq, ts, nal) in frames {
            tx.send(&h264(seq, ts, nal)).unwrap();
        }
        for _ in 0..6 {
            next(&mut probe).await;
        }
        let mut live = feed(&h, 64).await;
        let cached: Vec<(u16, bool)> = h
            .gop()
            .iter()
            .map(|p| (p.sequence, p.keyframe_start))
            .collect();
        assert_eq!(
            cached,
            [(2, true), (3, false), (4, false), (5, false), (6, false)]
        );
        tx.send(&h264(7, 12000, 0x41)).unwrap();
        assert_eq!(
            next(&mut live).await.sequence,
            7,
            "live continues right after the cached GOP"
        );
        assert!(h.cache_state().unwrap().ready);
        // An audio source has no cached GOP.
        let (audio, _) = source().await;
        assert!(audio.handle().gop().is_empty());
        src.close().await;
    }

    #[tokio::test]
    async fn without_the_cache_there_is_no_backlog_but_keyframes_are_marked() {
        let (src, tx) = source_of(SourceKind::Video {
            pt: None,
            cache: None,
        })
        .await;
        let h = src.handle();
        let mut live = feed(&h, 64).await;
        assert!(h.gop().is_empty());
        for (seq, ts, nal) in [(1u16, 0u32, 0x67u8), (2, 0, 0x65), (3, 3000, 0x41)] {
            tx.send(&h264(seq, ts, nal)).unwrap();
        }
        let marks: Vec<bool> = [
            next(&mut live).await,
            next(&mut live).await,
            next(&mut live).await,
        ]
        .iter()
        .map(|p| p.keyframe_start)
        .collect();
        assert_eq!(marks, [true, false, false]);
        assert_eq!(
            h.history.get(2).map(|p| p.timestamp),
            Some(0),
            "kept for retransmission"
        );
        src.close().await;
    }

    fn rtp_from(ssrc: u32, pt: u8, seq: u16) -> Vec<u8> {
        let mut v = vec![0x80, pt];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 1]);
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.push(0xaa);
        v
    }

    #[tokio::test]
    async fn only_the_expected_payload_type_and_the_live_ssrc_pass() {
        let (src, tx) = source_of(SourceKind::Audio { pt: Some(111) }).await;
        let h = src.handle();
        let mut rx = feed(&h, 64).await;
        tx.send(&rtp_from(1, 111, 1)).unwrap();
        tx.send(&rtp_from(1, 96, 2)).unwrap(); // wrong payload type
        tx.send(&rtp_from(2, 111, 3)).unwrap(); // another SSRC while 1 is live
        tx.send(&rtp_from(1, 111, 4)).unwrap();
        assert_eq!(next(&mut rx).await.sequence, 1);
        assert_eq!(next(&mut rx).await.sequence, 4);
        assert_eq!(h.stats.rejected_packets.load(Relaxed), 2);
        // After SSRC 1 has been silent long enough, SSRC 2 may take over.
        tokio::time::sleep(SSRC_SILENCE + Duration::from_millis(100)).await;
        tx.send(&rtp_from(2, 111, 100)).unwrap();
        assert_eq!(next(&mut rx).await.ssrc, 2);
        src.close().await;
    }

    #[tokio::test]
    async fn close_frees_the_port() {
        let (src, _tx) = source().await;
        let port = src.handle().port;
        src.close().await;
        StdUdpSocket::bind(("127.0.0.1", port)).expect("port still taken after close");
    }
}
