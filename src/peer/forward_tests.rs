use super::*;
use crate::source::gop::CacheLimits;
use crate::source::{Source, SourceKind};
use std::net::UdpSocket;
use std::sync::Mutex;
use tokio::sync::{Semaphore, mpsc};

/// A stand-in viewer: records what it is sent, can be held up by a gate,
/// and sends the feedback a test queues.
struct FakeSink {
    sent: Mutex<Vec<rtc::rtp::Packet>>,
    gate: Option<Semaphore>,
    delay: Duration,
    feedback: tokio::sync::Mutex<mpsc::Receiver<Feedback>>,
}

impl FakeSink {
    fn new(gate: Option<Semaphore>, delay: Duration) -> (Arc<Self>, mpsc::Sender<Feedback>) {
        let (tx, rx) = mpsc::channel(8);
        let sink = Arc::new(Self {
            sent: Mutex::default(),
            gate,
            delay,
            feedback: tokio::sync::Mutex::new(rx),
        });
        (sink, tx)
    }

    fn sent(&self) -> Vec<rtc::rtp::Packet> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl MediaSink for FakeSink {
    async fn write(&self, packet: rtc::rtp::Packet) -> Result<(), String> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.map_err(|e| e.to_string())?.forget();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.sent.lock().unwrap().push(packet);
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

fn video_source() -> (Source, UdpSocket) {
    video_source_with(Some(CacheLimits {
        max_bytes: 1_000_000,
        max_age: Duration::from_secs(60),
    }))
}

fn video_source_with(cache: Option<CacheLimits>) -> (Source, UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let src = Source::start(
        sock,
        "video",
        SourceKind::Video {
            pt: Some(102),
            cache,
        },
    )
    .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(("127.0.0.1", port)).unwrap();
    (src, tx)
}

fn forwarder(
    src: &Source,
    sink: Arc<FakeSink>,
) -> (Forwarder, CancellationToken, Arc<ViewerCounters>) {
    let cancel = CancellationToken::new();
    let counters = Arc::new(ViewerCounters::default());
    let fwd = Forwarder {
        sink,
        source: src.handle(),
        video: true,
        pt: 125,
        ssrc: 42,
        cancel: cancel.clone(),
        counters: counters.clone(),
        latency: Arc::default(),
    };
    (fwd, cancel, counters)
}

/// Sends packets `range` at about `per_ms` a millisecond.
async fn send(tx: &UdpSocket, range: std::ops::Range<u16>, per_ms: u16) {
    for seq in range {
        tx.send(&h264(seq)).unwrap();
        if seq % per_ms == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_viewer_never_holds_up_the_others_and_restarts_on_a_keyframe() {
    let (src, tx) = video_source();
    let (a, _) = FakeSink::new(None, Duration::ZERO);
    let (b, _) = FakeSink::new(None, Duration::ZERO);
    let (stuck, _) = FakeSink::new(Some(Semaphore::new(0)), Duration::ZERO);
    let mut counters = Vec::new();
    for sink in [&a, &b, &stuck] {
        let (fwd, _, c) = forwarder(&src, sink.clone());
        tokio::spawn(fwd.run());
        counters.push(c);
    }
    settle().await;
    send(&tx, 0..1500, 5).await;
    settle().await;
    // The others got every packet, in order, renumbered without gaps.
    for fast in [&a, &b] {
        let sent = fast.sent();
        assert_eq!(sent.len(), 1500);
        assert_contiguous(&sent);
        assert_eq!(sent[0].header.payload_type, 125);
        assert_eq!(sent[0].header.ssrc, 42);
    }
    // The stuck one lost packets at the source and was counted...
    assert!(counters[2].dropped.load(Relaxed) > 0);
    // ...and once it moves again it starts over from a keyframe.
    stuck.gate.as_ref().unwrap().add_permits(100_000);
    settle().await;
    send(&tx, 1500..1700, 5).await;
    settle().await;
    let sent = stuck.sent();
    assert_contiguous(&sent);
    assert_eq!(counters[2].resyncs.load(Relaxed), 1);
    // After what was queued before the overflow (the source numbers, kept in
    // the payload, run on), the next packet starts a keyframe.
    let jump = sent
        .windows(2)
        .position(|w| w[1].payload[1] != w[0].payload[1].wrapping_add(1))
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
    assert_eq!(
        sent.last().unwrap().payload[1],
        (1699 & 0xff) as u8,
        "not back on live"
    );
    src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_keeps_falling_behind_is_hung_up() {
    let (src, tx) = video_source();
    let (slow, _) = FakeSink::new(None, Duration::from_millis(4));
    let (fwd, cancel, counters) = forwarder(&src, slow.clone());
    let task = tokio::spawn(fwd.run());
    settle().await;
    send(&tx, 0..12_000, 2).await;
    tokio::time::timeout(Duration::from_secs(10), cancel.cancelled())
        .await
        .expect("never hung up");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("forwarder did not end")
        .unwrap();
    assert_eq!(counters.resyncs.load(Relaxed) as usize, MAX_RESYNCS + 1);
    src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_from_the_shared_history() {
    let (src, tx) = video_source();
    let (sink, feedback) = FakeSink::new(None, Duration::ZERO);
    let (fwd, _, counters) = forwarder(&src, sink.clone());
    tokio::spawn(fwd.run());
    settle().await;
    send(&tx, 0..50, 5).await;
    settle().await;
    let sent = sink.sent();
    let lost = sent[20].clone();
    feedback
        .send(Feedback::Nack(vec![lost.header.sequence_number, 60_000]))
        .await
        .unwrap();
    settle().await;
    let again = sink.sent().last().unwrap().clone();
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
    src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_are_answered_from_the_cache_at_most_every_two_seconds() {
    let (src, tx) = video_source();
    let (sink, feedback) = FakeSink::new(None, Duration::ZERO);
    let (fwd, _, counters) = forwarder(&src, sink.clone());
    tokio::spawn(fwd.run());
    settle().await;
    send(&tx, 0..150, 5).await; // the cache holds 100..150
    settle().await;
    let before = sink.sent().len();
    feedback.send(Feedback::KeyframeRequest).await.unwrap();
    settle().await;
    let sent = sink.sent();
    assert_eq!(sent.len() - before, 50, "the cached GOP was not re-sent");
    assert_eq!(
        sent[before].payload[0] & 0x1f,
        7,
        "the replay does not start with the keyframe"
    );
    assert_contiguous(&sent);
    feedback.send(Feedback::KeyframeRequest).await.unwrap();
    settle().await;
    assert_eq!(sink.sent().len(), sent.len(), "answered twice within 2 s");
    assert_eq!(counters.keyframe_requests.load(Relaxed), 2);
    src.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_gop_a_viewer_waits_for_the_next_keyframe() {
    let (src, tx) = video_source_with(None);
    send(&tx, 50..60, 5).await; // mid-GOP, before the viewer
    let (sink, _) = FakeSink::new(None, Duration::ZERO);
    let (fwd, _, _) = forwarder(&src, sink.clone());
    tokio::spawn(fwd.run());
    settle().await;
    send(&tx, 60..250, 5).await; // keyframes at 100 and 200
    settle().await;
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
    assert_eq!(sent[0].payload[1], 100, "not the next keyframe");
    assert_contiguous(&sent);
    src.close().await;
}

/// Loss before the source (a gap in FFmpeg's numbers) is every viewer's and
/// no replay can mend it: the viewer is not resynced for it, and the packets
/// after the gap flow on. Only the source's own drops for a viewer resync it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_before_the_source_is_passed_on_not_resynced() {
    let (src, tx) = video_source();
    let (sink, _feedback) = FakeSink::new(None, Duration::ZERO);
    let (fwd, _, counters) = forwarder(&src, sink.clone());
    tokio::spawn(fwd.run());
    settle().await;
    send(&tx, 0..30, 5).await;
    send(&tx, 31..40, 5).await; // 30 never reached the source
    send(&tx, 45..60, 5).await; // nor did 40-44
    settle().await;
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
    src.close().await;
}
