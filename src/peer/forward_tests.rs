//! The forwarder against a real source socket and a stand-in viewer. Every
//! wait is on an event (the source's counters, what the viewer got, a
//! cancellation); time limits in the policy are set far beyond any test.

use super::*;
use crate::profile::CacheLimits;
use crate::source::{Source, SourceKind};
use std::net::UdpSocket;
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};

/// How long a test waits for an event before it fails: only a broken
/// forwarder takes this long, however busy the machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A policy whose time limits no test run reaches.
const PATIENT: ForwardPolicy = ForwardPolicy {
    max_resyncs: 3,
    resync_window: Duration::from_secs(3600),
    keyframe_answer_every: Duration::from_secs(3600),
};

/// A stand-in viewer: records what it is sent, can be paused (writes wait
/// until it resumes), and sends the feedback a test queues.
struct FakeSink {
    sent: Mutex<Vec<rtc::rtp::Packet>>,
    paused: watch::Sender<bool>,
    feedback: tokio::sync::Mutex<mpsc::Receiver<Feedback>>,
}

impl FakeSink {
    fn new() -> (Arc<Self>, mpsc::Sender<Feedback>) {
        let (tx, rx) = mpsc::channel(8);
        let sink = Arc::new(Self {
            sent: Mutex::default(),
            paused: watch::channel(false).0,
            feedback: tokio::sync::Mutex::new(rx),
        });
        (sink, tx)
    }

    fn sent(&self) -> Vec<rtc::rtp::Packet> {
        self.sent.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }
}

#[async_trait::async_trait]
impl MediaSink for FakeSink {
    async fn write(&self, packet: rtc::rtp::Packet) -> Result<(), String> {
        let mut paused = self.paused.subscribe();
        paused.wait_for(|p| !*p).await.map_err(|e| e.to_string())?;
        self.sent.lock().unwrap().push(packet);
        Ok(())
    }

    async fn feedback(&self) -> Option<Feedback> {
        self.feedback.lock().await.recv().await
    }
}

/// Waits until `cond` holds; fails the test after [`PATIENCE`].
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const KEY_EVERY: u16 = 100;

/// Packet `seq` of a stream of one-packet frames with a keyframe (an SPS
/// packet) every [`KEY_EVERY`] packets.
fn h264(seq: u16) -> Vec<u8> {
    let nal = if seq.is_multiple_of(KEY_EVERY) {
        0x67
    } else {
        0x41
    };
    let ts = u32::from(seq) * 3000;
    let mut v = vec![0x80, 0x80 | 102];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 7, nal, (seq & 0xff) as u8]);
    v
}

/// A video source and what feeds it over loopback UDP.
struct Feed {
    src: Source,
    tx: UdpSocket,
    sent: u64,
}

impl Feed {
    fn new() -> Self {
        Self::with(Some(CacheLimits {
            max_bytes: 1_000_000,
            max_age: Duration::from_secs(3600),
        }))
    }

    fn with(cache: Option<CacheLimits>) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let kind = SourceKind::Video {
            pt: Some(102),
            cache,
        };
        let src = Source::start(sock, "video", kind).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(("127.0.0.1", port)).unwrap();
        Self { src, tx, sent: 0 }
    }

    /// Sends packets `range`, a few at a time, each batch once the source
    /// has read the last: no socket buffer can overflow.
    async fn send(&mut self, range: std::ops::Range<u16>) {
        let seqs: Vec<u16> = range.collect();
        for batch in seqs.chunks(32) {
            for seq in batch {
                self.tx.send(&h264(*seq)).unwrap();
            }
            self.sent += batch.len() as u64;
            let stats = self.src.handle().stats;
            let want = self.sent;
            until("the source to read what was sent", || {
                stats.rtp_packets.load(Relaxed) >= want
            })
            .await;
        }
    }

    /// Waits until `n` subscribers are registered with the source.
    async fn subscribed(&self, n: u64) {
        let stats = self.src.handle().stats;
        until("the subscriptions", || stats.subscribers.load(Relaxed) == n).await;
    }
}

fn forwarder(
    feed: &Feed,
    sink: Arc<FakeSink>,
) -> (Forwarder, CancellationToken, Arc<ViewerCounters>) {
    let cancel = CancellationToken::new();
    let counters = Arc::new(ViewerCounters::default());
    let fwd = Forwarder {
        sink,
        source: feed.src.handle(),
        video: true,
        pt: 125,
        ssrc: 42,
        cancel: cancel.clone(),
        counters: counters.clone(),
        latency: Arc::default(),
        policy: PATIENT,
    };
    (fwd, cancel, counters)
}

fn assert_contiguous(sent: &[rtc::rtp::Packet]) {
    for w in sent.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1),
            "a gap in the viewer's numbering"
        );
        assert!(
            (w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) as i32) > 0,
            "time went backwards"
        );
    }
}

/// The source's number of a packet sent to the viewer (kept in the payload).
fn source_seq(p: &rtc::rtp::Packet) -> u8 {
    p.payload[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_viewer_never_holds_up_the_others_and_restarts_on_a_keyframe() {
    let mut feed = Feed::new();
    let (a, _) = FakeSink::new();
    let (b, _) = FakeSink::new();
    let (stuck, _) = FakeSink::new();
    stuck.pause(true);
    let mut counters = Vec::new();
    for sink in [&a, &b, &stuck] {
        let (fwd, _, c) = forwarder(&feed, sink.clone());
        tokio::spawn(fwd.run());
        counters.push(c);
    }
    feed.subscribed(3).await;
    feed.send(0..1500).await;
    until("the others to get every packet", || {
        a.count() == 1500 && b.count() == 1500
    })
    .await;
    // The others got every packet, in order, renumbered without gaps.
    for fast in [&a, &b] {
        let sent = fast.sent();
        assert_contiguous(&sent);
        assert_eq!(sent[0].header.payload_type, 125);
        assert_eq!(sent[0].header.ssrc, 42);
    }
    // The stuck one lost packets at the source and was counted...
    assert!(counters[2].dropped.load(Relaxed) > 0);
    // ...and once it moves again it starts over from a keyframe.
    stuck.pause(false);
    feed.send(1500..1700).await;
    until("the stuck viewer to be back on live", || {
        stuck.sent().last().map(source_seq) == Some((1699 & 0xff) as u8)
    })
    .await;
    let sent = stuck.sent();
    assert_contiguous(&sent);
    assert_eq!(counters[2].resyncs.load(Relaxed), 1);
    // After what was queued before the overflow (the source numbers run
    // on), the next packet starts a keyframe.
    let jump = sent
        .windows(2)
        .position(|w| source_seq(&w[1]) != source_seq(&w[0]).wrapping_add(1))
        .expect("no resync")
        + 1;
    assert!(
        jump > VIEWER_QUEUE - 1,
        "fewer packets than the queue held came first: {jump}"
    );
    assert_eq!(
        sent[jump].payload[0] & 0x1f,
        7,
        "the resync did not start on a keyframe"
    );
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_keeps_falling_behind_is_hung_up() {
    let mut feed = Feed::new();
    let (slow, _) = FakeSink::new();
    let (fwd, cancel, counters) = forwarder(&feed, slow.clone());
    let task = tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    let mut next = 0u16;
    // Each round overflows the viewer's queue while it is stuck, then lets
    // it move: the next packet it takes tells it packets were dropped.
    for round in 1..=PATIENT.max_resyncs + 1 {
        slow.pause(true);
        feed.send(next..next + 600).await;
        next += 600;
        slow.pause(false);
        let want = round as u64;
        let mut extra = next;
        // Packets keep coming until the viewer has taken one after the drop.
        while counters.resyncs.load(Relaxed) < want && !cancel.is_cancelled() {
            feed.send(extra..extra + 1).await;
            extra += 1;
            tokio::task::yield_now().await;
        }
        next = extra;
    }
    tokio::time::timeout(PATIENCE, cancel.cancelled())
        .await
        .expect("never hung up");
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("forwarder did not end")
        .unwrap();
    assert_eq!(
        counters.resyncs.load(Relaxed) as usize,
        PATIENT.max_resyncs + 1
    );
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resyncs_spread_over_more_than_the_window_are_forgiven() {
    // The same four overflows, with a window so short that each resync is
    // alone in it: the viewer is never hung up.
    let mut feed = Feed::new();
    let (slow, _) = FakeSink::new();
    let (mut fwd, cancel, counters) = forwarder(&feed, slow.clone());
    fwd.policy.resync_window = Duration::ZERO;
    tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    let mut next = 0u16;
    for round in 1..=PATIENT.max_resyncs + 1 {
        slow.pause(true);
        feed.send(next..next + 600).await;
        next += 600;
        slow.pause(false);
        while counters.resyncs.load(Relaxed) < round as u64 {
            feed.send(next..next + 1).await;
            next += 1;
            tokio::task::yield_now().await;
        }
    }
    assert!(
        !cancel.is_cancelled(),
        "hung up for resyncs out of the window"
    );
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_from_the_shared_history() {
    let mut feed = Feed::new();
    let (sink, feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    feed.send(0..50).await;
    until("50 packets", || sink.count() == 50).await;
    let lost = sink.sent()[20].clone();
    feedback
        .send(Feedback::Nack(vec![lost.header.sequence_number, 60_000]))
        .await
        .unwrap();
    // A live packet after the NACK: feedback is taken first, so once the
    // marker is out the NACK has been answered.
    feed.send(50..51).await;
    until("the marker packet", || {
        sink.sent().last().map(source_seq) == Some(50)
    })
    .await;
    let sent = sink.sent();
    assert_eq!(sent.len(), 52, "one retransmission and the marker");
    let again = &sent[50];
    assert_eq!(
        again.header, lost.header,
        "not the same packet under the same numbers"
    );
    assert_eq!(again.payload, lost.payload);
    assert_eq!(counters.nacks.load(Relaxed), 2);
    assert_eq!(
        counters.retransmitted.load(Relaxed),
        1,
        "only the packet it still has"
    );
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_are_answered_from_the_cache_at_most_once_per_interval() {
    let mut feed = Feed::new();
    let (sink, feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    feed.send(0..150).await; // the cache holds 100..150
    until("150 packets", || sink.count() == 150).await;
    feedback.send(Feedback::KeyframeRequest).await.unwrap();
    until("the cached GOP again", || sink.count() == 200).await;
    let sent = sink.sent();
    assert_eq!(
        sent[150].payload[0] & 0x1f,
        7,
        "the replay does not start with the keyframe"
    );
    assert_contiguous(&sent);
    // A second request within the interval, then a live marker packet.
    feedback.send(Feedback::KeyframeRequest).await.unwrap();
    feed.send(150..151).await;
    until("the marker packet", || {
        sink.sent().last().map(source_seq) == Some(150)
    })
    .await;
    assert_eq!(sink.count(), 201, "answered twice within the interval");
    assert_eq!(counters.keyframe_requests.load(Relaxed), 2);
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_gop_a_viewer_waits_for_the_next_keyframe() {
    let mut feed = Feed::with(None);
    feed.send(50..60).await; // mid-GOP, before the viewer
    let (sink, _) = FakeSink::new();
    let (fwd, _, _) = forwarder(&feed, sink.clone());
    tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    feed.send(60..250).await; // keyframes at 100 and 200
    until("the packets from the keyframe on", || {
        sink.sent().last().map(source_seq) == Some(249)
    })
    .await;
    let sent = sink.sent();
    assert_eq!(
        sent.len(),
        150,
        "packets before the keyframe reached the viewer"
    );
    assert_eq!(
        sent[0].payload[0] & 0x1f,
        7,
        "the first packet is not a keyframe start"
    );
    assert_eq!(source_seq(&sent[0]), 100, "not the next keyframe");
    assert_contiguous(&sent);
    feed.src.close().await;
}

/// Loss before the source (a gap in FFmpeg's numbers) is every viewer's and
/// no replay can mend it: the viewer is not resynced for it, and the packets
/// after the gap flow on. Only the source's own drops for a viewer resync it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_before_the_source_is_passed_on_not_resynced() {
    let mut feed = Feed::new();
    let (sink, _feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    tokio::spawn(fwd.run());
    feed.subscribed(1).await;
    feed.send(0..30).await;
    feed.send(31..40).await; // 30 never reached the source
    feed.send(45..60).await; // nor did 40-44
    until("every packet that arrived", || {
        sink.sent().last().map(source_seq) == Some(59)
    })
    .await;
    assert_eq!(
        counters.resyncs.load(Relaxed),
        0,
        "resynced for upstream loss"
    );
    let sent = sink.sent();
    assert_eq!(
        sent.len(),
        30 + 9 + 15,
        "every packet that arrived went out"
    );
    assert_contiguous(&sent);
    feed.src.close().await;
}
