//! Host candidates of an SDP answer rewritten for NAT 1:1: the public
//! address of a host behind a one-to-one NAT in place of the local address
//! (the NAT maps the port unchanged). The stack keeps the local address in
//! its own candidates (incoming checks arrive there). Pure.

use std::net::IpAddr;

/// Rewrites the address of each UDP `typ host` candidate to the first of
/// `public` of the same family (when there is one); other lines are left
/// as they are.
pub fn rewrite_host_candidates(sdp: &str, public: &[IpAddr]) -> String {
    if public.is_empty() {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        out.push_str(&rewrite_line(line, public).unwrap_or_else(|| line.to_owned()));
    }
    out
}

fn rewrite_line(line: &str, public: &[IpAddr]) -> Option<String> {
    let body = line.strip_prefix("a=candidate:")?;
    let end = body.trim_end_matches(['\r', '\n']);
    let eol = &body[end.len()..];
    let mut fields: Vec<&str> = end.split(' ').collect();
    // foundation component transport priority address port "typ" type ...
    let udp_host = fields.len() >= 8
        && fields[2].eq_ignore_ascii_case("udp")
        && fields[6] == "typ"
        && fields[7] == "host";
    if !udp_host {
        return None;
    }
    let local: IpAddr = fields[4].parse().ok()?;
    let mapped = public
        .iter()
        .find(|p| p.is_ipv4() == local.is_ipv4())?
        .to_string();
    fields[4] = &mapped;
    Some(format!("a=candidate:{}{eol}", fields.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_candidates_get_the_public_address() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n\
                   a=candidate:2 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n\
                   a=candidate:3 1 udp 2130706431 fd00::5 40002 typ host\r\na=mid:0\r\n";
        let out = rewrite_host_candidates(sdp, &["203.0.113.7".parse().unwrap()]);
        assert!(
            out.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host\r\n"),
            "{out}"
        );
        assert!(
            out.contains("198.51.100.9 40000 typ srflx"),
            "only host candidates change"
        );
        assert!(
            out.contains("fd00::5 40002 typ host"),
            "no IPv6 public address given: unchanged"
        );
        assert!(out.ends_with("a=mid:0\r\n"));
        assert_eq!(rewrite_host_candidates(sdp, &[]), sdp);
    }
}
