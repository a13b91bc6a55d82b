//! Which protocol a datagram on a connection's 5-tuple carries, by its
//! first bytes (RFC 7983): STUN, DTLS, SRTP or SRTCP. Pure.

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Empty, or a first byte no protocol of ours uses (TURN channels,
    /// ZRTP, garbage): dropped.
    Other,
}

pub(crate) fn classify(data: &[u8]) -> Carried {
    match data.first() {
        Some(0..=3) => Carried::Stun,
        Some(20..=63) => Carried::Dtls,
        // RTCP packet types 192-223 sit where RTP's marker bit and payload
        // type would be (RFC 5761).
        Some(128..=191) => match data.get(1) {
            Some(192..=223) => Carried::Rtcp,
            Some(_) => Carried::Rtp,
            None => Carried::Other,
        },
        _ => Carried::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_is_its_protocol() {
        assert_eq!(classify(&[0x00, 0x01]), Carried::Stun);
        assert_eq!(classify(&[0x01, 0x01]), Carried::Stun);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Carried::Dtls);
        assert_eq!(classify(&[0x80, 102]), Carried::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 102]), Carried::Rtp, "marker set");
        assert_eq!(classify(&[0x81, 200]), Carried::Rtcp, "a sender report");
        assert_eq!(classify(&[0x81, 205]), Carried::Rtcp, "a NACK");
        assert_eq!(classify(&[0x80]), Carried::Other);
        assert_eq!(classify(&[]), Carried::Other);
        assert_eq!(classify(&[64, 0]), Carried::Other);
        assert_eq!(classify(&[255]), Carried::Other);
    }
}
