//! A shard of the media engine: one task that owns its share of the viewers'
//! connections (`rtc` sans-IO cores), its UDP sockets, one timer for all of
//! them (a heap of their deadlines) and one feed per source its viewers
//! watch.
//!
//! Each turn it takes what is ready, in this order: commands (joins, hang-
//! ups, trickle, reports) and datagrams handed over by the mux or ICE-TCP;
//! the sources' packets, each rewritten and protected for every viewer of
//! that source in turn (starting with a different viewer each packet); a
//! bounded number of datagrams from its sockets (ICE, DTLS, RTCP: so joins
//! never hold up media for long); expired deadlines; the pacing of cached
//! GOPs. Then everything the turn produced goes out in `sendmmsg` batches.

use super::batch::Batch;
use super::conn::{Conn, LinkReport};
use super::routes::{Routes, StunWaiters};
use super::track::BACKLOG_PAUSE;

mod inputs;
mod reads;
use crate::rtp::RtpPacket;
use bytes::{Bytes, BytesMut};
use rtc::peer_connection::transport::RTCIceCandidateInit;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Datagrams read from each socket per turn.
const READS_PER_TURN: usize = 64;
/// Source packets taken from each feed per turn: enough for a frame's
/// share per viewer in one GSO message, few enough that reads and
/// deadlines are not kept waiting behind hundreds of viewers...
const MEDIA_PER_TURN: usize = 32;
/// ...and fewer with many viewers: a turn's datagrams wait in memory for
/// its `sendmmsg` calls, so each feed gives a turn about this many (a
/// keyframe burst would otherwise hold tens of KB per viewer until the turn
/// ends).
const DATAGRAMS_PER_TURN: usize = 1024;
/// Commands taken per turn.
const INPUTS_PER_TURN: usize = 64;
/// Largest datagram read.
const MTU: usize = 1500;
/// Packets queued from a source to one shard.
pub(crate) const FEED_QUEUE: usize = 4096;

/// What a shard is asked to do.
pub(crate) enum Input {
    Join(Box<Conn>, oneshot::Sender<()>),
    HangUp(u64, oneshot::Sender<()>),
    Candidate(
        u64,
        RTCIceCandidateInit,
        oneshot::Sender<Result<(), String>>,
    ),
    Report(u64, oneshot::Sender<LinkReport>),
    /// The viewer's choice of rendition on a ladder.
    Choose(
        u64,
        super::ladder::Choice,
        oneshot::Sender<Result<(), String>>,
    ),
    /// A feed of a source for this shard (taken by a joining viewer when
    /// the shard may have none yet).
    Feed(usize, mpsc::Receiver<RtpPacket>),
    /// A datagram read elsewhere (the mux, an ICE-TCP stream) for one of
    /// this shard's connections.
    Datagram {
        local: SocketAddr,
        from: SocketAddr,
        tcp: bool,
        data: BytesMut,
    },
    /// An ICE-TCP stream whose first frame named `ufrag`: frames for `from`
    /// go to `writer`.
    TcpStream {
        ufrag: String,
        local: SocketAddr,
        from: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
}

/// A UDP socket of the shard: read here, or (the mux) only written.
pub(crate) struct ShardSocket {
    pub socket: Arc<UdpSocket>,
    pub local: SocketAddr,
    pub read_here: bool,
}

/// One source's packets for this shard, and who watches it here.
struct Feed {
    key: usize,
    rx: mpsc::Receiver<RtpPacket>,
    /// (connection slot, track index).
    viewers: Vec<(usize, usize)>,
    /// Where the fan-out starts next: no viewer is always last.
    rotate: usize,
    /// A packet taken while waiting for work.
    stashed: Option<RtpPacket>,
    /// The source has closed.
    closed: bool,
}

pub(crate) struct Shard {
    pub index: usize,
    sockets: Vec<ShardSocket>,
    inbox: mpsc::Receiver<Input>,
    /// Commands polled but not yet handled.
    inputs: Vec<Input>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    by_addr: HashMap<(SocketAddr, SocketAddr), usize>,
    by_ufrag: HashMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    feeds: Vec<Feed>,
    /// Connections with a GOP being paced out (or a probe), and when the
    /// next burst goes.
    pacing: Vec<usize>,
    /// Connections whose tracks move to other feeds (a switch of rendition).
    regroup: Vec<usize>,
    next_pace: Option<Instant>,
    batch: Batch,
    /// The packets of one feed being fanned out (kept to reuse).
    packets: Vec<RtpPacket>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    routes: Arc<Routes>,
    stun: Arc<StunWaiters>,
    load: Arc<AtomicUsize>,
    /// The keys of `feeds`, for joining viewers to read.
    fed: Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    recv_buf: BytesMut,
}

/// What the wait for work found.
enum Woke {
    Stop,
    Work,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        sockets: Vec<ShardSocket>,
        inbox: mpsc::Receiver<Input>,
        routes: Arc<Routes>,
        stun: Arc<StunWaiters>,
        load: Arc<AtomicUsize>,
        fed: Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            index,
            sockets,
            inbox,
            inputs: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            feeds: Vec::new(),
            pacing: Vec::new(),
            regroup: Vec::new(),
            next_pace: None,
            batch: Batch::default(),
            packets: Vec::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            routes,
            stun,
            load,
            fed,
            stop: Box::pin(stop.cancelled_owned()),
            recv_buf: BytesMut::new(),
        }
    }

    pub async fn run(mut self) {
        loop {
            if let Woke::Stop = poll_fn(|cx| self.poll_work(cx)).await {
                break;
            }
            let now = Instant::now();
            self.turn(now);
            self.batch.flush(&self.sockets).await;
            self.arm_sleep();
        }
        tracing::debug!(shard = self.index, "engine shard stopped");
    }

    /// Ready when anything is: a command, a source packet, a readable
    /// socket, a deadline.
    fn poll_work(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Woke::Stop);
        }
        let mut ready = false;
        match self
            .inbox
            .poll_recv_many(cx, &mut self.inputs, INPUTS_PER_TURN)
        {
            Poll::Ready(0) => return Poll::Ready(Woke::Stop),
            Poll::Ready(_) => ready = true,
            Poll::Pending => {}
        }
        for f in &mut self.feeds {
            if f.stashed.is_some() || f.closed {
                ready = true;
            } else if let Poll::Ready(p) = f.rx.poll_recv(cx) {
                // The turn sends it first.
                f.closed = p.is_none();
                f.stashed = p;
                ready = true;
            }
        }
        for s in self.sockets.iter().filter(|s| s.read_here) {
            if s.socket.poll_recv_ready(cx).is_ready() {
                ready = true;
            }
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            ready = true;
        }
        if ready {
            Poll::Ready(Woke::Work)
        } else {
            Poll::Pending
        }
    }

    fn arm_sleep(&mut self) {
        let timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let next = match (timer, self.next_pace) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a
                .or(b)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        };
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::from_std(next));
    }

    fn turn(&mut self, now: Instant) {
        let mut inputs = std::mem::take(&mut self.inputs);
        while inputs.len() < INPUTS_PER_TURN {
            match self.inbox.try_recv() {
                Ok(i) => inputs.push(i),
                Err(_) => break,
            }
        }
        for input in inputs.drain(..) {
            self.input(input, now);
        }
        self.inputs = inputs;
        self.media(now);
        self.read(now);
        self.fire_timers(now);
        self.pace(now);
        self.regroup_all();
    }

    /// Fans the sources' packets out to their viewers here: a few packets
    /// of a feed at a time, each viewer taking all of them in turn (so a
    /// viewer's share of a frame leaves in one GSO message).
    fn media(&mut self, now: Instant) {
        let mut packets = std::mem::take(&mut self.packets);
        let mut i = 0;
        while i < self.feeds.len() {
            packets.clear();
            // A packet the wake-up poll took comes first.
            packets.extend(self.feeds[i].stashed.take());
            let mut closed = self.feeds[i].closed;
            let take = packets_per_turn(self.feeds[i].viewers.len());
            while packets.len() < take && !closed {
                match self.feeds[i].rx.try_recv() {
                    Ok(p) => packets.push(p),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                }
            }
            if !packets.is_empty() {
                self.fan_out(i, &packets, now);
            }
            if closed {
                let gone = self.feeds.swap_remove(i);
                self.fed_keys().remove(&gone.key);
            } else {
                i += 1;
            }
        }
        self.packets = packets;
    }

    fn fan_out(&mut self, feed: usize, packets: &[RtpPacket], now: Instant) {
        let f = &mut self.feeds[feed];
        let n = f.viewers.len();
        if n == 0 {
            return;
        }
        let key = f.key;
        let start = next_start(&mut f.rotate, n);
        for k in 0..n {
            let (slot, track) = self.feeds[feed].viewers[(start + k) % n];
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let was_pacing = conn.pacing(now);
            for p in packets {
                conn.live(track, key, p, now, &self.sockets, &mut self.batch);
            }
            if conn.take_feeds_changed() {
                self.regroup.push(slot);
            }
            if conn.pacing(now) && !was_pacing {
                self.start_pacing(slot, now);
            }
        }
    }

    /// Moves the tracks that switched rendition to their new feeds.
    fn regroup_all(&mut self) {
        let slots = std::mem::take(&mut self.regroup);
        for slot in slots {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            for (i, t) in conn.tracks.iter_mut().enumerate() {
                let wanted = t.wanted_feeds();
                for f in &mut self.feeds {
                    let member = t.feeds.contains(&f.key);
                    if member && !wanted.contains(&f.key) {
                        f.viewers.retain(|v| *v != (slot, i));
                    } else if !member && wanted.contains(&f.key) {
                        f.viewers.push((slot, i));
                    }
                }
                t.feeds = wanted;
            }
        }
    }

    fn start_pacing(&mut self, slot: usize, now: Instant) {
        if !self.pacing.contains(&slot) {
            self.pacing.push(slot);
        }
        if self.next_pace.is_none() {
            self.next_pace = Some(now);
        }
    }

    fn pace(&mut self, now: Instant) {
        if self.next_pace.is_none_or(|t| t > now) {
            return;
        }
        let pacing = std::mem::take(&mut self.pacing);
        for slot in pacing {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if conn.pace(now, &self.sockets, &mut self.batch) {
                self.pacing.push(slot);
            }
            if conn.take_feeds_changed() {
                self.regroup.push(slot);
            }
        }
        self.next_pace = (!self.pacing.is_empty()).then(|| now + BACKLOG_PAUSE);
    }

    /// After the core took something: its writes, events, feedback and
    /// next deadline.
    fn after_core(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let was_pacing = conn.pacing(now);
        conn.settle(now, &self.sockets, &mut self.batch);
        if conn.take_feeds_changed() {
            self.regroup.push(slot);
        }
        let learned = std::mem::take(&mut conn.learned);
        let pacing = conn.pacing(now) && !was_pacing;
        let deadline = conn.deadline();
        let id = conn.id;
        if let Some(t) = deadline
            && conn.scheduled.is_none_or(|s| t < s)
        {
            conn.scheduled = Some(t);
            self.timers.push(Reverse((t, slot, id)));
        }
        if pacing {
            self.start_pacing(slot, now);
        }
        // The answers to its own checks come from where they went: route
        // those addresses to it now, or a check of ours whose answer comes
        // before the viewer's own check is lost (and with it, the viewer's
        // nomination waits for a retransmit).
        for (local, remote) in learned {
            if self.route(slot, local, remote)
                && self
                    .sockets
                    .iter()
                    .any(|s| s.local == local && !s.read_here)
                && let Some(conn) = self.conns[slot].as_ref()
            {
                // The mux's router reads for every shard: it learns too.
                self.routes.learn(remote, &conn.ufrag);
            }
        }
    }

    /// Datagrams from `remote` to `local` go to connection `slot` from now
    /// on, unless that address is another's; true if it was routed now.
    pub(super) fn route(&mut self, slot: usize, local: SocketAddr, remote: SocketAddr) -> bool {
        let std::collections::hash_map::Entry::Vacant(v) = self.by_addr.entry((local, remote))
        else {
            return false;
        };
        v.insert(slot);
        if let Some(c) = self.conns[slot].as_mut() {
            c.addrs.push((local, remote));
        }
        true
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, slot, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns[slot].as_mut().filter(|c| c.id == id) else {
                continue; // a connection that has gone
            };
            if conn.scheduled != Some(t) {
                continue; // superseded by an earlier deadline
            }
            conn.scheduled = None;
            conn.core.handle_timeout(now);
            self.after_core(slot, now);
        }
    }
}

impl Shard {
    fn fed_keys(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<usize>> {
        // Inserts and removes cannot be left half done.
        self.fed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a feed's next fan-out starts among its `n` viewers: one further
/// each time, so no viewer is always last.
fn next_start(rotate: &mut usize, n: usize) -> usize {
    *rotate = (*rotate + 1) % n;
    *rotate
}

/// Source packets of one feed a turn fans out to its `viewers`.
fn packets_per_turn(viewers: usize) -> usize {
    (DATAGRAMS_PER_TURN / viewers.max(1)).clamp(1, MEDIA_PER_TURN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_holds_about_a_bounded_number_of_datagrams() {
        use super::{MEDIA_PER_TURN, packets_per_turn};
        assert_eq!(packets_per_turn(0), MEDIA_PER_TURN);
        assert_eq!(packets_per_turn(32), MEDIA_PER_TURN);
        assert_eq!(packets_per_turn(40), 25);
        assert_eq!(packets_per_turn(100), 10);
        assert_eq!(packets_per_turn(5000), 1, "never none");
    }

    #[test]
    fn each_viewer_starts_a_fan_out_in_turn() {
        let mut rotate = 0;
        let starts: Vec<usize> = (0..6).map(|_| super::next_start(&mut rotate, 3)).collect();
        assert_eq!(starts, [1, 2, 0, 1, 2, 0]);
        // Fewer viewers than the last position: still one of them.
        assert_eq!(super::next_start(&mut rotate, 1), 0);
    }
}
