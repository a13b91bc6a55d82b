//! Reading a `application/trickle-ice-sdpfrag` body (RFC 8840): the ICE
//! username fragment it belongs to and its candidates with their media
//! section; and writing one for candidates of ours. Pure; nothing here can
//! panic on any input.

/// One trickled candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The attribute value, e.g. `candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host`.
    pub candidate: String,
    pub mid: Option<String>,
    pub mline_index: Option<u16>,
}

/// A fragment that trickles `candidates` (attribute values) of the session
/// described by `sdp` (ours): its ICE credentials, and the candidates in its
/// first media section (the bundle's). `None` when `sdp` has no media
/// section or no credentials.
pub fn fragment_for(sdp: &str, candidates: &[String]) -> Option<String> {
    let mut ufrag = None;
    let mut pwd = None;
    let mut mline = None;
    let mut mid = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag.get_or_insert(v);
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            pwd.get_or_insert(v);
        } else if line.starts_with("m=") {
            if mline.is_some() {
                break;
            }
            mline = Some(line);
        } else if let Some(v) = line.strip_prefix("a=mid:")
            && mline.is_some()
        {
            mid.get_or_insert(v);
        }
    }
    let mut f = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n{}\r\n",
        ufrag?, pwd?, mline?
    );
    if let Some(mid) = mid {
        f.push_str(&format!("a=mid:{mid}\r\n"));
    }
    for c in candidates {
        f.push_str(&format!("a={c}\r\n"));
    }
    Some(f)
}

/// What a fragment carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpFrag {
    pub ice_ufrag: Option<String>,
    pub candidates: Vec<Candidate>,
}

impl SdpFrag {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut frag = SdpFrag::default();
        let mut mid = None;
        let mut mline: Option<u16> = None;
        for (i, line) in text
            .lines()
            .map(str::trim_end)
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
        {
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' {
                return Err(format!("line {} is not an SDP line: {line:?}", i + 1));
            }
            if line.starts_with("m=") {
                mline = Some(mline.map_or(0, |n| n.saturating_add(1)));
                mid = None;
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                mid = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ice_ufrag = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=")
                && v.starts_with("candidate:")
            {
                frag.candidates.push(Candidate {
                    candidate: v.to_owned(),
                    mid: mid.clone(),
                    mline_index: mline,
                });
            }
        }
        Ok(frag)
    }

    /// True when the fragment asks for an ICE restart: new credentials.
    pub fn is_restart(&self, current_ufrag: Option<&str>) -> bool {
        match (&self.ice_ufrag, current_ufrag) {
            (Some(new), Some(cur)) => new != cur,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_of_ours_reads_back() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        let c =
            "candidate:1 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 10.0.0.1 rport 40000";
        let f = fragment_for(sdp, &[c.to_owned()]).unwrap();
        assert!(f.contains("a=ice-pwd:secretsecretsecretsecret\r\n"), "{f}");
        let back = SdpFrag::parse(&f).unwrap();
        assert_eq!(back.ice_ufrag.as_deref(), Some("abcd"));
        assert_eq!(back.candidates.len(), 1);
        assert_eq!(back.candidates[0].candidate, c);
        assert_eq!(back.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(back.candidates[0].mline_index, Some(0));
        assert_eq!(fragment_for("v=0\r\n", &[]), None);
    }

    const FRAG: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
        m=video 9 RTP/AVP 0\r\na=mid:1\r\na=candidate:2 1 udp 2122194687 198.51.100.2 61765 typ host\r\na=end-of-candidates\r\n";

    #[test]
    fn reads_candidates_with_their_section() {
        let f = SdpFrag::parse(FRAG).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 2);
        assert_eq!(f.candidates[0].mid.as_deref(), Some("0"));
        assert_eq!(f.candidates[1].mline_index, Some(1));
        assert!(f.candidates[1].candidate.starts_with("candidate:2 1 udp"));
        assert!(!f.is_restart(Some("EsAw")));
        assert!(f.is_restart(Some("old")));
    }

    #[test]
    fn refuses_what_is_not_sdp() {
        assert!(SdpFrag::parse("hello\r\n").is_err());
        assert_eq!(SdpFrag::parse("").unwrap(), SdpFrag::default());
    }
}
