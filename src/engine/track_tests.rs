//! A viewer's track against a real source: packets go to the source's
//! socket, come back marked (keyframes) through a probe feed, and are handed
//! to the track by the test, with `now` from the test. No sleeps and no
//! tasks between the track and what it sends.

use super::*;
use crate::engine::ladder::{Choice, SwitchAt, TrackLadder};
use crate::profile::CacheLimits;
use crate::source::{Source, SourceKind};
use std::net::UdpSocket;
use tokio::sync::mpsc;

/// How long a test waits for the source before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A policy whose time limits no test run reaches, with a short queue.
const PATIENT: ForwardPolicy = ForwardPolicy {
    max_resyncs: 3,
    resync_window: Duration::from_secs(3600),
    keyframe_answer_every: Duration::from_secs(3600),
    queue: 50,
    switch_at: SwitchAt::Keyframe,
};

const KEY_EVERY: u16 = 100;

/// Packet `seq` of a stream of one-packet frames with a keyframe (an SPS
/// packet) every [`KEY_EVERY`] packets; the payload's last byte is `seq`.
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

/// Packet `seq` of a stream of four-packet frames (the last one marked),
/// a keyframe every [`KEY_EVERY`] packets; the payload's last byte is `seq`.
fn h264_in_frames(seq: u16) -> Vec<u8> {
    let mut v = h264(seq);
    let ts = u32::from(seq / 4) * 3000;
    v[4..8].copy_from_slice(&ts.to_be_bytes());
    if seq % 4 != 3 {
        v[1] &= 0x7f;
    }
    v
}

/// What a track wrote.
#[derive(Default)]
struct Sent(Vec<rtc::rtp::Packet>);

impl PacketOut for Sent {
    fn write(&mut self, packet: rtc::rtp::Packet, _: Option<Instant>) {
        self.0.push(packet);
    }
}

impl Sent {
    /// The source numbers (low byte) of what was sent.
    fn sources(&self) -> Vec<u8> {
        self.0
            .iter()
            .map(|p| p.payload[p.payload.len() - 1])
            .collect()
    }
}

/// The viewer's numbers run on without a gap or a step back.
fn assert_contiguous(sent: &[rtc::rtp::Packet]) {
    for w in sent.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1),
            "a gap in the viewer's numbering"
        );
        assert!(
            w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) as i32 >= 0,
            "time went back"
        );
    }
}

/// A video source, what feeds it over loopback UDP, and a probe feed that
/// gives back each packet as the source took it.
struct Feed {
    src: Source,
    tx: UdpSocket,
    probe: mpsc::Receiver<RtpPacket>,
}

impl Feed {
    async fn new(cache: bool) -> Self {
        let limits = CacheLimits {
            max_bytes: 1_000_000,
            max_age: Duration::from_secs(3600),
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let kind = SourceKind::Video {
            pt: Some(102),
            cache: cache.then_some(limits),
        };
        let src = Source::start(sock, "video", kind).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(("127.0.0.1", port)).unwrap();
        let (ptx, probe) = mpsc::channel(64);
        assert!(src.handle().subscribe(ptx).await);
        Self { src, tx, probe }
    }

    /// Sends `seqs` through the source (a few at a time, so no socket buffer
    /// overflows) and returns them as it took them.
    async fn through(&mut self, seqs: std::ops::Range<u16>) -> Vec<RtpPacket> {
        self.through_as(seqs, h264).await
    }

    /// [`Feed::through`] with packets made by `make`.
    async fn through_as(
        &mut self,
        seqs: std::ops::Range<u16>,
        make: fn(u16) -> Vec<u8>,
    ) -> Vec<RtpPacket> {
        let seqs: Vec<u16> = seqs.collect();
        let mut out = Vec::new();
        for batch in seqs.chunks(32) {
            for seq in batch {
                self.tx.send(&make(*seq)).unwrap();
            }
            for _ in batch {
                let p = tokio::time::timeout(PATIENCE, self.probe.recv())
                    .await
                    .expect("the source did not take what was sent")
                    .expect("the source closed");
                out.push(p);
            }
        }
        out
    }

    fn track(&self, policy: ForwardPolicy) -> (TrackOut, Arc<ViewerCounters>) {
        let counters = Arc::new(ViewerCounters::default());
        let t = TrackOut::new(self.src.handle(), true, 125, 42, counters.clone(), policy);
        (t, counters)
    }
}

/// A cached source fed packets `0..until` (a keyframe at 0 and every
/// [`KEY_EVERY`]), and a track on it whose connection just came up.
async fn started(until: u16, policy: ForwardPolicy) -> (Feed, TrackOut, Arc<ViewerCounters>) {
    let mut feed = Feed::new(true).await;
    feed.through(0..until).await;
    let (mut t, counters) = feed.track(policy);
    t.start();
    (feed, t, counters)
}

/// Paces out everything queued.
fn drain(t: &mut TrackOut, out: &mut Sent) {
    while t.pace(BACKLOG_BURST, Instant::now(), out) {}
}

#[tokio::test]
async fn a_joining_viewer_gets_the_cached_gop_then_live_without_gap_or_duplicate() {
    let mut feed = Feed::new(true).await;
    let early = feed.through(0..130).await; // a keyframe at 100
    let (mut t, _) = feed.track(PATIENT);
    t.start();
    assert_eq!(t.queued(), 30, "the GOP from the keyframe at 100");
    // Live packets the shard still held (already in the snapshot) are
    // skipped; later ones queue behind the GOP.
    let now = Instant::now();
    let mut out = Sent::default();
    for p in &early[120..] {
        assert_eq!(t.live(p, 0, now, &mut out), Verdict::Fine);
    }
    for p in feed.through(130..140).await {
        t.live(&p, 0, now, &mut out);
    }
    assert!(out.0.is_empty(), "live went before the paced GOP");
    assert!(
        t.pace(BACKLOG_BURST, Instant::now(), &mut out),
        "more than one burst queued"
    );
    assert_eq!(out.0.len(), BACKLOG_BURST);
    drain(&mut t, &mut out);
    let want: Vec<u8> = (100..140).map(|s: u16| s as u8).collect();
    assert_eq!(out.sources(), want);
    assert_contiguous(&out.0);
    assert!(
        out.0
            .iter()
            .all(|p| p.header.payload_type == 125 && p.header.ssrc == 42)
    );
    // With the queue empty, live goes straight out.
    for p in feed.through(140..141).await {
        t.live(&p, 0, now, &mut out);
    }
    assert_eq!(out.sources().last(), Some(&140));
}

#[tokio::test]
async fn an_overflowing_queue_resyncs_from_the_cache_and_never_touches_another_viewer() {
    let mut feed = Feed::new(true).await;
    feed.through(0..110).await;
    let (mut slow, counters) = feed.track(PATIENT);
    let (mut fast, _) = feed.track(PATIENT);
    slow.start();
    fast.start();
    let (mut slow_out, mut fast_out) = (Sent::default(), Sent::default());
    drain(&mut fast, &mut fast_out);
    let now = Instant::now();
    // The slow viewer's GOP is never paced: live piles up behind it.
    for p in feed.through(110..200).await {
        assert_eq!(slow.live(&p, 0, now, &mut slow_out), Verdict::Fine);
        fast.live(&p, 0, now, &mut fast_out);
    }
    assert_eq!(counters.resyncs.load(Relaxed), 1, "not resynced");
    assert!(counters.dropped.load(Relaxed) >= PATIENT.queue as u64);
    // It restarts from the keyframe, whole frames only, numbers running on.
    drain(&mut slow, &mut slow_out);
    assert_eq!(slow_out.sources().first(), Some(&100));
    assert_contiguous(&slow_out.0);
    let all: Vec<u8> = (100..200).map(|s: u16| s as u8).collect();
    assert_eq!(fast_out.sources(), all, "the other viewer missed something");
    assert_contiguous(&fast_out.0);
}

/// Overflows `t`'s queue (its GOP never paced) once more; returns the
/// verdict of the packet that overflowed it.
async fn overflow(feed: &mut Feed, t: &mut TrackOut, next: &mut u16, now: Instant) -> Verdict {
    let mut out = Sent::default();
    let mut verdict = Verdict::Fine;
    for p in feed.through(*next..*next + PATIENT.queue as u16 + 40).await {
        let v = t.live(&p, 0, now, &mut out);
        if v == Verdict::HangUp {
            verdict = v;
        }
    }
    *next += PATIENT.queue as u16 + 40;
    verdict
}

#[tokio::test]
async fn a_viewer_that_keeps_falling_behind_is_hung_up() {
    let (mut feed, mut t, counters) = started(101, PATIENT).await;
    let now = Instant::now();
    let mut next = 101;
    for round in 1..=PATIENT.max_resyncs {
        let v = overflow(&mut feed, &mut t, &mut next, now).await;
        assert_eq!(v, Verdict::Fine, "hung up after {round} resyncs");
    }
    assert_eq!(
        overflow(&mut feed, &mut t, &mut next, now).await,
        Verdict::HangUp
    );
    assert_eq!(
        counters.resyncs.load(Relaxed),
        PATIENT.max_resyncs as u64 + 1
    );
}

#[tokio::test]
async fn resyncs_spread_over_more_than_the_window_are_forgiven() {
    let policy = ForwardPolicy {
        resync_window: Duration::from_secs(10),
        ..PATIENT
    };
    let (mut feed, mut t, counters) = started(101, policy).await;
    let mut next = 101;
    let mut now = Instant::now();
    for _ in 0..=PATIENT.max_resyncs + 2 {
        now += Duration::from_secs(11);
        assert_eq!(
            overflow(&mut feed, &mut t, &mut next, now).await,
            Verdict::Fine
        );
    }
    assert_eq!(
        counters.resyncs.load(Relaxed),
        PATIENT.max_resyncs as u64 + 3
    );
}

#[tokio::test]
async fn nacks_are_answered_from_the_shared_history() {
    let (mut feed, mut t, counters) = started(100, PATIENT).await;
    let now = Instant::now();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    for p in feed.through(100..120).await {
        t.live(&p, 0, now, &mut out);
    }
    let lost: Vec<u16> = [3usize, 7]
        .iter()
        .map(|&i| out.0[i].header.sequence_number)
        .collect();
    let mut again = Sent::default();
    t.nack(&lost, Instant::now(), &mut again);
    assert_eq!(again.0.len(), 2);
    for (resent, i) in again.0.iter().zip([3usize, 7]) {
        assert_eq!(
            resent.header.sequence_number,
            out.0[i].header.sequence_number
        );
        assert_eq!(resent.header.timestamp, out.0[i].header.timestamp);
        assert_eq!(resent.payload, out.0[i].payload);
    }
    assert_eq!(counters.nacks.load(Relaxed), 2);
    assert_eq!(counters.retransmitted.load(Relaxed), 2);
    // A number never sent is not answered.
    let mut none = Sent::default();
    t.nack(
        &[out.0[0].header.sequence_number.wrapping_sub(5000)],
        Instant::now(),
        &mut none,
    );
    assert!(none.0.is_empty());
}

#[tokio::test]
async fn keyframe_requests_are_answered_from_the_cache_at_most_once_per_interval() {
    let (_feed, mut t, counters) = started(110, PATIENT).await;
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let now = Instant::now();
    t.keyframe_request(now);
    assert_eq!(t.queued(), 10, "not answered from the cache");
    drain(&mut t, &mut out);
    t.keyframe_request(now + Duration::from_secs(1));
    assert_eq!(t.queued(), 0, "answered twice within the interval");
    t.keyframe_request(now + PATIENT.keyframe_answer_every);
    assert_eq!(t.queued(), 10, "not answered after the interval");
    drain(&mut t, &mut out);
    assert_eq!(counters.keyframe_requests.load(Relaxed), 3);
    assert_eq!(counters.resyncs.load(Relaxed), 0, "asked for: not a resync");
    assert_contiguous(&out.0);
}

#[tokio::test]
async fn without_a_cached_gop_a_viewer_waits_for_the_next_keyframe() {
    let mut feed = Feed::new(false).await;
    feed.through(0..150).await;
    let (mut t, _) = feed.track(PATIENT);
    t.start();
    assert_eq!(t.queued(), 0);
    let now = Instant::now();
    let mut out = Sent::default();
    for p in feed.through(150..220).await {
        t.live(&p, 0, now, &mut out);
    }
    assert_eq!(
        out.sources().first(),
        Some(&200),
        "did not start on a keyframe"
    );
    assert_eq!(out.0.len(), 20);
}

/// Loss before the source (a gap in FFmpeg's numbers) is every viewer's and
/// no replay can mend it: the packets after the gap flow on. Only a feed's
/// own drops (a marked packet) resync.
#[tokio::test]
async fn a_gap_before_the_source_is_passed_on_a_feed_drop_resyncs() {
    let (mut feed, mut t, counters) = started(101, PATIENT).await;
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let now = Instant::now();
    let after_gap = feed.through(110..112).await;
    for p in &after_gap {
        t.live(p, 0, now, &mut out);
    }
    assert_eq!(out.sources(), [100, 110, 111]);
    assert_contiguous(&out.0);
    assert_eq!(counters.resyncs.load(Relaxed), 0);
    let mut p = feed.through(112..113).await.remove(0);
    p.after_drop = true;
    t.live(&p, 0, now, &mut out);
    assert_eq!(counters.resyncs.load(Relaxed), 1);
    assert!(t.queued() > 0, "not restarted from the cache");
}

#[tokio::test]
async fn a_link_that_dropped_packets_resyncs_video_with_the_next_packet() {
    let (mut feed, mut t, counters) = started(101, PATIENT).await;
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let now = Instant::now();
    t.link_overflowed();
    for p in feed.through(101..103).await {
        t.live(&p, 0, now, &mut out);
    }
    assert_eq!(counters.resyncs.load(Relaxed), 1);
    drain(&mut t, &mut out);
    assert_eq!(
        out.sources(),
        [100, 100, 101, 102],
        "not restarted at the keyframe"
    );
    assert_contiguous(&out.0);
}

/// Two cached renditions of one stream (rung 0 numbered from 0, rung 1 from
/// 1000: payloads tell them apart), fed `0..until` and `1000..1000 + until`.
async fn two_rungs(until: u16) -> (Feed, Feed, Vec<super::super::ladder::RungOut>) {
    two_rungs_as(until, h264).await
}

/// [`two_rungs`] with packets made by `make`.
async fn two_rungs_as(
    until: u16,
    make: fn(u16) -> Vec<u8>,
) -> (Feed, Feed, Vec<super::super::ladder::RungOut>) {
    let mut best = Feed::new(true).await;
    let mut lean = Feed::new(true).await;
    best.through_as(0..until, make).await;
    lean.through_as(1000..1000 + until, make).await;
    let rung = |f: &Feed, key: usize, name: &str, bitrate: u64| super::super::ladder::RungOut {
        source: f.src.handle(),
        key,
        name: name.to_owned(),
        bitrate,
    };
    let rungs = vec![
        rung(&best, 1, "720p", 2_500_000),
        rung(&lean, 2, "360p", 700_000),
    ];
    (best, lean, rungs)
}

fn laddered(
    best: &Feed,
    rungs: Vec<super::super::ladder::RungOut>,
    policy: ForwardPolicy,
) -> (TrackOut, Arc<ViewerCounters>) {
    let (t, counters) = best.track(policy);
    let l = TrackLadder::new(
        rungs,
        Choice::Auto,
        counters.clone(),
        tracing::Span::none(),
        Instant::now(),
    );
    (t.with_ladder(l), counters)
}

#[tokio::test]
async fn a_switch_waits_for_the_target_keyframe_and_numbering_runs_on() {
    let (mut best, mut lean, rungs) = two_rungs(150).await;
    let (mut t, counters) = laddered(&best, rungs, PATIENT);
    t.start();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    assert_eq!(counters.rung.load(Relaxed), 1, "auto starts on the best");
    let t0 = Instant::now();
    t.choose(Choice::Pinned(1), t0).unwrap();
    let l = t.ladder.as_mut().unwrap();
    assert!(
        std::mem::take(&mut l.feeds_changed),
        "the target's feed is wanted too"
    );
    assert_eq!(l.feeds().collect::<Vec<_>>(), [1, 2]);
    let a = best.through(150..250).await;
    let b = lean.through(1150..1250).await;
    for (i, (pa, pb)) in a.iter().zip(&b).enumerate() {
        let now = t0 + Duration::from_millis(33 * i as u64);
        t.live(pa, 1, now, &mut out);
        t.live(pb, 2, now, &mut out);
    }
    // Rung 0 up to its keyframe at 200 (not sent: the lean rung's comes
    // with the same frame), then only rung 1 from its keyframe at 1200.
    assert_sent(&out, 100..200, 1200..1250);
    let at = out.0.len() - 50;
    let step = out.0[at]
        .header
        .timestamp
        .wrapping_sub(out.0[at - 1].header.timestamp);
    assert!((1..=6000).contains(&step), "a frame's time on, not {step}");
    let l = t.ladder.as_ref().unwrap();
    assert_eq!((l.current, l.feeds().collect::<Vec<_>>()), (1, vec![2]));
    assert_eq!(counters.switches_down.load(Relaxed), 1);
    assert_eq!(counters.rung.load(Relaxed), 2);
    // NACKs on both sides of the switch come from the right history.
    let lost = [
        out.0[at - 3].header.sequence_number,
        out.0[at + 3].header.sequence_number,
    ];
    let mut again = Sent::default();
    t.nack(&lost, Instant::now(), &mut again);
    assert_eq!(again.0.len(), 2);
    assert_eq!(again.0[0].payload, out.0[at - 3].payload);
    assert_eq!(again.0[1].payload, out.0[at + 3].payload);
}

#[tokio::test]
async fn a_switch_from_the_cache_starts_at_once_from_the_target_gop() {
    let (mut best, mut lean, rungs) = two_rungs(150).await;
    let policy = ForwardPolicy {
        switch_at: SwitchAt::Cache,
        ..PATIENT
    };
    let (mut t, counters) = laddered(&best, rungs, policy);
    t.start();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let now = Instant::now();
    t.choose(Choice::Pinned(1), now).unwrap();
    assert_eq!(t.ladder.as_ref().unwrap().current, 1, "made at once");
    assert_eq!(
        t.queued(),
        50,
        "the lean rung's GOP from its keyframe at 1100"
    );
    // Live packets of the old rung are not its any more; the new rung's
    // that the GOP already held are skipped.
    let a = best.through(150..160).await;
    let b = lean.through(1150..1160).await;
    for (pa, pb) in a.iter().zip(&b) {
        t.live(pa, 1, now, &mut out);
        t.live(pb, 2, now, &mut out);
    }
    drain(&mut t, &mut out);
    assert_sent(&out, 100..150, 1100..1160);
    assert_eq!(counters.switches_down.load(Relaxed), 1);
}

/// A receiver report of heavy loss.
fn lossy_report() -> crate::engine::adapt::Report {
    crate::engine::adapt::Report {
        lost: 0.5,
        rtt: Some(Duration::from_millis(10)),
        sr_age: None,
    }
}

#[tokio::test]
async fn a_pinned_viewer_never_follows_the_controller() {
    let (best, _lean, rungs) = two_rungs(150).await;
    let (mut t, counters) = laddered(&best, rungs, PATIENT);
    t.choose(Choice::Pinned(0), Instant::now()).unwrap();
    t.start();
    let t0 = Instant::now();
    for i in 0..10 {
        // Heavy loss in every report: an automatic viewer would step down.
        t.report(lossy_report(), t0 + Duration::from_secs(2 * i));
    }
    let l = t.ladder.as_ref().unwrap();
    assert_eq!((l.current, l.pending.is_none()), (0, true));
    assert_eq!(counters.switches_down.load(Relaxed), 0);
    assert!(counters.pinned.load(Relaxed));
    // Back to automatic: loss steps it down.
    t.choose(Choice::Auto, t0).unwrap();
    assert!(!counters.pinned.load(Relaxed));
    for i in 30..32 {
        t.report(lossy_report(), t0 + Duration::from_secs(2 * i));
    }
    let pending = t.ladder.as_ref().unwrap().pending.as_ref().map(|p| p.to);
    assert_eq!(pending, Some(1));
}

#[tokio::test]
async fn a_switch_never_cuts_a_frame_short() {
    let (mut best, mut lean, rungs) = two_rungs_as(152, h264_in_frames).await;
    let (mut t, _) = laddered(&best, rungs, PATIENT);
    t.start();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let now = Instant::now();
    t.choose(Choice::Pinned(1), now).unwrap();
    // The lean rung's keyframe (1200) comes while the best rung's frame of
    // 196..199 is half sent (two packets ahead).
    let a = best.through_as(152..240, h264_in_frames).await;
    let b = lean.through_as(1154..1242, h264_in_frames).await;
    for (pa, pb) in a.iter().zip(&b) {
        t.live(pa, 1, now, &mut out);
        t.live(pb, 2, now, &mut out);
    }
    let want: Vec<u8> = (100..200u16)
        .chain(1200..1242)
        .map(|s| (s & 0xff) as u8)
        .collect();
    assert_eq!(
        out.sources(),
        want,
        "the frame of 196..199 was finished first"
    );
    assert_contiguous(&out.0);
    let last_old = out
        .0
        .iter()
        .position(|p| p.payload[p.payload.len() - 1] == 199)
        .unwrap();
    assert!(
        out.0[last_old].header.marker,
        "the old rung's last packet ends its frame"
    );
}

/// What `out` sent came from the first rung's packets `first` (by their
/// low byte), then the second's `then`, numbered without a gap.
fn assert_sent(out: &Sent, first: std::ops::Range<u16>, then: std::ops::Range<u16>) {
    let want: Vec<u8> = first.chain(then).map(|s| (s & 0xff) as u8).collect();
    assert_eq!(out.sources(), want);
    assert_contiguous(&out.0);
}

/// A started track that sent packets 100..110 live at `t0`; the number
/// it sent `back` packets from the last, for a viewer to ask for.
async fn sent_live(back: usize) -> (Feed, TrackOut, Arc<ViewerCounters>, Instant, u16) {
    let (mut feed, mut t, counters) = started(100, PATIENT).await;
    let t0 = Instant::now();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    for p in feed.through(100..110).await {
        t.live(&p, 0, t0, &mut out);
    }
    let lost = out.0[out.0.len() - back].header.sequence_number;
    (feed, t, counters, t0, lost)
}

#[tokio::test]
async fn a_resend_goes_again_on_its_schedule_and_not_twice_at_once() {
    let (mut feed, mut t, counters, t0, lost) = sent_live(5).await;
    let mut again = Sent::default();
    t.nack(&[lost], t0, &mut again);
    // Asked again at once (a receiver repeating its list): not resent.
    t.nack(&[lost], t0 + Duration::from_millis(50), &mut again);
    assert_eq!(again.0.len(), 1);
    // Live packets take the later copies along: 150 ms after the first,
    // then 350, 700, 1000 and 1300 ms after the copy before, and no more.
    let copies_by = |t: &mut TrackOut, at_ms: u64, p: &crate::rtp::RtpPacket, again: &mut Sent| {
        t.live(p, 0, t0 + Duration::from_millis(at_ms), again);
        again
            .0
            .iter()
            .filter(|p| p.header.sequence_number == lost)
            .count()
    };
    let next = feed.through(110..118).await;
    assert_eq!(copies_by(&mut t, 140, &next[0], &mut again), 1);
    assert_eq!(copies_by(&mut t, 160, &next[1], &mut again), 2);
    assert_eq!(copies_by(&mut t, 500, &next[2], &mut again), 2);
    assert_eq!(copies_by(&mut t, 520, &next[3], &mut again), 3);
    assert_eq!(copies_by(&mut t, 1230, &next[4], &mut again), 4);
    assert_eq!(copies_by(&mut t, 2240, &next[5], &mut again), 5);
    assert_eq!(copies_by(&mut t, 3550, &next[6], &mut again), 6);
    assert_eq!(copies_by(&mut t, 9000, &next[7], &mut again), 6);
    assert_eq!(counters.retransmitted.load(Relaxed), 6);
}

/// A laddered track on the best of two rungs (frames of several
/// packets): past the settling time of its start (`t0`), a second of the
/// best rung, its last packet (185) inside a frame; then `before_stop`;
/// then the viewer's estimate falling to a fraction of what it is sent,
/// by `t1` (returned): a switch down that stops the best rung is pending.
async fn stopped_on_overload(
    before_stop: impl FnOnce(&mut TrackOut, Instant),
) -> (Feed, Feed, TrackOut, Sent, Instant) {
    let (mut best, lean, rungs) = two_rungs_as(152, h264_in_frames).await;
    let (mut t, _) = laddered(&best, rungs, PATIENT);
    t.start();
    let mut out = Sent::default();
    drain(&mut t, &mut out);
    let t0 = Instant::now() + Duration::from_secs(3);
    let a = best.through_as(152..186, h264_in_frames).await;
    for (i, p) in a.iter().enumerate() {
        t.live(p, 1, t0 + Duration::from_millis(30 * i as u64), &mut out);
    }
    before_stop(&mut t, t0);
    let t1 = t0 + Duration::from_millis(1020);
    t.remb(5_000.0, t1);
    t.remb(1_000.0, t1 + Duration::from_millis(10));
    t.remb(900.0, t1 + Duration::from_millis(200));
    let l = t.ladder.as_ref().unwrap();
    let pending = l.pending.as_ref().expect("a switch down");
    assert_eq!((pending.to, pending.stop_current), (1, true));
    (best, lean, t, out, t1)
}

#[tokio::test]
async fn on_an_overloaded_link_the_current_rung_stops_at_its_frame_end() {
    let (mut best, mut lean, mut t, mut out, t1) = stopped_on_overload(|_, _| {}).await;
    t.resend_allowance = 0.0; // spent on resends into the full queue
    // The best rung ends its frame (186, 187) and stops; the lean one
    // starts at its keyframe (1200), not from its cache, though it came
    // later than a rung stopped at its own keyframe waits (the cached
    // GOP's burst would land in the queue the stop drains).
    let now = t1 + Duration::from_millis(900);
    let a = best.through_as(186..204, h264_in_frames).await;
    let b = lean.through_as(1152..1210, h264_in_frames).await;
    for p in &a {
        t.live(p, 1, now, &mut out);
    }
    for p in &b {
        t.live(p, 2, now, &mut out);
    }
    assert_sent(&out, 100..188, 1200..1210);
    assert_eq!(t.ladder.as_ref().unwrap().current, 1);
    assert_eq!(
        t.resend_allowance,
        t.resend_cap(),
        "the stop drained the link: what was lost may go at once"
    );
    assert!(
        t.resend_cap() < super::resend::RESEND_ALLOWANCE_MAX / 2.0,
        "in a burst no bigger than a narrow link carries: {}",
        t.resend_cap()
    );
}

#[tokio::test]
async fn a_laddered_tracks_resend_allowance_grows_with_time() {
    let (best, _lean, rungs) = two_rungs(150).await;
    let (mut t, _) = laddered(&best, rungs, PATIENT);
    let t0 = Instant::now();
    t.resend_allowance = 0.0;
    t.accrued_at = Some(t0);
    // A tenth of a second of 30 % of its rung's 2.5 Mb/s (no estimate yet).
    t.accrue(t0 + Duration::from_millis(100));
    assert!(
        (t.resend_allowance - 9375.0).abs() < 1.0,
        "{}",
        t.resend_allowance
    );
    t.accrue(t0 + Duration::from_secs(10));
    assert_eq!(t.resend_allowance, super::resend::RESEND_ALLOWANCE_MAX);
}

#[tokio::test]
async fn a_later_copy_of_a_resend_is_not_sent_once_far_behind() {
    let (mut feed, mut t, counters, t0, lost) = sent_live(5).await;
    let mut again = Sent::default();
    t.nack(&[lost], t0, &mut again);
    assert_eq!(again.0.len(), 1);
    // 90 packets later (a receiver that got the first copy may have moved
    // 100 past it by the time a late one lands), the copy due is dropped.
    for p in feed.through(110..200).await {
        t.live(&p, 0, t0 + Duration::from_millis(100), &mut again);
    }
    for p in feed.through(200..202).await {
        t.live(&p, 0, t0 + Duration::from_millis(200), &mut again);
    }
    let copies = again
        .0
        .iter()
        .filter(|p| p.header.sequence_number == lost)
        .count();
    assert_eq!(copies, 1);
    assert_eq!(counters.retransmitted.load(Relaxed), 1);
}

#[tokio::test]
async fn a_resend_is_not_repeated_within_the_viewers_round_trip() {
    let (_feed, mut t, counters, t0, lost) = sent_live(2).await;
    // A queue on the path: a round trip of 500 ms.
    t.report(
        crate::engine::adapt::Report {
            lost: 0.0,
            rtt: Some(Duration::from_millis(500)),
            sr_age: None,
        },
        t0,
    );
    let mut again = Sent::default();
    t.nack(&[lost], t0, &mut again);
    // Asked again as the viewer finds new gaps: its resend is on its way.
    t.nack(&[lost], t0 + Duration::from_millis(300), &mut again);
    assert_eq!(counters.retransmitted.load(Relaxed), 1);
    // Past the round trip (and a fifth), asked again: resent.
    t.nack(&[lost], t0 + Duration::from_millis(650), &mut again);
    assert_eq!(counters.retransmitted.load(Relaxed), 2);
}

#[tokio::test]
async fn a_resend_with_no_room_in_the_allowance_goes_once_there_is() {
    let (mut feed, mut t, counters, t0, lost) = sent_live(2).await;
    // A burst of resends spent the allowance.
    t.resend_allowance = 0.0;
    let mut again = Sent::default();
    t.nack(&[lost], t0, &mut again);
    assert_eq!(counters.retransmitted.load(Relaxed), 0);
    // What the track sends refills it; the resend goes when next due.
    for p in feed.through(110..115).await {
        t.live(&p, 0, t0 + Duration::from_millis(100), &mut again);
    }
    assert_eq!(counters.retransmitted.load(Relaxed), 0, "not due yet");
    for p in feed.through(115..116).await {
        t.live(&p, 0, t0 + Duration::from_millis(160), &mut again);
    }
    assert_eq!(counters.retransmitted.load(Relaxed), 1);
    assert!(
        again.0.iter().any(|p| p.header.sequence_number == lost),
        "the packet asked for went"
    );
}

#[tokio::test]
async fn no_copy_of_a_resend_once_the_viewer_asked_again_without_it() {
    let (mut feed, mut t, counters, t0, lost) = sent_live(5).await;
    let other = lost.wrapping_add(2);
    let mut again = Sent::default();
    t.nack(&[lost], t0, &mut again);
    assert_eq!(counters.retransmitted.load(Relaxed), 1);
    // Past its round trip, the viewer asks for another packet, not this
    // one: it got the resend, and no copy of it goes.
    t.nack(&[other], t0 + Duration::from_millis(120), &mut again);
    let next = feed.through(110..114).await;
    for (p, ms) in next.iter().zip([160, 600, 1300, 2300]) {
        t.live(p, 0, t0 + Duration::from_millis(ms), &mut again);
    }
    let copies = |seq| {
        again
            .0
            .iter()
            .filter(|p| p.header.sequence_number == seq)
            .count()
    };
    assert_eq!(copies(lost), 1, "the first resend only");
    // The other one's copy went: the viewer has been silent since.
    assert!(copies(other) >= 2, "{}", copies(other));
}

#[tokio::test]
async fn a_stop_shorter_than_the_round_trip_leaves_the_allowance_as_it_was() {
    // A full queue on the path: a round trip of 2 s.
    let (mut best, mut lean, mut t, mut out, t1) = stopped_on_overload(|t, _| {
        t.link_rtt = Some(Duration::from_secs(2));
    })
    .await;
    t.resend_allowance = 0.0;
    let now = t1 + Duration::from_millis(900);
    for p in &best.through_as(186..204, h264_in_frames).await {
        t.live(p, 1, now, &mut out);
    }
    for p in &lean.through_as(1152..1210, h264_in_frames).await {
        t.live(p, 2, now, &mut out);
    }
    assert_eq!(t.ladder.as_ref().unwrap().current, 1);
    assert!(
        t.resend_allowance < super::resend::RESEND_ALLOWANCE_MAX / 2.0,
        "the queue is still full: {}",
        t.resend_allowance
    );
}

#[tokio::test]
async fn a_stopped_rungs_switch_waits_for_the_links_queue_to_drain() {
    stopped_rung_drains(false).await;
}

#[tokio::test]
async fn a_queue_a_report_shows_after_the_stop_is_waited_for_too() {
    stopped_rung_drains(true).await;
}

/// A rung stopped on a link whose queue adds 600 ms to the round trip
/// (shown by a report before the stop, or `report_after` it): its switch
/// waits for the queue to drain, though the target's keyframe came sooner.
async fn stopped_rung_drains(report_after: bool) {
    let report = |ms| crate::engine::adapt::Report {
        lost: 0.0,
        rtt: Some(Duration::from_millis(ms)),
        sr_age: None,
    };
    let (mut best, mut lean, mut t, mut out, t1) = stopped_on_overload(|t, t0| {
        t.report(report(2), t0 + Duration::from_millis(500));
        if !report_after {
            t.report(report(602), t0 + Duration::from_millis(1000));
        }
    })
    .await;
    if report_after {
        t.report(report(602), t1 + Duration::from_millis(300));
    }
    // The target's keyframe comes 600 ms after the stop: held.
    let soon = t1 + Duration::from_millis(800);
    for p in &best.through_as(186..204, h264_in_frames).await {
        t.live(p, 1, soon, &mut out);
    }
    for p in &lean.through_as(1152..1205, h264_in_frames).await {
        t.live(p, 2, soon, &mut out);
    }
    assert_eq!(t.ladder.as_ref().unwrap().current, 0, "still draining");
    // Drained (600 ms, half as much again for what else goes meanwhile,
    // and a margin): the switch goes, from that keyframe on.
    let later = t1 + Duration::from_millis(200 + 1000);
    for p in &lean.through_as(1205..1210, h264_in_frames).await {
        t.live(p, 2, later, &mut out);
    }
    assert_eq!(t.ladder.as_ref().unwrap().current, 1);
    assert_sent(&out, 100..188, 1200..1210);
}
