//! A look at a datagram's STUN header and attributes without decoding it:
//! enough to route a check by its USERNAME and to tell a nominating check
//! and a binding success apart. Pure; any input is safe.

const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const USERNAME: u16 = 0x0006;
const USE_CANDIDATE: u16 = 0x0025;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

/// The message type, if `data` is a STUN message.
fn message_type(data: &[u8]) -> Option<u16> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != MAGIC {
        return None;
    }
    Some(u16::from_be_bytes([data[0], data[1]]))
}

/// The value of the first attribute of type `kind`, if `data` is a STUN
/// message that has one.
fn attribute(data: &[u8], kind: u16) -> Option<&[u8]> {
    message_type(data)?;
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let mut attrs = data.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let k = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        if k == kind {
            return Some(value);
        }
        attrs = attrs.get(4 + alen.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    None
}

/// The local ufrag of a STUN message's USERNAME (`local:remote`), if the
/// datagram is a STUN message that has one.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(attribute(data, USERNAME)?).ok()?;
    name.split(':').next()
}

/// A binding request that carries USE-CANDIDATE: the viewer nominates
/// the pair it came on.
pub fn is_nominating_check(data: &[u8]) -> bool {
    message_type(data) == Some(BINDING_REQUEST) && attribute(data, USE_CANDIDATE).is_some()
}

/// A binding success response.
pub fn is_binding_success(data: &[u8]) -> bool {
    message_type(data) == Some(BINDING_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attrs: &[(u16, &[u8])], typ: u16) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in attrs {
            body.extend(k.to_be_bytes());
            body.extend((v.len() as u16).to_be_bytes());
            body.extend(*v);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut m = typ.to_be_bytes().to_vec();
        m.extend((body.len() as u16).to_be_bytes());
        m.extend(MAGIC);
        m.extend([7u8; 12]); // transaction id
        m.extend(body);
        m
    }

    #[test]
    fn reads_the_local_ufrag_of_a_stun_check() {
        let m = check(&[(USERNAME, b"abc:def")], BINDING_REQUEST);
        assert_eq!(local_ufrag(&m), Some("abc"));
        assert_eq!(local_ufrag(&m[..25]), None, "truncated");
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
    }

    #[test]
    fn tells_a_nominating_check_from_a_plain_one_and_a_success() {
        let plain = check(&[(USERNAME, b"abc:def")], BINDING_REQUEST);
        let nominating = check(
            &[(USERNAME, b"abc:def"), (USE_CANDIDATE, b"")],
            BINDING_REQUEST,
        );
        let success = check(&[(USE_CANDIDATE, b"")], BINDING_SUCCESS);
        assert!(!is_nominating_check(&plain));
        assert!(is_nominating_check(&nominating));
        assert!(
            !is_nominating_check(&success),
            "a response nominates nothing"
        );
        assert!(is_binding_success(&success));
        assert!(!is_binding_success(&nominating));
        assert!(!is_nominating_check(&nominating[..30]), "truncated");
        assert!(!is_binding_success(&[0x80; 40]));
    }
}
