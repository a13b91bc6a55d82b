//! The HTTP requests ffwhep makes to services of the operator's (the
//! authorization service, event hooks, WHIP endpoints): a request, its
//! answer read whole (bounded), all within a timeout. `http://`, or `https://` verified
//! against the system's trusted roots (`SSL_CERT_FILE` or `SSL_CERT_DIR`
//! name others), loaded once per process, when a first HTTPS service is set.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most of an answer's body that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a request had no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// A service's answer.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as text (lossy), at most [`MAX_ANSWER`] bytes of it.
    pub body: String,
}

/// A client for the operator's services.
#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Outbound {
    /// A client for `urls`: with the system's roots when one is `https://`.
    pub fn for_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let https = urls.into_iter().any(|u| u.starts_with("https://"));
        Self::with_roots(if https { system_roots() } else { no_roots() })
    }

    /// A client for any URL (one may redirect to another): with the
    /// system's roots.
    pub fn any() -> Self {
        Self::with_roots(system_roots())
    }

    fn with_roots(tls: Arc<ClientConfig>) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POSTs `json` to `url`; the answer, whatever its status.
    pub async fn post_json(
        &self,
        url: &str,
        json: String,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let body = Some(("application/json", json));
        self.request(Method::POST, url, &[], body, timeout).await
    }

    /// One request: `headers`, and a body with its content type; the
    /// answer, whatever its status (redirects are not followed).
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Option<(&str, String)>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let shown = redact(url);
        let bad = |e: &dyn std::fmt::Display| CallError::Failed(format!("{shown}: {e}"));
        let mut request = Request::builder().method(method).uri(url).header(
            http::header::USER_AGENT,
            concat!("ffwhep/", env!("CARGO_PKG_VERSION")),
        );
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let content = match body {
            Some((content_type, text)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(text)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(content)).map_err(|e| bad(&e))?;
        let call = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| bad(&chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| bad(&format!("its answer was cut off: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }
}

/// The TLS setup for HTTPS services: the system's trusted roots, loaded once.
fn system_roots() -> Arc<ClientConfig> {
    static ROOTS: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's trusted certificates");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no trusted certificates found: HTTPS services will be refused (set SSL_CERT_FILE)");
            }
            tracing::debug!(added, ignored, "trusted certificates loaded");
            config(roots)
        })
        .clone()
}

/// The TLS setup when no service is HTTPS: nothing trusted, nothing loaded.
fn no_roots() -> Arc<ClientConfig> {
    config(rustls::RootCertStore::empty())
}

fn config(roots: rustls::RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // ring supports every safe default version: this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// `url` as it may be shown (logs, /status, hooks): without user
/// information, query or fragment, which may hold secrets.
pub fn redact(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// A service's reason from its answer's body: its first line, without
/// control characters, at most `max` characters; `None` when empty.
pub fn first_line(body: &str, max: usize) -> Option<String> {
    let line: String = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    let line = line.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// An error and its causes, `: `-separated (a client error's own text
/// leaves out the cause, e.g. "connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_secrets() {
        assert_eq!(
            redact("https://user:pass@sfu.example:8443/whip/cam?token=x#f"),
            "https://sfu.example:8443/whip/cam"
        );
        assert_eq!(redact("http://h/a/b"), "http://h/a/b");
        assert_eq!(redact("http://h?k=v"), "http://h");
        assert_eq!(redact("not a url?x"), "not a url");
    }

    #[test]
    fn a_reason_is_one_bounded_printable_line() {
        assert_eq!(first_line("no\nmore", 10).as_deref(), Some("no"));
        assert_eq!(first_line(" \t\n", 10), None);
        assert_eq!(first_line("a\u{7}bcdef", 3).as_deref(), Some("abc"));
    }
}
