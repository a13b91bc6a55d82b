//! The codecs a viewer is offered (only what FFmpeg's legs carry), the
//! header extension and feedback its link estimate comes by (abs-send-time,
//! REMB), its local tracks, and the payload type it negotiated.

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

fn h264_fmtp(profile_level_id: &str) -> String {
    format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}")
}

fn video_codec(profile_level_id: &str) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: h264_fmtp(profile_level_id),
        // `goog-remb`: the viewer estimates its link from the abs-send-time
        // of each packet, and tells us (a ladder's fastest signal).
        rtcp_feedback: vec![
            fb("nack", ""),
            fb("nack", "pli"),
            fb("ccm", "fir"),
            fb("goog-remb", ""),
        ],
    }
}

fn audio_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Only what FFmpeg's legs carry: constrained baseline (or baseline) H.264
/// in packetization mode 1, and Opus; abs-send-time on video.
pub(super) fn register_codecs(engine: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: crate::sdp::extmap::ABS_SEND_TIME.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    for (pt, plid) in [(102, "42e01f"), (104, "42001f")] {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: video_codec(plid),
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )?;
    }
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: audio_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
}

pub(super) fn local_track(kind: RtpCodecKind, ssrc: u32) -> MediaStreamTrack {
    let codec = match kind {
        RtpCodecKind::Audio => audio_codec(),
        _ => video_codec("42e01f"),
    };
    MediaStreamTrack::new(
        "ffwhep".to_owned(),
        format!("ffwhep-{kind}"),
        format!("ffwhep-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    )
}

/// The payload type this viewer negotiated for `kind`, matched on mime type
/// (and packetization mode 1 for H.264) rather than trusting list order.
pub(super) fn negotiated_pt(sender: &mut RTCRtpSender<'_>, kind: RtpCodecKind) -> Option<u8> {
    let params = sender.get_parameters();
    params.rtp_parameters.codecs.iter().find_map(|c| {
        let mime = &c.rtp_codec.mime_type;
        let ok = match kind {
            RtpCodecKind::Audio => mime.eq_ignore_ascii_case(MIME_TYPE_OPUS),
            _ => {
                mime.eq_ignore_ascii_case(MIME_TYPE_H264)
                    && c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
            }
        };
        ok.then_some(c.payload_type)
    })
}
