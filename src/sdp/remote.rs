//! What a connection of ffwhep's own needs from the peer's description (an
//! offer from a viewer, an answer from an SFU): its ICE credentials and
//! candidates, whether it is ICE-lite, its DTLS fingerprint and `setup`
//! role. Pure; nothing here can panic on any input.

/// The peer's `a=setup` (RFC 4145, 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
}

/// What the peer's description says about its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// `a=ice-lite` at session level.
    pub ice_lite: bool,
    /// Candidate attribute values, without the `candidate:` prefix.
    pub candidates: Vec<String>,
    /// The fingerprint's hash function (e.g. `sha-256`), lower case, and
    /// its value (colon hex, upper case as sent).
    pub fingerprint: (String, String),
    pub setup: Option<Setup>,
}

/// Why a description cannot be used for a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("no {0} in the description")]
    Missing(&'static str),
    #[error("conflicting {0} between media sections")]
    Conflicting(&'static str),
}

impl Remote {
    pub fn parse(sdp: &str) -> Result<Self, RemoteError> {
        let mut ufrag: Option<&str> = None;
        let mut pwd: Option<&str> = None;
        let mut fingerprint: Option<&str> = None;
        let mut setup = None;
        let mut ice_lite = false;
        let mut candidates = Vec::new();
        let mut in_media = false;
        // Sections with port 0 (rejected or inactive) do not count.
        let mut skipped = false;
        for line in sdp.lines().map(str::trim_end) {
            if let Some(m) = line.strip_prefix("m=") {
                in_media = true;
                skipped = m.split(' ').nth(1) == Some("0");
                continue;
            }
            if skipped {
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let (key, value) = attr.split_once(':').unwrap_or((attr, ""));
            match key {
                "ice-ufrag" => same(&mut ufrag, value, "ICE ufrags")?,
                "ice-pwd" => same(&mut pwd, value, "ICE passwords")?,
                // Peers may list several (aiortc: SHA-256, -384 and -512):
                // the SHA-256 one is what the handshake is checked with.
                "fingerprint" if value.to_ascii_lowercase().starts_with("sha-256 ") => {
                    same(&mut fingerprint, value, "fingerprints")?
                }
                "ice-lite" if !in_media => ice_lite = true,
                "setup" => {
                    setup = match value {
                        "active" => Some(Setup::Active),
                        "passive" => Some(Setup::Passive),
                        "actpass" => Some(Setup::ActPass),
                        _ => setup,
                    }
                }
                "candidate" if in_media && !value.is_empty() => {
                    candidates.push(value.to_owned());
                }
                _ => {}
            }
        }
        let fingerprint = fingerprint.ok_or(RemoteError::Missing("SHA-256 fingerprint"))?;
        // It starts with "sha-256 ", and lines end trimmed: a value follows.
        let (hash, value) = fingerprint.split_once(' ').unwrap_or((fingerprint, ""));
        Ok(Self {
            ice_ufrag: ufrag.ok_or(RemoteError::Missing("ICE ufrag"))?.to_owned(),
            ice_pwd: pwd.ok_or(RemoteError::Missing("ICE password"))?.to_owned(),
            ice_lite,
            candidates,
            fingerprint: (hash.to_ascii_lowercase(), value.trim().to_owned()),
            setup,
        })
    }
}

/// Keeps the first value; another that differs is a conflict.
fn same<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    what: &'static str,
) -> Result<(), RemoteError> {
    match slot {
        Some(v) if *v != value => Err(RemoteError::Conflicting(what)),
        Some(_) => Ok(()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        a=fingerprint:sha-256 AB:CD:EF\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=setup:actpass\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\n\
        a=candidate:2 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=mid:1\r\n\
        m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:other\r\n";

    #[test]
    fn a_viewers_offer_gives_what_the_connection_needs() {
        let r = Remote::parse(OFFER).unwrap();
        assert_eq!(r.ice_ufrag, "abcd");
        assert_eq!(r.ice_pwd, "secretsecretsecretsecret");
        assert!(!r.ice_lite);
        assert_eq!(r.fingerprint, ("sha-256".into(), "AB:CD:EF".into()));
        assert_eq!(r.setup, Some(Setup::ActPass));
        assert_eq!(r.candidates.len(), 2);
        assert!(r.candidates[0].starts_with("1 1 udp"), "{:?}", r.candidates);
    }

    #[test]
    fn an_sfus_lite_answer_and_bad_descriptions() {
        let answer = "v=0\r\na=ice-lite\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\n\
                      a=fingerprint:SHA-256 01:02\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=setup:active\r\n";
        let r = Remote::parse(answer).unwrap();
        assert!(r.ice_lite);
        assert_eq!(r.setup, Some(Setup::Active));
        assert_eq!(r.fingerprint.0, "sha-256");
        assert_eq!(
            Remote::parse("v=0\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\n"),
            Err(RemoteError::Missing("SHA-256 fingerprint"))
        );
        assert_eq!(
            Remote::parse("v=0\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\na=fingerprint:sha-256 \r\n"),
            Err(RemoteError::Missing("SHA-256 fingerprint")),
            "one without its value"
        );
        // Several hashes of one certificate (aiortc): the SHA-256 one.
        let several = OFFER.replace(
            "a=fingerprint:sha-256 AB:CD:EF\r\n",
            "a=fingerprint:sha-384 11:22\r\na=fingerprint:sha-256 AB:CD:EF\r\na=fingerprint:sha-512 33\r\n",
        );
        assert_eq!(Remote::parse(&several).unwrap().fingerprint.1, "AB:CD:EF");
        let conflicting = OFFER.replace("a=mid:1", "a=mid:1\r\na=ice-ufrag:zzzz");
        assert_eq!(
            Remote::parse(&conflicting),
            Err(RemoteError::Conflicting("ICE ufrags"))
        );
        // Anything at all: an error or a value, never a panic.
        for junk in ["", "a=", "m=", "a=fingerprint:", "\u{0}\n\u{ff}"] {
            let _ = Remote::parse(junk);
        }
    }
}
