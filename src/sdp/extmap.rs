//! The RTP header extensions a description agreed on (`a=extmap`), per
//! media section: which id carries which URI.

/// The abs-send-time extension: the sender's clock in each packet, from
/// which a receiver estimates its link (and reports it by REMB).
pub(crate) const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// The id `sdp` maps `uri` to in its first `media` (`video`, `audio`)
/// section, if it does.
pub(crate) fn extension_id(sdp: &str, media: &str, uri: &str) -> Option<u8> {
    let mut inside = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if inside {
                return None; // the first such section had none
            }
            inside = m.split(' ').next() == Some(media);
            continue;
        }
        let Some(map) = line.strip_prefix("a=extmap:").filter(|_| inside) else {
            continue;
        };
        let mut parts = map.split_whitespace();
        let (Some(id), Some(found)) = (parts.next(), parts.next()) else {
            continue;
        };
        // `id` or `id/direction`.
        let id = id.split('/').next().and_then(|i| i.parse::<u8>().ok());
        if found == uri {
            return id.filter(|i| (1..=14).contains(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:7/sendonly http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
        a=extmap:9 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n";

    #[test]
    fn the_id_comes_from_the_first_section_of_the_kind() {
        assert_eq!(extension_id(SDP, "video", ABS_SEND_TIME), Some(7));
        assert_eq!(extension_id(SDP, "audio", ABS_SEND_TIME), Some(3));
        assert_eq!(extension_id(SDP, "audio", "urn:other"), None);
        assert_eq!(extension_id("v=0\r\n", "video", ABS_SEND_TIME), None);
    }

    #[test]
    fn two_byte_ids_are_not_taken() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
            a=extmap:15 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n";
        assert_eq!(extension_id(sdp, "video", ABS_SEND_TIME), None);
    }
}
