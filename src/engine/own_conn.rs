//! A viewer's (or a push's) connection run by ffwhep itself
//! (docs/OWN_CONNECTION.md): ICE from `rtc-ice`, DTLS from `rtc-dtls`, SRTP
//! from `rtc-srtp`, demultiplexed by first byte. Media takes the short
//! path: a packet is marshalled and protected here, once, with no pipeline
//! of stages. Sans-IO: datagrams in and out, time passed in.

use super::demux::{Carried, classify};
use super::keys::{dtls_config, srtp_contexts};
use super::sender_report::{SenderClock, rtt};
use crate::sdp::remote::{Remote, Setup};
use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::ice::agent::agent_config::AgentConfig;
use rtc::ice::agent::{Agent, Event as IceEvent};
use rtc::ice::candidate::{Candidate, unmarshal_candidate};
use rtc::ice::network_type::supported_network_types;
use rtc::ice::state::ConnectionState;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The key the DTLS endpoint knows its one peer by (as `rtc` does): what is
/// sent goes on the selected pair whatever the endpoint says.
fn dtls_peer() -> SocketAddr {
    TransportContext::default().peer_addr
}

/// Who we are on the connection.
pub(crate) struct Local<'a> {
    pub ufrag: &'a str,
    pub pwd: &'a str,
    pub certificate: &'a RTCCertificate,
    pub candidates: Vec<Candidate>,
    /// We offered (a push): the controlling ICE agent.
    pub controlling: bool,
}

/// The connection's transport.
pub(crate) struct Transport {
    provider: Arc<dyn RTCCryptoProvider>,
    agent: Agent,
    dtls: Endpoint,
    /// Set when we are the DTLS client: we connect once a pair is chosen.
    client: Option<Arc<rtc::dtls::config::HandshakeConfig>>,
    selected: Option<(SocketAddr, SocketAddr, TransportProtocol)>,
    ice: ConnectionState,
    /// Ours (RTP and RTCP out), the peer's (SRTCP in): once DTLS is done.
    srtp: Option<(Context, Context)>,
    /// RTCP from the peer, decrypted and parsed.
    rtcp: VecDeque<Vec<Box<dyn rtc::rtcp::Packet>>>,
    out: VecDeque<TaggedBytesMut>,
    buf: BytesMut,
    /// The caller's time at its last call.
    now: Instant,
    /// Sender reports, per SSRC sent.
    clocks: Vec<(u32, SenderClock)>,
    /// The round trip the peer's last receiver report gave.
    report_rtt: Option<Duration>,
    /// Tracks whose packets carry abs-send-time: SSRC, extension id.
    send_time_ids: Vec<(u32, u8)>,
    /// What abs-send-time counts from.
    epoch: Instant,
}

/// abs-send-time's value for `t` on the sender's clock: seconds in 6.18
/// fixed point, 24 bits (it wraps every 64 s).
pub(crate) fn abs_send_time(t: Duration) -> [u8; 3] {
    let fixed = ((t.as_nanos() << 18) / 1_000_000_000) as u32;
    let [_, a, b, c] = fixed.to_be_bytes();
    [a, b, c]
}

impl Transport {
    pub fn new(now: Instant, local: Local<'_>, remote: &Remote) -> anyhow::Result<Self> {
        let provider = rtc::crypto::default_provider()?;
        let config = AgentConfig {
            local_ufrag: local.ufrag.to_owned(),
            local_pwd: local.pwd.to_owned(),
            is_controlling: local.controlling,
            network_types: supported_network_types(),
            disconnected_timeout: Some(Duration::from_millis(1500)),
            failed_timeout: Some(Duration::from_millis(1500)),
            keepalive_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let mut agent = Agent::new(now, Arc::new(config), provider.clone())?;
        for c in local.candidates {
            agent.add_local_candidate(c)?;
        }
        for c in &remote.candidates {
            // A candidate we cannot read is one path fewer, not a failure.
            if let Ok(c) = unmarshal_candidate(c) {
                let _ = agent.add_remote_candidate(c);
            }
        }
        let controlling = local.controlling && !remote.ice_lite;
        agent.start_connectivity_checks(
            now,
            controlling,
            remote.ice_ufrag.clone(),
            remote.ice_pwd.clone(),
        )?;
        // The peer's `setup` decides; `actpass` makes us the server.
        let is_client = remote.setup == Some(Setup::Passive);
        let cfg = dtls_config(
            provider.clone(),
            local.certificate,
            &remote.fingerprint.1,
            is_client,
        )?;
        let local_addr = dtls_peer();
        let (dtls, client) = if is_client {
            (
                Endpoint::new(local_addr, TransportProtocol::UDP, None),
                Some(cfg),
            )
        } else {
            (
                Endpoint::new(local_addr, TransportProtocol::UDP, Some(cfg)),
                None,
            )
        };
        Ok(Self {
            provider,
            agent,
            dtls,
            client,
            selected: None,
            ice: ConnectionState::New,
            srtp: None,
            rtcp: VecDeque::new(),
            out: VecDeque::new(),
            buf: BytesMut::with_capacity(1500),
            now,
            clocks: Vec::new(),
            report_rtt: None,
            send_time_ids: Vec::new(),
            epoch: now,
        })
    }

    /// A datagram from the peer.
    pub fn handle_read(&mut self, msg: TaggedBytesMut) {
        self.now = msg.now;
        match classify(&msg.message) {
            Carried::Stun => {
                let _ = self.agent.handle_read(msg);
                self.ice_events();
            }
            Carried::Dtls => {
                let events = self
                    .dtls
                    .read(msg.now, dtls_peer(), None, msg.message)
                    .unwrap_or_default();
                for e in events {
                    if let EndpointEvent::HandshakeComplete = e
                        && let Some(state) = self.dtls.get_connection_state(dtls_peer())
                    {
                        self.srtp = srtp_contexts(state, &*self.provider).ok();
                    }
                }
                self.dtls_out();
            }
            Carried::Rtcp => {
                if let Some((_, theirs)) = &mut self.srtp
                    && let Ok(plain) = theirs.decrypt_rtcp(&msg.message)
                    && let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut plain.freeze())
                {
                    self.round_trip(&packets);
                    self.rtcp.push_back(packets);
                }
            }
            Carried::Rtp | Carried::Other => {}
        }
    }

    /// The round trip from the peer's receiver reports on our tracks.
    fn round_trip(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        use rtc::rtcp::receiver_report::ReceiverReport;
        let now = super::sender_report::ntp(std::time::SystemTime::now());
        for p in packets {
            let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() else {
                continue;
            };
            for r in &rr.reports {
                let ours = self.clocks.iter().any(|(ssrc, _)| *ssrc == r.ssrc);
                if let Some(rtt) = rtt(now, r.last_sender_report, r.delay).filter(|_| ours) {
                    self.report_rtt = Some(rtt);
                }
            }
        }
    }

    fn ice_events(&mut self) {
        while let Some(e) = self.agent.poll_event() {
            match e.event {
                IceEvent::ConnectionStateChange(s) => self.ice = s,
                IceEvent::SelectedCandidatePairChange(local, remote) => {
                    self.selected = Some((
                        local.base_addr(),
                        remote.addr(),
                        local.network_type().to_protocol(),
                    ));
                    if let Some(cfg) = self.client.take() {
                        let _ = self.dtls.connect(e.now, dtls_peer(), cfg, None);
                        self.dtls_out();
                    }
                }
                _ => {}
            }
        }
    }

    /// Moves what DTLS wants sent onto the selected pair.
    fn dtls_out(&mut self) {
        while let Some(t) = self.dtls.poll_transmit() {
            self.send(t.message);
        }
    }

    fn send(&mut self, message: BytesMut) {
        if let Some((local, peer, protocol)) = self.selected {
            self.out.push_back(TaggedBytesMut {
                now: self.now,
                transport: TransportContext {
                    local_addr: local,
                    peer_addr: peer,
                    ecn: None,
                    transport_protocol: protocol,
                },
                message,
            });
        }
    }

    /// One RTP packet on the short path: marshalled into the reused
    /// buffer, protected, queued. False when there are no keys yet.
    pub fn write_rtp(&mut self, packet: &rtc::rtp::Packet) -> bool {
        let Some((ours, _)) = &mut self.srtp else {
            return false;
        };
        self.buf.clear();
        self.buf.resize(packet.marshal_size(), 0);
        if packet.marshal_to(&mut self.buf).is_err() {
            return false;
        }
        let Ok(sealed) = ours.encrypt_rtp_with_header(&self.buf, &packet.header) else {
            return false;
        };
        self.send(sealed);
        let h = &packet.header;
        if let Some((_, clock)) = self.clocks.iter_mut().find(|(s, _)| *s == h.ssrc) {
            let payload = packet.payload.len();
            clock.sent(h.sequence_number, h.timestamp, payload, self.now);
        }
        true
    }

    /// A track it sends: its SSRC and RTP clock rate, for its sender
    /// reports.
    pub fn add_track(&mut self, ssrc: u32, clock_rate: u32) {
        self.clocks.push((ssrc, SenderClock::new(ssrc, clock_rate)));
    }

    /// Track `ssrc`'s packets carry abs-send-time, as extension `id`.
    pub fn stamp_send_time(&mut self, ssrc: u32, id: u8) {
        self.send_time_ids.push((ssrc, id));
    }

    /// Puts the send time (`now`) on `packet` if its track carries it: the
    /// 24-bit abs-send-time, seconds in 6.18 fixed point.
    pub fn with_send_time(&self, packet: &mut rtc::rtp::Packet, now: Instant) {
        let h = &mut packet.header;
        let Some((_, id)) = self.send_time_ids.iter().find(|(s, _)| *s == h.ssrc) else {
            return;
        };
        let t = abs_send_time(now.saturating_duration_since(self.epoch));
        let _ = h.set_extension(*id, bytes::Bytes::copy_from_slice(&t));
    }

    /// RTCP of ours (sender reports, BYE), protected and queued.
    pub fn write_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
        let Some((ours, _)) = &mut self.srtp else {
            return false;
        };
        let sealed = rtc::rtcp::packet::marshal(packets).and_then(|p| ours.encrypt_rtcp(&p));
        match sealed {
            Ok(sealed) => {
                self.send(sealed);
                true
            }
            Err(_) => false,
        }
    }

    /// DTLS close_notify (queued to send), then ICE stops.
    pub fn close(&mut self, now: Instant) {
        self.now = now;
        let _ = self.dtls.close(now);
        self.dtls_out();
        let _ = self.agent.close();
    }

    /// What to send next: the agent's own datagrams first.
    pub fn poll_write(&mut self) -> Option<TaggedBytesMut> {
        self.agent.poll_write().or_else(|| self.out.pop_front())
    }

    /// The connection's state, as `rtc` would report it: failed with ICE,
    /// connected once ICE is up and DTLS done.
    pub fn state(&self) -> rtc::peer_connection::state::RTCPeerConnectionState {
        use rtc::peer_connection::state::RTCPeerConnectionState as S;
        match self.ice {
            ConnectionState::Failed => S::Failed,
            ConnectionState::Closed => S::Closed,
            ConnectionState::Disconnected => S::Disconnected,
            ConnectionState::Connected | ConnectionState::Completed if self.srtp.is_some() => {
                S::Connected
            }
            ConnectionState::New => S::New,
            _ => S::Connecting,
        }
    }

    /// ICE is up (DTLS may not be yet).
    pub fn ice_up(&self) -> bool {
        matches!(
            self.ice,
            ConnectionState::Connected | ConnectionState::Completed
        )
    }

    /// A candidate the peer trickled (the attribute value, with or
    /// without `candidate:`; empty: the end of its candidates).
    pub fn add_remote_candidate(&mut self, candidate: &str) -> Result<(), String> {
        let c = candidate.trim();
        let c = c.strip_prefix("candidate:").unwrap_or(c);
        if c.is_empty() {
            return Ok(());
        }
        let c = unmarshal_candidate(c).map_err(|e| e.to_string())?;
        self.agent
            .add_remote_candidate(c)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The round trip in ms: from the peer's receiver reports, or else the
    /// selected pair's (its connectivity checks).
    pub fn rtt_ms(&self, now: Instant) -> Option<f64> {
        if let Some(rtt) = self.report_rtt {
            return Some(rtt.as_secs_f64() * 1000.0);
        }
        self.agent
            .get_candidate_pairs_stats(now)
            .iter()
            .filter(|p| p.nominated && p.current_round_trip_time > 0.0)
            .map(|p| p.current_round_trip_time * 1000.0)
            .next()
    }

    /// RTCP the peer sent.
    pub fn poll_rtcp(&mut self) -> Option<Vec<Box<dyn rtc::rtcp::Packet>>> {
        self.rtcp.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let reports = self.clocks.iter().filter_map(|(_, c)| c.due());
        [
            self.agent.poll_timeout(),
            self.dtls.poll_timeout(&dtls_peer()),
        ]
        .into_iter()
        .flatten()
        .chain(reports)
        .min()
    }

    /// Sends track `ssrc`'s sender report now, off its schedule: the round
    /// trip its answer gives is the path's as it is now.
    pub fn report_now(&mut self, ssrc: u32) {
        let now = self.now;
        let wall = std::time::SystemTime::now();
        let Some((_, clock)) = self.clocks.iter_mut().find(|(s, _)| *s == ssrc) else {
            return;
        };
        clock.due_now(now);
        if let Some(r) = clock.report(now, wall) {
            self.write_rtcp(&[Box::new(r) as Box<dyn rtc::rtcp::Packet>]);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let _ = self.agent.handle_timeout(now);
        self.ice_events();
        if self.dtls.get_connection_state(dtls_peer()).is_some() {
            let _ = self.dtls.handle_timeout(dtls_peer(), now);
            self.dtls_out();
        }
        let wall = std::time::SystemTime::now();
        let reports: Vec<Box<dyn rtc::rtcp::Packet>> = self
            .clocks
            .iter_mut()
            .filter_map(|(_, c)| c.report(now, wall))
            .map(|r| Box::new(r) as Box<dyn rtc::rtcp::Packet>)
            .collect();
        // Each in a packet of its own, as `rtc` sends them.
        for report in reports {
            self.write_rtcp(&[report]);
        }
    }
}

#[cfg(test)]
#[path = "own_conn_tests.rs"]
mod tests;
