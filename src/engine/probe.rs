//! When a viewer can take media. ffwhep is the DTLS server, so its DTLS is
//! up half a round trip before the viewer's: the viewer has its keys only
//! once our last flight has reached it, and a stack that handles a burst of
//! datagrams before applying new keys (`rtc`-based viewers) drops media in
//! the same burst as that flight. So, with the flight, a connectivity check
//! of our own goes to the viewer: its answer was sent after the flight had
//! been read, so media sent from then on finds the keys in place. A viewer
//! that does not answer gets its media after `ANSWER_WAIT` all the same.

use bytes::BytesMut;
use rtc::ice::attributes::control::{AttrControlled, AttrControlling};
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use std::time::Duration;

/// How long media waits for the answer to the check at most.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_millis(100);

/// The ICE credentials a check to the viewer needs.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub local_ufrag: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    /// Our ICE role: controlling when we offered (a push), controlled when
    /// we answered (a viewer). A check claiming the peer's own role would
    /// be a role conflict.
    pub controlling: bool,
}

/// A Binding request to the peer (in our ICE role), signed with its
/// password; its transaction id and bytes.
pub(crate) fn check(c: &Credentials) -> Option<([u8; 12], BytesMut)> {
    let provider = rtc::crypto::default_provider().ok()?;
    let id = TransactionId::new();
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(id),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{}:{}", c.remote_ufrag, c.local_ufrag),
        )),
        if c.controlling {
            Box::new(AttrControlling(rand::random()))
        } else {
            Box::new(AttrControlled(rand::random()))
        },
        Box::new(PriorityAttr(2_130_706_431)),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            c.remote_pwd.clone(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).ok()?;
    Some((id.0, BytesMut::from(&m.raw[..])))
}

/// The transaction id of a Binding success response.
pub(crate) fn answered(data: &[u8]) -> Option<[u8; 12]> {
    if !super::stun_peek::is_binding_success(data) {
        return None;
    }
    data.get(8..20)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_a_signed_binding_request_and_its_answer_is_known_by_id() {
        use rtc::stun::message::Getter;
        let c = Credentials {
            local_ufrag: "ours".into(),
            remote_ufrag: "theirs".into(),
            remote_pwd: "a-password-of-22-chars".into(),
            controlling: false,
        };
        let (id, raw) = check(&c).unwrap();
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().unwrap();
        assert_eq!(m.typ, BINDING_REQUEST);
        assert_eq!(m.transaction_id.0, id);
        let provider = rtc::crypto::default_provider().unwrap();
        MessageIntegrity::check(&mut m, b"a-password-of-22-chars", provider.crypto()).unwrap();
        assert_eq!(super::super::stun_peek::local_ufrag(&raw), Some("theirs"));
        // Its answer: the same id in a Binding success.
        let mut ok = raw.to_vec();
        ok[0] = 0x01;
        ok[1] = 0x01;
        assert_eq!(answered(&ok), Some(id));
        assert_eq!(answered(&raw), None, "a request answers nothing");
        let mut role = AttrControlled::default();
        role.get_from(&m).unwrap();
        // Offering (a push), we are the controlling agent: the check says so.
        let (_, raw) = check(&Credentials {
            controlling: true,
            ..c
        })
        .unwrap();
        let mut m = Message::new();
        m.raw = raw.to_vec();
        m.decode().unwrap();
        assert!(AttrControlled::default().get_from(&m).is_err());
        AttrControlling::default().get_from(&m).unwrap();
    }
}
