//! Makes the core of a connection ffwhep offers (a WHIP push into an SFU):
//! a send-only track per kind, our candidates, the offer; then applies the
//! SFU's answer. Synchronous: no I/O, the caller's `now`.

use super::PeerError;
use super::answer::{
    Credentials, Local, Negotiated, add_candidates, internal, local_sdp, negotiated, new_core,
};
use super::codecs::local_track;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::time::Instant;

/// A core that has made its offer and waits for the answer.
pub(crate) struct Offering {
    pub core: RTCPeerConnection,
    pub offer: String,
    /// Per kind: its sender and SSRC.
    senders: Vec<(RtpCodecKind, RTCRtpSenderId, u32)>,
}

/// Offers to send the given kinds, as `id`, with the candidates `locals`.
pub(crate) fn offer(
    kinds: &[RtpCodecKind],
    id: &Credentials,
    locals: &[Local],
    now: Instant,
) -> Result<Offering, PeerError> {
    // The offer says `a=setup:actpass`: the SFU picks the DTLS role (the
    // answering role below is never used).
    let mut core = new_core(id, RTCDtlsRole::Server, now)?;
    let base_ssrc = rand::random::<u32>();
    let mut senders = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let ssrc = base_ssrc.wrapping_add(i as u32);
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        };
        let id = core
            .add_transceiver_from_track(local_track(*kind, ssrc), Some(init))
            .map_err(internal("adding a transceiver"))?;
        senders.push((*kind, RTCRtpSenderId::from(id), ssrc));
    }
    let offer = core
        .create_offer(None)
        .map_err(internal("creating the offer"))?;
    core.set_local_description(now, offer)
        .map_err(internal("applying the offer"))?;
    add_candidates(&mut core, locals)?;
    let offer = local_sdp(&core)?;
    Ok(Offering {
        core,
        offer,
        senders,
    })
}

impl Offering {
    /// Applies the SFU's answer: each track with the payload type agreed.
    pub fn accept(
        mut self,
        answer: &str,
        now: Instant,
    ) -> Result<(RTCPeerConnection, Vec<Negotiated>), String> {
        let desc = RTCSessionDescription::answer(answer.to_owned())
            .map_err(|e| format!("the answer is not SDP: {e}"))?;
        self.core
            .set_remote_description(now, desc)
            .map_err(|e| format!("the answer was refused: {e}"))?;
        let tracks = negotiated(&mut self.core, self.senders).map_err(|e| e.to_string())?;
        Ok((self.core, tracks))
    }
}
