//! An RTP source: one UDP socket that FFmpeg sends one media kind to, drained
//! from the moment it is bound, with its packets fanned out to subscribers.
//!
//! The reader task owns the subscriber list, so the per-packet path takes no
//! lock: subscribe requests arrive as messages. Each subscriber has a bounded
//! queue; when it is full that subscriber's packet is dropped and counted,
//! and the source never waits. Knows nothing of WebRTC or HTTP.

use crate::rtp::{Datagram, RtpPacket, classify};
use bytes::BytesMut;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    /// Packets not queued for a subscriber whose queue was full.
    pub dropped: AtomicU64,
}

/// A running source. Dropping it does not stop it: call [`Source::close`].
pub struct Source {
    handle: SourceHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Told of each packet a subscriber missed because its queue was full.
pub trait DropCount: Send + Sync {
    fn dropped(&self);
}

/// One subscriber: its queue and whom to tell about drops.
pub struct Subscriber {
    tx: mpsc::Sender<RtpPacket>,
    drops: Vec<Arc<dyn DropCount>>,
}

/// A cheap, clonable way to subscribe to a source.
#[derive(Clone)]
pub struct SourceHandle {
    subscribe_tx: mpsc::Sender<Subscriber>,
    pub stats: Arc<SourceStats>,
    pub port: u16,
}

impl SourceHandle {
    /// A queue of this source's packets from now on, holding at most
    /// `capacity`; each packet dropped for a full queue is told to `drops`.
    /// `None` when the source has closed.
    pub async fn subscribe(
        &self,
        capacity: usize,
        drops: Vec<Arc<dyn DropCount>>,
    ) -> Option<mpsc::Receiver<RtpPacket>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.subscribe_tx
            .send(Subscriber { tx, drops })
            .await
            .ok()?;
        Some(rx)
    }
}

impl Source {
    /// Starts draining `socket` at once. `name` labels the log lines.
    pub fn start(socket: StdUdpSocket, name: &'static str) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let socket = UdpSocket::from_std(socket)?;
        let stats = Arc::new(SourceStats::default());
        let (subscribe_tx, subscribe_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let reader = Reader {
            socket,
            stats: stats.clone(),
            subscribers: Vec::new(),
            name,
        };
        let task = tokio::spawn(reader.run(subscribe_rx, cancel.clone()).in_current_span());
        Ok(Self {
            handle: SourceHandle {
                subscribe_tx,
                stats,
                port,
            },
            cancel,
            task,
        })
    }

    pub fn handle(&self) -> SourceHandle {
        self.handle.clone()
    }

    /// Stops reading and waits until the socket is closed and every
    /// subscriber's queue has ended.
    pub async fn close(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(port = self.handle.port, error = %e, "source task failed");
        }
    }
}

struct Reader {
    socket: UdpSocket,
    stats: Arc<SourceStats>,
    subscribers: Vec<Subscriber>,
    name: &'static str,
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
                Some(tx) = subscribe_rx.recv() => self.subscribers.push(tx),
                r = self.socket.recv_buf_from(&mut buf) => match r {
                    Ok((n, _from)) => {
                        let datagram = buf.split_to(n).freeze();
                        self.take(datagram);
                    }
                    Err(e) => {
                        buf.clear();
                        tracing::debug!(source = self.name, error = %e, "UDP receive error");
                    }
                },
            }
        }
        tracing::debug!(
            source = self.name,
            subscribers = self.subscribers.len(),
            "source closed"
        );
    }

    fn take(&mut self, datagram: bytes::Bytes) {
        let packet = match classify(datagram) {
            Datagram::Rtp(p) => p,
            Datagram::Rtcp => {
                self.stats.rtcp_packets.fetch_add(1, Relaxed);
                return;
            }
            Datagram::Garbage(why) => {
                let n = self.stats.garbage_packets.fetch_add(1, Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        source = self.name,
                        reason = why,
                        total = n + 1,
                        "dropped a datagram that is not RTP"
                    );
                }
                return;
            }
        };
        self.stats.rtp_packets.fetch_add(1, Relaxed);
        self.stats
            .rtp_bytes
            .fetch_add(packet.data.len() as u64, Relaxed);
        let stats = &self.stats;
        self.subscribers
            .retain(|sub| match sub.tx.try_send(packet.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.dropped.fetch_add(1, Relaxed);
                    sub.drops.iter().for_each(|d| d.dropped());
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
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
        let sock = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let src = Source::start(sock, "test").unwrap();
        let sender = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(("127.0.0.1", port)).unwrap();
        (src, sender)
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
        let mut a = h.subscribe(64, vec![]).await.unwrap();
        let mut b = h.subscribe(64, vec![]).await.unwrap();
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
        let mut slow = h.subscribe(1, vec![]).await.unwrap();
        let mut fast = h.subscribe(64, vec![]).await.unwrap();
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

    #[tokio::test]
    async fn close_frees_the_port() {
        let (src, _tx) = source().await;
        let port = src.handle().port;
        src.close().await;
        StdUdpSocket::bind(("127.0.0.1", port)).expect("port still taken after close");
    }
}
