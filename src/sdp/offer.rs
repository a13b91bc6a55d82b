//! A first look at an SDP offer: does it parse as SDP at all, and does it
//! offer H.264 video or Opus audio? Pure; the full negotiation is peer.rs's.

/// An offer that cannot be answered, with the reason the viewer is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer is not valid SDP: {0}")]
    Unparsable(String),
    #[error("no common codec: {0}")]
    NoCommonCodec(String),
}

/// What an offer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offered {
    pub video_section: bool,
    pub audio_section: bool,
    /// A video section lists H.264.
    pub h264: bool,
    /// An audio section lists Opus.
    pub opus: bool,
    /// The offer's ICE username fragment (session or first section level).
    pub ice_ufrag: Option<String>,
    /// Its ICE password, found the same way.
    pub ice_pwd: Option<String>,
}

impl Offered {
    pub fn parse(sdp: &str) -> Result<Self, OfferError> {
        let mut lines = sdp.lines().map(str::trim_end).filter(|l| !l.is_empty());
        if lines.next() != Some("v=0") {
            return Err(OfferError::Unparsable("it must start with \"v=0\"".into()));
        }
        let mut offered = Offered::default();
        let mut section: Option<&str> = None;
        let mut sections = 0;
        for (i, line) in sdp
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(OfferError::Unparsable(format!(
                    "line {} is not of the form <letter>=<value>: {:?}",
                    i + 1,
                    truncate(line)
                )));
            }
            if let Some(m) = line.strip_prefix("m=") {
                sections += 1;
                section = m.split(' ').next();
                match section {
                    Some("video") => offered.video_section = true,
                    Some("audio") => offered.audio_section = true,
                    _ => {}
                }
            } else if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
                offered.ice_ufrag.get_or_insert_with(|| ufrag.to_owned());
            } else if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
                offered.ice_pwd.get_or_insert_with(|| pwd.to_owned());
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let codec = map.split_once(' ').map(|(_, c)| c).unwrap_or("");
                let name = codec.split('/').next().unwrap_or("");
                match section {
                    Some("video") if name.eq_ignore_ascii_case("H264") => offered.h264 = true,
                    Some("audio") if name.eq_ignore_ascii_case("opus") => offered.opus = true,
                    _ => {}
                }
            }
        }
        if sections == 0 {
            return Err(OfferError::Unparsable(
                "it has no media section (m=)".into(),
            ));
        }
        Ok(offered)
    }

    /// Why this offer and a stream with the given kinds have nothing in common.
    pub fn mismatch(&self, has_video: bool, has_audio: bool) -> String {
        match (has_video, has_audio) {
            (true, true) => "the offer has neither H.264 video nor Opus audio".into(),
            (true, false) => {
                "the stream carries H.264 video only and the offer has no H.264".into()
            }
            (false, true) => "the stream carries Opus audio only and the offer has no Opus".into(),
            (false, false) => "the stream has no WebRTC media".into(),
        }
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(60).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn finds_h264_and_opus() {
        let o = Offered::parse(BOTH).unwrap();
        assert!(o.h264 && o.opus && o.video_section && o.audio_section);
    }

    #[test]
    fn vp8_only_is_not_h264() {
        let sdp = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        let o = Offered::parse(sdp).unwrap();
        assert!(o.video_section && !o.h264 && !o.opus);
        assert!(
            o.mismatch(true, true)
                .contains("neither H.264 video nor Opus audio")
        );
    }

    #[test]
    fn h264_in_an_audio_section_does_not_count() {
        let sdp = "v=0\r\nm=audio 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(!Offered::parse(sdp).unwrap().h264);
    }

    #[test]
    fn rejects_what_is_not_sdp() {
        for bad in [
            "",
            "hello",
            "v=0\r\nthis is not sdp\r\n",
            "v=0\r\ns=-\r\n",
            "{\"type\":\"offer\"}",
        ] {
            assert!(
                matches!(Offered::parse(bad), Err(OfferError::Unparsable(_))),
                "{bad:?}"
            );
        }
    }
}
