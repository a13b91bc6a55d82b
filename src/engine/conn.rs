//! One viewer's connection inside a shard: its transport, its tracks, and
//! what the viewer's handle outside the shard can see of it (state,
//! counters). Everything here runs on the shard's task, with its `now`.

use super::batch::Batch;
use super::counters::ViewerCounters;
use super::own_conn::Transport;
use super::shard::ShardSocket;
use super::track::{BACKLOG_BURST, PacketOut, TrackOut, Verdict};
use crate::rtp::RtpPacket;
use bytes::{BufMut, Bytes, BytesMut};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::shared::{TaggedBytesMut, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long after DTLS is up on our side an ICE-TCP viewer's media starts
/// (a UDP viewer's starts when it answers our check: see `probe`; this is
/// also the wait when no check can be made).
const TCP_START_GRACE: std::time::Duration = std::time::Duration::from_millis(5);

/// What the viewer's handle shares with its connection in the shard.
pub(crate) struct Shared {
    pub state: watch::Sender<RTCPeerConnectionState>,
    pub counters: Arc<ViewerCounters>,
    pub connected_at: Mutex<Option<SystemTime>>,
    /// How its start went, in ms after the answer was made.
    pub start: Mutex<StartTimes>,
    /// Cancelled when the viewer is to be hung up (by anyone).
    pub cancel: CancellationToken,
}

/// A viewer's start, in ms after its answer was made: ICE connected, DTLS
/// connected (the connection is up), its media started (the GOP first).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StartTimes {
    pub ice_ms: Option<f64>,
    pub dtls_ms: Option<f64>,
    pub media_ms: Option<f64>,
}

/// How the viewer's link fares, from the stack's statistics.
#[derive(Debug, Default)]
pub(crate) struct LinkReport {
    pub rtt_ms: Option<f64>,
    pub remote: Option<String>,
    /// `udp` or `tcp`.
    pub transport: Option<&'static str>,
}

/// One track of the connection.
pub(crate) struct ConnTrack {
    pub sender: RTCRtpSenderId,
    /// Which source feed it takes (without a ladder).
    pub feed_key: usize,
    /// The feeds it is among the viewers of, in the shard.
    pub feeds: Vec<usize>,
    pub out: TrackOut,
}

impl ConnTrack {
    /// The feeds it should be among the viewers of: its ladder rung's (and
    /// a switch's target), or its source's.
    pub fn wanted_feeds(&self) -> Vec<usize> {
        match &self.out.ladder {
            Some(l) => l.feeds().collect(),
            None => vec![self.feed_key],
        }
    }
}

pub(crate) struct Conn {
    pub id: u64,
    pub ufrag: String,
    pub core: Transport,
    pub tracks: Vec<ConnTrack>,
    pub shared: Arc<Shared>,
    pub latency: Arc<crate::latency::Histogram>,
    /// The span of the viewer's session (stream and session id).
    pub span: tracing::Span,
    /// The deadline it is in the shard's heap for.
    pub scheduled: Option<Instant>,
    /// (local, remote) addresses routed to it.
    pub addrs: Vec<(SocketAddr, SocketAddr)>,
    /// ICE-TCP streams, by remote address.
    pub tcp_writers: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// Its last datagram's (local, remote) addresses, and whether over
    /// ICE-TCP.
    pub remote: Option<(SocketAddr, SocketAddr, bool)>,
    /// (local, remote) addresses the core sent to that are not routed to
    /// it yet: the answers to its own checks come from there.
    pub learned: Vec<(SocketAddr, SocketAddr)>,
    /// The viewer's last nominating check before it was connected: handed
    /// to the core again once our own check of its pair is answered.
    pub held_nomination: Option<TaggedBytesMut>,
    pub connected: bool,
    /// Its ICE start has been noted.
    pub ice_marked: bool,
    /// When the answer was made: its start is timed from here.
    pub answered_at: Instant,
    /// When its tracks start (the GOP first) at the latest: a moment after
    /// DTLS is up, or when the viewer answers our check (`probe`).
    pub start_at: Option<Instant>,
    /// The ICE credentials of our check to the viewer.
    pub credentials: Option<super::probe::Credentials>,
    /// Our check to the viewer that media waits for.
    pub probe: Option<[u8; 12]>,
    /// When the packet just written reached its source, if it is sampled
    /// for the relay latency: its datagram takes it to the batch.
    pub sampled: Option<Instant>,
}

/// A track's packets into the core; a sampled one's arrival is kept for
/// the datagram it becomes (timed when sent, in the batch).
struct CoreOut<'a> {
    core: &'a mut Transport,
    now: Instant,
    sampled: &'a mut Option<Instant>,
}

impl<'a> CoreOut<'a> {
    fn new(
        core: &'a mut Transport,
        _sender: RTCRtpSenderId,
        now: Instant,
        sampled: &'a mut Option<Instant>,
    ) -> Self {
        Self { core, now, sampled }
    }
}

impl PacketOut for CoreOut<'_> {
    fn report_now(&mut self, ssrc: u32) {
        self.core.report_now(ssrc);
    }

    fn write(&mut self, mut packet: rtc::rtp::Packet, live_since: Option<Instant>) {
        self.core.with_send_time(&mut packet, self.now);
        if !self.core.write_rtp(&packet) {
            tracing::trace!("write_rtp: no keys yet");
        }
        if live_since.is_some() {
            *self.sampled = live_since;
        }
    }
}

impl Conn {
    /// Whether any track has a GOP being paced out, or a probe going on.
    pub fn pacing(&self, now: Instant) -> bool {
        self.tracks
            .iter()
            .any(|t| t.out.queued() > 0 || t.out.probing(now))
    }

    /// Whether a track's feeds changed (a switch of rendition): the shard
    /// moves it among its feeds' viewers. Clears the mark.
    pub fn take_feeds_changed(&mut self) -> bool {
        let mut changed = false;
        for t in &mut self.tracks {
            if let Some(l) = &mut t.out.ladder {
                changed |= std::mem::take(&mut l.feeds_changed);
            }
        }
        changed
    }

    /// The viewer's choice of rendition, for its video track.
    pub fn choose(&mut self, choice: super::ladder::Choice, now: Instant) -> Result<(), String> {
        match self.tracks.iter_mut().find(|t| t.out.ladder.is_some()) {
            Some(t) => t.out.choose(choice, now),
            None => Err("the stream has no ladder".to_owned()),
        }
    }

    /// One live packet of track `track`'s source, from feed `key`.
    pub fn live(
        &mut self,
        track: usize,
        key: usize,
        p: &RtpPacket,
        now: Instant,
        sockets: &[ShardSocket],
        batch: &mut Batch,
    ) {
        if !self.connected {
            return;
        }
        let t = &mut self.tracks[track];
        let mut out = CoreOut::new(&mut self.core, t.sender, now, &mut self.sampled);
        if t.out.live(p, key, now, &mut out) == Verdict::HangUp {
            self.shared.cancel.cancel();
        }
        self.drain_writes(sockets, batch);
    }

    /// One pacing tick of each track's queue (and probe); true while any
    /// has more.
    pub fn pace(&mut self, now: Instant, sockets: &[ShardSocket], batch: &mut Batch) -> bool {
        let mut more = false;
        for i in 0..self.tracks.len() {
            for _ in 0..BACKLOG_BURST {
                let t = &mut self.tracks[i];
                let mut out = CoreOut::new(&mut self.core, t.sender, now, &mut self.sampled);
                let left = t.out.pace(1, now, &mut out);
                // One packet at a time through the core: each of its stage
                // queues keeps room for a packet, not a burst, for good.
                self.drain_writes(sockets, batch);
                if !left || self.tracks[i].out.queued() == 0 {
                    break;
                }
            }
            let t = &self.tracks[i].out;
            more |= t.queued() > 0 || t.probing(now);
        }
        more
    }

    /// Takes the core's events and the viewer's feedback, and queues what
    /// it has to send.
    pub fn settle(&mut self, now: Instant, sockets: &[ShardSocket], batch: &mut Batch) {
        if self.core.ice_up() && !self.ice_marked {
            self.ice_marked = true;
            self.mark_start(now, |t| &mut t.ice_ms);
        }
        let s = self.core.state();
        if s != *self.shared.state.borrow() {
            self.span.in_scope(|| {
                tracing::debug!(state = %s, "viewer connection state");
            });
            if s == RTCPeerConnectionState::Connected && !self.connected {
                self.on_connected(now, sockets, batch);
            }
            self.shared.state.send_replace(s);
        }
        while let Some(packets) = self.core.poll_rtcp() {
            self.feedback(&packets, now);
        }
        self.start_when_due(now);
        self.drain_writes(sockets, batch);
    }

    /// DTLS is up on our side: note it, and plan the start of its media:
    /// when the viewer answers our check, which follows our last flight
    /// (`probe`), or a moment later over ICE-TCP, whose stream keeps order.
    fn on_connected(&mut self, now: Instant, sockets: &[ShardSocket], batch: &mut Batch) {
        self.connected = true;
        self.shared
            .connected_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(SystemTime::now);
        let t = self.mark_start(now, |t| &mut t.dtls_ms);
        self.span.in_scope(|| {
            tracing::info!(ice_ms = t.ice_ms, dtls_ms = t.dtls_ms, "viewer connected");
        });
        self.start_at = Some(now + TCP_START_GRACE);
        // Our last flight is in the core's queue: the check goes after it.
        self.drain_writes(sockets, batch);
        if let (Some(c), Some((local, to, false))) = (&self.credentials, self.remote)
            && let Some(socket) = socket_index(sockets, local)
            && let Some((id, check)) = super::probe::check(c)
        {
            self.probe = Some(id);
            self.start_at = Some(now + super::probe::ANSWER_WAIT);
            batch.push(socket, to, check, None);
        }
    }

    /// The viewer answered our check: it has its keys, media may start.
    pub fn probe_answered(&mut self, now: Instant) {
        self.probe = None;
        if self.start_at.is_some() {
            self.start_at = Some(now);
        }
    }

    /// Starts the tracks (the GOP first) once their time has come.
    fn start_when_due(&mut self, now: Instant) {
        if self.start_at.is_some_and(|t| now >= t) {
            self.start_at = None;
            self.mark_start(now, |t| &mut t.media_ms);
            for t in &mut self.tracks {
                t.out.start();
            }
        }
    }

    /// Notes a step of its start (the first time only); the steps so far.
    fn mark_start(
        &mut self,
        now: Instant,
        step: impl FnOnce(&mut StartTimes) -> &mut Option<f64>,
    ) -> StartTimes {
        let ms = now
            .saturating_duration_since(self.answered_at)
            .as_secs_f64()
            * 1000.0;
        let mut times = self.shared.start.lock().unwrap_or_else(|p| p.into_inner());
        step(&mut times).get_or_insert((ms * 10.0).round() / 10.0);
        *times
    }

    /// The next moment the shard must call on it: the core's deadline, or
    /// the start of its tracks.
    pub fn deadline(&mut self) -> Option<Instant> {
        let core = self.core.poll_timeout();
        match (core, self.start_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Receiver reports, NACK, REMB, PLI and FIR, each to the track of the
    /// SSRC it names.
    fn feedback(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        for p in packets {
            let any = p.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                let now_ntp = super::sender_report::ntp(SystemTime::now());
                for r in &rr.reports {
                    if let Some(t) = self.track_of(r.ssrc) {
                        let rtt = super::sender_report::rtt(now_ntp, r.last_sender_report, r.delay);
                        let delay =
                            std::time::Duration::from_secs_f64(f64::from(r.delay) / 65536.0);
                        let report = super::adapt::Report {
                            lost: f64::from(r.fraction_lost) / 256.0,
                            rtt,
                            sr_age: rtt.map(|rtt| rtt + delay),
                        };
                        self.tracks[t].out.report(report, now);
                    }
                }
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let lost: Vec<u16> = nack.nacks.iter().flat_map(|n| n.packet_list()).collect();
                if let Some(t) = self.track_of(nack.media_ssrc) {
                    let t = &mut self.tracks[t];
                    let mut out = CoreOut::new(&mut self.core, t.sender, now, &mut self.sampled);
                    t.out.nack(&lost, now, &mut out);
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                for ssrc in &remb.ssrcs {
                    if let Some(t) = self.track_of(*ssrc) {
                        self.tracks[t].out.remb(f64::from(remb.bitrate), now);
                    }
                }
            } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                if let Some(t) = self.track_of(pli.media_ssrc) {
                    self.tracks[t].out.keyframe_request(now);
                }
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                for e in &fir.fir {
                    if let Some(t) = self.track_of(e.ssrc) {
                        self.tracks[t].out.keyframe_request(now);
                    }
                }
            }
        }
    }

    fn track_of(&self, ssrc: u32) -> Option<usize> {
        self.tracks.iter().position(|t| t.out.ssrc == ssrc)
    }

    /// Moves what the core wants sent into the batch (or an ICE-TCP
    /// stream's queue).
    pub fn drain_writes(&mut self, sockets: &[ShardSocket], batch: &mut Batch) {
        while let Some(out) = self.core.poll_write() {
            let to = out.transport.peer_addr;
            let tcp = out.transport.transport_protocol == TransportProtocol::TCP;
            let from = out.transport.local_addr;
            if self.remote != Some((from, to, tcp)) {
                self.remote = Some((from, to, tcp));
                if !tcp && !self.addrs.contains(&(from, to)) && !self.learned.contains(&(from, to))
                {
                    self.learned.push((from, to));
                }
            }
            if tcp {
                self.write_tcp(to, &out.message);
                if let Some(t) = self.sampled.take() {
                    self.latency.record(t.elapsed());
                }
                continue;
            }
            match socket_index(sockets, from) {
                Some(i) => {
                    let sample = self.sampled.take().map(|t| (t, self.latency.clone()));
                    batch.push(i, to, out.message, sample);
                }
                None => tracing::debug!(%from, "no socket for a datagram's local address"),
            }
        }
        // A sampled packet the core did not send is not timed.
        self.sampled = None;
    }

    /// One RFC 4571 frame (length, then the datagram) on the viewer's TCP
    /// stream; a full stream queue drops it, as a full link would.
    fn write_tcp(&mut self, to: SocketAddr, data: &[u8]) {
        let Some(w) = self.tcp_writers.get(&to) else {
            return;
        };
        let mut frame = BytesMut::with_capacity(2 + data.len());
        frame.put_u16(data.len() as u16);
        frame.put_slice(data);
        if w.try_send(frame.freeze()).is_err() {
            self.shared
                .counters
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for t in &mut self.tracks {
                t.out.link_overflowed();
            }
        }
    }

    /// RTCP BYE on each track (when connected: only then are there keys),
    /// then DTLS close_notify.
    pub fn say_goodbye(&mut self, now: Instant) {
        if self.connected {
            let byes: Vec<Box<dyn rtc::rtcp::Packet>> = self
                .tracks
                .iter()
                .map(|t| {
                    Box::new(rtc::rtcp::goodbye::Goodbye {
                        sources: vec![t.out.ssrc],
                        reason: "stream ended".into(),
                    }) as Box<dyn rtc::rtcp::Packet>
                })
                .collect();
            self.core.write_rtcp(&byes);
        }
        self.core.close(now);
        self.shared
            .state
            .send_replace(RTCPeerConnectionState::Closed);
    }

    pub fn add_remote_candidate(&mut self, c: RTCIceCandidateInit) -> Result<(), String> {
        self.core.add_remote_candidate(&c.candidate)
    }

    /// RTT from the viewer's receiver reports (or the ICE pair), and where
    /// its media goes.
    pub fn link_report(&mut self, now: Instant) -> LinkReport {
        LinkReport {
            remote: self.remote.map(|(_, a, _)| a.to_string()),
            transport: self
                .remote
                .map(|(_, _, tcp)| if tcp { "tcp" } else { "udp" }),
            rtt_ms: self.core.rtt_ms(now),
        }
    }
}

/// The shard socket with local address `local` (the only one, if the core
/// names a wildcard).
fn socket_index(sockets: &[ShardSocket], local: SocketAddr) -> Option<usize> {
    sockets
        .iter()
        .position(|s| s.local == local)
        .or_else(|| (sockets.len() == 1).then_some(0))
}
