//! Makes a viewer's connection core from its offer: the `rtc` sans-IO peer
//! connection with ffwhep's codecs and interceptors, our ICE credentials, a
//! send-only track per kind, the candidates the shard gathered, and the
//! answer. Synchronous: no I/O, the caller's `now`.

use super::PeerError;
use super::codecs::{local_track, negotiated_pt, register_codecs};
use super::feedback::RtcpToApp;
use crate::sdp::offer::OfferError;
use rtc::interceptor::{Registry, SenderReportBuilder, Slot};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateServerReflexiveConfig, RTCDtlsRole,
    RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Consent freshness (RFC 7675), kept short so that a viewer that vanishes
/// without DELETE is hung up within 5 s, not ~30: a consent check every
/// `CONSENT_INTERVAL`; nothing heard for `CONSENT_DISCONNECTED` is
/// disconnected, and `CONSENT_FAILED` more is failed (the viewer is hung
/// up). A live viewer answers every check, and sends RTCP besides.
pub(crate) const CONSENT_INTERVAL: Duration = Duration::from_millis(500);
pub(crate) const CONSENT_DISCONNECTED: Duration = Duration::from_millis(1500);
pub(crate) const CONSENT_FAILED: Duration = Duration::from_millis(1500);

/// A candidate of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// A UDP socket of the shard (or the mux).
    Udp(SocketAddr),
    /// What a STUN server saw of the UDP socket at `base`.
    Reflexive { addr: SocketAddr, base: SocketAddr },
    /// The ICE-TCP listener (passive).
    Tcp(SocketAddr),
}

/// A track as negotiated: its kind, sender, payload type and SSRC.
pub(crate) type Negotiated = (RtpCodecKind, RTCRtpSenderId, u8, u32);

/// A core made for an offer, with what the shard needs to drive it.
pub(crate) struct Answered {
    pub core: RTCPeerConnection,
    pub answer: String,
    /// Per kind offered and sourced: its sender, payload type and SSRC.
    pub tracks: Vec<Negotiated>,
}

pub(crate) fn internal(
    context: &'static str,
) -> impl FnOnce(rtc::shared::error::Error) -> PeerError {
    move |e| PeerError::Internal(anyhow::Error::new(e).context(context))
}

/// Who a core says it is: its ICE credentials and DTLS certificate.
pub(crate) struct Credentials {
    pub ufrag: String,
    pub pwd: String,
    pub certificate: RTCCertificate,
}

/// A core with ffwhep's codecs and interceptors and our ICE credentials;
/// `answering_role`: the DTLS role it takes when it answers.
pub(crate) fn new_core(
    id: &Credentials,
    answering_role: RTCDtlsRole,
    now: Instant,
) -> Result<RTCPeerConnection, PeerError> {
    let mut engine = MediaEngine::default();
    register_codecs(&mut engine).map_err(internal("registering codecs"))?;
    // Sender reports from the stack (ffwhep's cores send media only: no
    // receiver reports); NACK, PLI and FIR are answered by ffwhep (from the
    // shared history and GOP cache), so the stack's NACK responder is left
    // out. Each interceptor is a stage every packet walks through.
    let registry = Registry::new()
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::from(14_000), RtcpToApp::feedback());
    let settings = SettingEngineBuilder::new()
        .with_ice_credentials(id.ufrag.clone(), id.pwd.clone())
        .with_answering_dtls_role(answering_role)
        .with_ice_timeouts(
            Some(CONSENT_DISCONNECTED),
            Some(CONSENT_FAILED),
            Some(CONSENT_INTERVAL),
        )
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![id.certificate.clone()])
                .build(),
        )
        .with_media_engine(engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal("creating the peer connection"))
}

/// Adds our candidates, then the empty one that ends gathering.
pub(crate) fn add_candidates(
    core: &mut RTCPeerConnection,
    locals: &[Local],
) -> Result<(), PeerError> {
    for local in locals {
        let init = candidate(local).map_err(internal("making a candidate"))?;
        core.add_local_candidate(init)
            .map_err(internal("adding a candidate"))?;
    }
    core.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(internal("ending gathering"))
}

/// The local description's SDP, once set.
pub(crate) fn local_sdp(core: &RTCPeerConnection) -> Result<String, PeerError> {
    core.local_description().map(|d| d.sdp).ok_or_else(|| {
        PeerError::Internal(anyhow::anyhow!("no local description after applying it"))
    })
}

/// Answers `offer` with a core that sends the given kinds, as `id`, with
/// the candidates `locals`.
pub(crate) fn answer(
    offer: &str,
    kinds: &[RtpCodecKind],
    id: &Credentials,
    locals: &[Local],
    now: Instant,
) -> Result<Answered, PeerError> {
    // ffwhep is the DTLS server (`a=setup:passive`): the viewer's
    // ClientHello goes out the moment its own ICE is up, and is answered at
    // once. As the client, ffwhep's ClientHello could reach a viewer not yet
    // listening (aiortc, Chromium) and wait on a retransmit: ~200 ms more.
    // ICE-lite was measured too and is slower (docs/BENCHMARKS.md).
    let mut core = new_core(id, RTCDtlsRole::Server, now)?;
    let base_ssrc = rand::random::<u32>();
    let mut senders = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let ssrc = base_ssrc.wrapping_add(i as u32);
        let id = core
            .add_track(local_track(*kind, ssrc))
            .map_err(internal("adding a track"))?;
        senders.push((*kind, id, ssrc));
    }
    let desc = RTCSessionDescription::offer(offer.to_owned())
        .map_err(|e| OfferError::Unparsable(e.to_string()))?;
    core.set_remote_description(now, desc)
        .map_err(|e| OfferError::Unparsable(format!("the offer was refused: {e}")))?;
    add_candidates(&mut core, locals)?;
    let answer = core
        .create_answer(None)
        .map_err(internal("creating the answer"))?;
    core.set_local_description(now, answer)
        .map_err(internal("applying the answer"))?;
    let answer = local_sdp(&core)?;
    let tracks = negotiated(&mut core, senders)?;
    Ok(Answered {
        core,
        answer,
        tracks,
    })
}

/// Each sender with the payload type the remote description agreed on.
pub(crate) fn negotiated(
    core: &mut RTCPeerConnection,
    senders: Vec<(RtpCodecKind, RTCRtpSenderId, u32)>,
) -> Result<Vec<Negotiated>, PeerError> {
    let mut tracks = Vec::new();
    for (kind, id, ssrc) in senders {
        let pt = core
            .rtp_sender(id)
            .and_then(|mut s| negotiated_pt(&mut s, kind))
            .ok_or_else(|| no_codec_for(kind))?;
        tracks.push((kind, id, pt, ssrc));
    }
    Ok(tracks)
}

pub(crate) fn candidate(local: &Local) -> rtc::shared::error::Result<RTCIceCandidateInit> {
    RTCIceCandidate::from(&ice_candidate(local)?).to_json()
}

/// One of our candidates, as the ICE agent takes it.
pub(crate) fn ice_candidate(
    local: &Local,
) -> rtc::shared::error::Result<rtc::ice::candidate::Candidate> {
    let base = |network: &str, addr: SocketAddr| CandidateConfig {
        network: network.to_owned(),
        address: addr.ip().to_string(),
        port: addr.port(),
        component: 1,
        ..Default::default()
    };
    let c = match *local {
        Local::Udp(addr) => CandidateHostConfig {
            base_config: base("udp", addr),
            ..Default::default()
        }
        .new_candidate_host()?,
        Local::Tcp(addr) => CandidateHostConfig {
            base_config: base("tcp", addr),
            tcp_type: rtc::ice::tcp_type::TcpType::Passive,
        }
        .new_candidate_host()?,
        Local::Reflexive { addr, base: b } => CandidateServerReflexiveConfig {
            base_config: base("udp", addr),
            rel_addr: b.ip().to_string(),
            rel_port: b.port(),
            url: None,
        }
        .new_candidate_server_reflexive()?,
    };
    Ok(c)
}

pub(crate) fn no_codec_for(kind: RtpCodecKind) -> PeerError {
    let codec = if kind == RtpCodecKind::Video {
        "H.264 (packetization-mode=1)"
    } else {
        "Opus"
    };
    OfferError::NoCommonCodec(format!(
        "the offer's {kind} section accepts no {codec} that ffwhep can send"
    ))
    .into()
}
