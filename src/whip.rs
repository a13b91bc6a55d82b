//! The WHIP exchange (RFC 9725) with one endpoint: POST the offer
//! (following 307/308 redirects), read the answer, the resource's URL and
//! the ICE servers of its `Link` headers; trickle candidates with PATCH;
//! DELETE the resource at the end.

use crate::auth::Secret;
use crate::outbound::{CallError, Outbound, redact};
use http::{HeaderMap, HeaderName, Method, header};
use std::time::Duration;

/// The endpoint's ICE servers used at most (the endpoint picks where our
/// STUN requests go: a bounded few).
const MAX_ICE_SERVERS: usize = 4;
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// The most of an endpoint's reason that is kept.
const MAX_REASON: usize = 200;

/// A published stream's resource at the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its absolute URL (for PATCH and DELETE).
    pub url: String,
    /// The SDP answer.
    pub answer: String,
    /// The ICE servers the endpoint suggests (`Link: <..>; rel="ice-server"`).
    pub ice_servers: Vec<String>,
    pub etag: Option<String>,
    /// Whether the token is sent with PATCH and DELETE (it was sent with
    /// the POST that made the resource).
    pub token_ok: bool,
}

/// Why a publish did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The endpoint refused, with its status and reason.
    #[error("the endpoint answered {status}: {reason}")]
    Refused { status: u16, reason: String },
    /// The endpoint is busy or down for now (503, 429), and may say when
    /// to come back.
    #[error("the endpoint is unavailable ({status}): {reason}")]
    Unavailable {
        status: u16,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, timeout, TLS).
    #[error("{0}")]
    Unreachable(String),
    /// An answer that cannot be used (no Location, not SDP, too many
    /// redirects).
    #[error("{0}")]
    Protocol(String),
    /// ICE or DTLS with the SFU did not come up, or went down.
    #[error("{0}")]
    Connection(String),
}

impl PushError {
    /// How long the endpoint asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn bearer(token: Option<&Secret>) -> Vec<(HeaderName, String)> {
    token
        .map(|t| (header::AUTHORIZATION, format!("Bearer {}", t.expose())))
        .into_iter()
        .collect()
}

fn unreachable(e: CallError) -> PushError {
    PushError::Unreachable(e.to_string())
}

/// POSTs `offer` to `url`, following redirects; the resource made. The
/// token goes only to the origin it was configured for, and a redirect
/// from https to http is refused.
pub async fn publish(
    client: &Outbound,
    url: &str,
    token: Option<&Secret>,
    offer: &str,
    timeout: Duration,
) -> Result<Resource, PushError> {
    let mut at = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let token = token.filter(|_| origin(&at) == origin(url));
        let body = Some(("application/sdp", offer.to_owned()));
        let a = client
            .request(Method::POST, &at, &bearer(token), body, timeout)
            .await
            .map_err(unreachable)?;
        let location = a
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| resolve(&at, l));
        match a.status {
            201 => return created(a, location, token),
            307 | 308 => {
                let next = location.ok_or_else(|| {
                    PushError::Protocol(format!("{} without a Location", a.status))
                })?;
                if at.starts_with("https://") && !next.starts_with("https://") {
                    return Err(PushError::Protocol(format!(
                        "refusing a redirect from https to {}",
                        redact(&next)
                    )));
                }
                at = next;
            }
            status @ (429 | 503) => {
                return Err(PushError::Unavailable {
                    status,
                    reason: reason(&a.body),
                    retry_after: retry_after(&a.headers),
                });
            }
            status => {
                return Err(PushError::Refused {
                    status,
                    reason: reason(&a.body),
                });
            }
        }
    }
    Err(PushError::Protocol(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// The resource of a 201: its Location is required, its body the answer.
fn created(
    a: crate::outbound::Answer,
    location: Option<String>,
    token: Option<&Secret>,
) -> Result<Resource, PushError> {
    let url = location.ok_or_else(|| PushError::Protocol("201 without a Location".into()))?;
    if !a.body.trim_start().starts_with("v=0") {
        return Err(PushError::Protocol(
            "the 201's body is not an SDP answer".into(),
        ));
    }
    Ok(Resource {
        // The resource is the token's only if it is where the token went.
        token_ok: token.is_some(),
        url,
        answer: a.body,
        ice_servers: ice_servers(&a.headers),
        etag: a
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

/// `scheme://authority` of a URL.
fn origin(url: &str) -> &str {
    let end = url.find("://").map_or(url.len(), |i| {
        i + 3 + url[i + 3..].find('/').unwrap_or(url.len() - i - 3)
    });
    &url[..end]
}

/// Trickles `fragment` (an `application/trickle-ice-sdpfrag`) to the
/// resource.
pub async fn trickle(
    client: &Outbound,
    resource: &Resource,
    token: Option<&Secret>,
    fragment: String,
    timeout: Duration,
) -> Result<(), String> {
    let mut headers = bearer(token);
    headers.push((
        header::IF_MATCH,
        resource.etag.clone().unwrap_or("*".into()),
    ));
    let body = Some(("application/trickle-ice-sdpfrag", fragment));
    let a = client
        .request(Method::PATCH, &resource.url, &headers, body, timeout)
        .await
        .map_err(|e| e.to_string())?;
    match a.status {
        200..=299 => Ok(()),
        s => Err(format!("PATCH answered {s}: {}", reason(&a.body))),
    }
}

/// DELETEs the resource: the SFU stops the publication.
pub async fn delete(
    client: &Outbound,
    resource: &Resource,
    token: Option<&Secret>,
    timeout: Duration,
) -> Result<(), String> {
    let a = client
        .request(
            Method::DELETE,
            &resource.url,
            &bearer(token.filter(|_| resource.token_ok)),
            None,
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    match a.status {
        200..=299 => Ok(()),
        s => Err(format!("DELETE answered {s}: {}", reason(&a.body))),
    }
}

/// `location` as an absolute URL, relative to `base`.
fn resolve(base: &str, location: &str) -> String {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let Some((scheme, rest)) = base.split_once("://") else {
        return location.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if let Some(l) = location.strip_prefix("//") {
        return format!("{scheme}://{l}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{scheme}://{authority}{dir}{location}")
}

/// The ICE server URIs of `Link: <uri>; rel="ice-server"` headers.
fn ice_servers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|link| {
            let (uri, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let ice = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"ice-server\"")
                    || p.eq_ignore_ascii_case("rel=ice-server")
            });
            ice.then(|| uri.trim().to_owned())
        })
        .take(MAX_ICE_SERVERS)
        .collect()
}

/// `Retry-After` in seconds (an HTTP date is not honoured: a minute).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    Some(
        v.parse::<u64>()
            .map(|s| Duration::from_secs(s.min(3600)))
            .unwrap_or(Duration::from_secs(60)),
    )
}

/// An endpoint's reason: its body's first line, printable and bounded.
fn reason(body: &str) -> String {
    crate::outbound::first_line(body, MAX_REASON).unwrap_or_else(|| "no reason given".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://10.0.0.2:7080/whip/endpoint/cam?x=1";
        assert_eq!(
            resolve(base, "/whip/resource/cam"),
            "http://10.0.0.2:7080/whip/resource/cam"
        );
        assert_eq!(
            resolve(base, "https://other.example/r/1"),
            "https://other.example/r/1"
        );
        assert_eq!(resolve(base, "r1"), "http://10.0.0.2:7080/whip/endpoint/r1");
        assert_eq!(resolve(base, "//cdn.example/r"), "http://cdn.example/r");
        assert_eq!(resolve("http://h:1", "r"), "http://h:1/r");
    }

    #[test]
    fn origins_are_scheme_and_authority() {
        assert_eq!(
            origin("https://a.example:8443/whip/x?y"),
            "https://a.example:8443"
        );
        assert_eq!(origin("http://h"), "http://h");
        assert_ne!(origin("https://a/x"), origin("https://b/x"));
        assert_ne!(origin("http://a/x"), origin("https://a/x"));
    }

    #[test]
    fn ice_servers_come_from_link_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::LINK,
            "<stun:stun.example.net>; rel=\"ice-server\", <https://x/y>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        h.append(
            header::LINK,
            "<turn:t.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            ice_servers(&h),
            ["stun:stun.example.net", "turn:t.example.net?transport=udp"]
        );
    }

    #[test]
    fn retry_after_is_honoured_in_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        assert_eq!(reason("Unauthorized\nmore"), "Unauthorized");
        assert_eq!(reason(""), "no reason given");
        assert_eq!(reason(&"x".repeat(500)).len(), MAX_REASON);
    }
}
