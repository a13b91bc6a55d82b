//! One load viewer: an `rtc` sans-IO core driven by a task of its own over
//! one UDP socket (as ffwhep's engine drives its cores, so the client pays
//! the stack's receive path and not an async layer's), that receives a
//! relay's stream and counts it (packets and sequence gaps per kind, and the
//! hop of sampled packets against the tap), without depacketizing or
//! decoding. It sends receiver reports and NACKs. Subscribes over WHEP (it
//! offers) or over Janus's HTTP API (Janus offers).

use crate::janus::{host_ipv4, janus_call, janus_offer};
use crate::tap::Tap;
use anyhow::{Context, bail};
use bytes::BytesMut;
use ffwhep::rtp::SeqRange;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One packet in this many per track is timed against the tap.
const HOP_SAMPLE_EVERY: u64 = 8;
/// Datagrams read after a wake-up before the core's output is handled.
const READS_PER_WAKE: usize = 32;

/// Packets received and expected (by sequence-number span) for one kind.
#[derive(Default)]
pub struct Counts {
    pub packets: AtomicU64,
    pub expected: AtomicU64,
}

fn engine() -> anyhow::Result<MediaEngine> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(m)
}

/// How a viewer leaves.
enum Leave {
    Whep(String),
    Janus(String),
}

pub struct Viewer {
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Video, audio.
    pub counts: Arc<[Counts; 2]>,
    leave: Option<Leave>,
    stop: CancellationToken,
}

/// A core and its socket before the descriptions are exchanged.
struct Setup {
    core: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Setup {
    /// A core whose one host candidate is a fresh UDP socket on `bind_ip`.
    async fn new(bind_ip: &str) -> anyhow::Result<Setup> {
        let mut m = engine()?;
        let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut m));
        let core = RTCPeerConnectionBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .build(Instant::now())?;
        let socket = UdpSocket::bind(format!("{bind_ip}:0")).await?;
        let local = socket.local_addr()?;
        Ok(Setup {
            core,
            socket,
            local,
        })
    }

    /// Announces the socket as the core's one candidate and ends gathering.
    fn add_host_candidate(&mut self) -> anyhow::Result<()> {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        self.core
            .add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        Ok(())
    }

    /// Starts the driver task; the viewer is returned once connected.
    async fn drive(self, tap: Arc<Tap>, remote_sdp: &str) -> anyhow::Result<Viewer> {
        let counts: Arc<[Counts; 2]> = Arc::default();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let stop = CancellationToken::new();
        let driver = Driver {
            core: self.core,
            socket: self.socket,
            local: self.local,
            kinds: payload_kinds(remote_sdp),
            spans: Default::default(),
            counts: counts.clone(),
            tap,
            state: state_tx,
        };
        tokio::spawn(driver.run(stop.clone()));
        let mut v = Viewer {
            state,
            counts,
            leave: None,
            stop,
        };
        v.connected().await?;
        Ok(v)
    }
}

/// Which kind each payload type of the remote description is (0 video, 1
/// audio), from its `a=rtpmap` lines.
fn payload_kinds(sdp: &str) -> HashMap<u8, usize> {
    sdp.lines()
        .filter_map(|l| {
            let (pt, codec) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            let kind = usize::from(!codec.to_ascii_uppercase().starts_with("H264"));
            Some((pt.parse().ok()?, kind))
        })
        .collect()
}

/// The task that owns a viewer's core and socket.
struct Driver {
    core: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    kinds: HashMap<u8, usize>,
    spans: [(SeqRange, u64); 2],
    counts: Arc<[Counts; 2]>,
    tap: Arc<Tap>,
    state: watch::Sender<RTCPeerConnectionState>,
}

impl Driver {
    async fn run(mut self, stop: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            self.settle().await;
            let deadline = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let deadline = tokio::time::Instant::from_std(deadline);
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = &mut sleep => {
                    let _ = self.core.handle_timeout(Instant::now());
                }
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { break };
                    let now = Instant::now();
                    self.read(&buf[..n], from, now);
                    // A frame's packets come together: take what else is
                    // there before the next settle.
                    for _ in 0..READS_PER_WAKE {
                        let Ok((n, from)) = self.socket.try_recv_from(&mut buf) else {
                            break;
                        };
                        self.read(&buf[..n], from, now);
                    }
                }
            }
        }
        let _ = self.core.close();
        self.settle().await;
    }

    fn read(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        };
        let _ = self.core.handle_read(msg);
    }

    /// Counts what the core read, sends what it wrote, notes its state.
    async fn settle(&mut self) {
        while let Some(m) = self.core.poll_read() {
            if let RTCMessage::RtpPacket(_, p) = m.message {
                self.count(&p);
            }
        }
        while let Some(out) = self.core.poll_write() {
            let _ = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await;
        }
        while let Some(e) = self.core.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = e {
                self.state.send_replace(s);
            }
        }
    }

    fn count(&mut self, p: &rtc::rtp::Packet) {
        let kind = self.kinds.get(&p.header.payload_type).copied().unwrap_or(1);
        let (span, n) = &mut self.spans[kind];
        *n += 1;
        span.extend(p.header.sequence_number);
        let c = &self.counts[kind];
        c.packets.store(*n, Relaxed);
        c.expected.store(span.expected(), Relaxed);
        if kind == 0 && n.is_multiple_of(HOP_SAMPLE_EVERY) {
            self.tap.hop(&p.payload);
        }
    }
}

impl Viewer {
    async fn connected(&mut self) -> anyhow::Result<()> {
        let ok = tokio::time::timeout(
            Duration::from_secs(15),
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !ok {
            self.stop.cancel();
            bail!("not connected within 15 s (state {})", *self.state.borrow());
        }
        Ok(())
    }

    /// Subscribes over WHEP: POST a recvonly offer, apply the answer.
    pub async fn whep(http: &reqwest::Client, url: &str, tap: Arc<Tap>) -> anyhow::Result<Viewer> {
        let mut s = Setup::new("127.0.0.1").await?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            s.core.add_transceiver_from_kind(kind, Some(init))?;
        }
        s.add_host_candidate()?;
        let offer = s.core.create_offer(None)?;
        s.core
            .set_local_description(Instant::now(), offer.clone())?;
        let resp = http
            .post(url)
            .header("content-type", "application/sdp")
            .body(offer.sdp)
            .send()
            .await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await?;
        if status != reqwest::StatusCode::CREATED {
            bail!("POST {url}: {status}: {}", body.trim());
        }
        s.core
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(body.clone())?)?;
        let base = url.split("/whep/").next().unwrap_or_default();
        let leave = location.map(|l| Leave::Whep(format!("{base}{l}")));
        finish(http, s.drive(tap, &body).await, leave).await
    }

    /// Subscribes to a Janus streaming mountpoint over Janus's HTTP API:
    /// create a session, attach the plugin, `watch`, take Janus's offer from
    /// the event long-poll, answer with `start`.
    pub async fn janus(
        http: &reqwest::Client,
        base: &str,
        mountpoint: u64,
        tap: Arc<Tap>,
    ) -> anyhow::Result<Viewer> {
        let session = janus_call(http, base, json!({"janus": "create"})).await?["data"]["id"]
            .as_u64()
            .context("create: no session id")?;
        let s_url = format!("{base}/{session}");
        let handle = janus_call(
            http,
            &s_url,
            json!({"janus": "attach", "plugin": "janus.plugin.streaming"}),
        )
        .await?["data"]["id"]
            .as_u64()
            .context("attach: no handle id")?;
        let h_url = format!("{s_url}/{handle}");
        let watch = json!({"janus": "message", "body": {"request": "watch", "id": mountpoint}});
        janus_call(http, &h_url, watch).await?;
        let offer = janus_offer(http, &s_url).await?;
        // Janus gathers on the machine's interfaces, never on loopback:
        // take its first IPv4 host candidate's address for ours.
        let ip = host_ipv4(&offer).context("no IPv4 host candidate in Janus's offer")?;
        let mut s = Setup::new(&ip).await?;
        s.core
            .set_remote_description(Instant::now(), RTCSessionDescription::offer(offer.clone())?)?;
        s.add_host_candidate()?;
        let answer = s.core.create_answer(None)?;
        s.core
            .set_local_description(Instant::now(), answer.clone())?;
        let start = json!({"janus": "message", "body": {"request": "start"},
                           "jsep": {"type": "answer", "sdp": answer.sdp}});
        janus_call(http, &h_url, start).await?;
        finish(http, s.drive(tap, &offer).await, Some(Leave::Janus(s_url))).await
    }

    /// Leaves the way it joined (WHEP DELETE or Janus `destroy`), then closes.
    pub async fn close(&self, http: &reqwest::Client) {
        leave(http, self.leave.as_ref()).await;
        self.stop.cancel();
    }
}

/// A connected viewer that leaves by `how`; or, when it did not connect,
/// its session left at once (not to linger on the relay).
async fn finish(
    http: &reqwest::Client,
    connected: anyhow::Result<Viewer>,
    how: Option<Leave>,
) -> anyhow::Result<Viewer> {
    match connected {
        Ok(mut v) => {
            v.leave = how;
            Ok(v)
        }
        Err(e) => {
            leave(http, how.as_ref()).await;
            Err(e)
        }
    }
}

async fn leave(http: &reqwest::Client, how: Option<&Leave>) {
    match how {
        Some(Leave::Whep(url)) => {
            let _ = http.delete(url).send().await;
        }
        Some(Leave::Janus(url)) => {
            let _ = janus_call(http, url, json!({"janus": "destroy"})).await;
        }
        None => {}
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
