//! The forwarder against a real source socket and a stand-in viewer. Every
//! wait is on an event (a probe subscriber's queue, what the viewer got, a
//! cancellation); time limits in the policy are set far beyond any test.

use super::*;
use crate::profile::CacheLimits;
use crate::rtp::RtpPacket;
use crate::source::{Source, SourceKind};
use std::net::UdpSocket;
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

/// A stand-in viewer: records what it is sent (a watch, so a test waits
/// for what it needs), can be paused (writes wait until it resumes), and
/// sends the feedback a test queues.
struct FakeSink {
    sent: watch::Sender<Vec<rtc::rtp::Packet>>,
    paused: watch::Sender<bool>,
    feedback: tokio::sync::Mutex<mpsc::Receiver<Feedback>>,
}

impl FakeSink {
    fn new() -> (Arc<Self>, mpsc::Sender<Feedback>) {
        let (tx, rx) = mpsc::channel(8);
        let sink = Arc::new(Self {
            sent: watch::channel(Vec::new()).0,
            paused: watch::channel(false).0,
            feedback: tokio::sync::Mutex::new(rx),
        });
        (sink, tx)
    }

    fn sent(&self) -> Vec<rtc::rtp::Packet> {
        self.sent.borrow().clone()
    }

    fn count(&self) -> usize {
        self.sent.borrow().len()
    }

    /// Waits until what the viewer was sent satisfies `cond`; fails the
    /// test after [`PATIENCE`].
    async fn until(&self, what: &str, cond: impl Fn(&[rtc::rtp::Packet]) -> bool) {
        let mut sent = self.sent.subscribe();
        tokio::time::timeout(PATIENCE, sent.wait_for(|v| cond(v)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the sink is alive");
    }

    /// Waits until the last packet sent carries source number `seq`.
    async fn until_last(&self, what: &str, seq: u16) {
        let want = (seq & 0xff) as u8;
        self.until(what, |v| v.last().map(source_seq) == Some(want))
            .await;
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
        self.sent.send_modify(|v| v.push(packet));
        Ok(())
    }

    async fn feedback(&self) -> Option<Feedback> {
        self.feedback.lock().await.recv().await
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

/// A video source, what feeds it over loopback UDP, and a probe subscriber
/// that sees each packet the source took.
struct Feed {
    src: Source,
    tx: UdpSocket,
    probe: mpsc::Receiver<RtpPacket>,
}

impl Feed {
    async fn new() -> Self {
        Self::with(Some(CacheLimits {
            max_bytes: 1_000_000,
            max_age: Duration::from_secs(3600),
        }))
        .await
    }

    async fn with(cache: Option<CacheLimits>) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let kind = SourceKind::Video {
            pt: Some(102),
            cache,
        };
        let src = Source::start(sock, "video", kind).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(("127.0.0.1", port)).unwrap();
        let probe = src.handle().subscribe(64, vec![]).await.unwrap().live;
        Self { src, tx, probe }
    }

    /// Sends packets `range`, a few at a time, each batch once the probe has
    /// seen the last: no socket buffer can overflow.
    async fn send(&mut self, range: std::ops::Range<u16>) {
        let seqs: Vec<u16> = range.collect();
        for batch in seqs.chunks(32) {
            for seq in batch {
                self.tx.send(&h264(*seq)).unwrap();
            }
            for _ in batch {
                tokio::time::timeout(PATIENCE, self.probe.recv())
                    .await
                    .expect("the source did not take what was sent")
                    .expect("the source closed");
            }
        }
    }

    /// Overflows `slow`'s queue while it is paused, then lets it move and
    /// sends on until it has resynced once more (or was hung up). Starts at
    /// source number `next`; returns the next unsent one.
    async fn overflow(
        &mut self,
        slow: &FakeSink,
        counters: &ViewerCounters,
        cancel: &CancellationToken,
        mut next: u16,
    ) -> u16 {
        let resynced = counters.resyncs.load(Relaxed) + 1;
        slow.pause(true);
        self.send(next..next + 600).await;
        next += 600;
        slow.pause(false);
        // The next packet it takes tells it packets were dropped.
        while counters.resyncs.load(Relaxed) < resynced && !cancel.is_cancelled() {
            self.send(next..next + 1).await;
            next += 1;
            tokio::task::yield_now().await;
        }
        next
    }
}

/// Starts `fwd` once its subscription is in place.
async fn start(fwd: Forwarder) -> tokio::task::JoinHandle<()> {
    let sub = fwd.subscribe().await.expect("the source is open");
    tokio::spawn(fwd.forward(sub))
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
    let mut feed = Feed::new().await;
    let (a, _) = FakeSink::new();
    let (b, _) = FakeSink::new();
    let (stuck, _) = FakeSink::new();
    stuck.pause(true);
    let mut counters = Vec::new();
    for sink in [&a, &b, &stuck] {
        let (fwd, _, c) = forwarder(&feed, sink.clone());
        start(fwd).await;
        counters.push(c);
    }
    feed.send(0..1500).await;
    for fast in [&a, &b] {
        fast.until("every packet", |v| v.len() == 1500).await;
    }
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
    stuck
        .until_last("the stuck viewer back on live", 1699)
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
    let mut feed = Feed::new().await;
    let (slow, _) = FakeSink::new();
    let (fwd, cancel, counters) = forwarder(&feed, slow.clone());
    let task = start(fwd).await;
    // Each round overflows the viewer's queue while it is stuck.
    let mut next = 0u16;
    for _ in 0..=PATIENT.max_resyncs {
        next = feed.overflow(&slow, &counters, &cancel, next).await;
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
    let mut feed = Feed::new().await;
    let (slow, _) = FakeSink::new();
    let (mut fwd, cancel, counters) = forwarder(&feed, slow.clone());
    fwd.policy.resync_window = Duration::ZERO;
    start(fwd).await;
    let mut next = 0u16;
    for _ in 0..=PATIENT.max_resyncs {
        next = feed.overflow(&slow, &counters, &cancel, next).await;
    }
    assert_eq!(
        counters.resyncs.load(Relaxed) as usize,
        PATIENT.max_resyncs + 1
    );
    assert!(
        !cancel.is_cancelled(),
        "hung up for resyncs out of the window"
    );
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_from_the_shared_history() {
    let mut feed = Feed::new().await;
    let (sink, feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    start(fwd).await;
    feed.send(0..50).await;
    sink.until("50 packets", |v| v.len() == 50).await;
    let lost = sink.sent()[20].clone();
    feedback
        .send(Feedback::Nack(vec![lost.header.sequence_number, 60_000]))
        .await
        .unwrap();
    // A live packet after the NACK: feedback is taken first, so once the
    // marker is out the NACK has been answered.
    feed.send(50..51).await;
    sink.until_last("the marker packet", 50).await;
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
    let mut feed = Feed::new().await;
    let (sink, feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    start(fwd).await;
    feed.send(0..150).await; // the cache holds 100..150
    sink.until("150 packets", |v| v.len() == 150).await;
    feedback.send(Feedback::KeyframeRequest).await.unwrap();
    sink.until("the cached GOP again", |v| v.len() == 200).await;
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
    sink.until_last("the marker packet", 150).await;
    assert_eq!(sink.count(), 201, "answered twice within the interval");
    assert_eq!(counters.keyframe_requests.load(Relaxed), 2);
    feed.src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_gop_a_viewer_waits_for_the_next_keyframe() {
    let mut feed = Feed::with(None).await;
    feed.send(50..60).await; // mid-GOP, before the viewer
    let (sink, _) = FakeSink::new();
    let (fwd, _, _) = forwarder(&feed, sink.clone());
    start(fwd).await;
    feed.send(60..250).await; // keyframes at 100 and 200
    sink.until_last("the packets from the keyframe on", 249)
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
    let mut feed = Feed::new().await;
    let (sink, _feedback) = FakeSink::new();
    let (fwd, _, counters) = forwarder(&feed, sink.clone());
    start(fwd).await;
    feed.send(0..30).await;
    feed.send(31..40).await; // 30 never reached the source
    feed.send(45..60).await; // nor did 40-44
    sink.until_last("every packet that arrived", 59).await;
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
