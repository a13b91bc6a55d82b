//! The `auth:` section: who may watch a stream. A bearer token (from the
//! profile, an environment variable or a file), or an external service that
//! ffwhep asks about each viewer.

use super::restart::Secs;
use crate::auth::{Secret, TokenSource};
use serde::Deserialize;
use std::time::Duration;

/// How long the service may take when the profile does not say.
pub const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may watch a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Token(TokenSource),
    Service(ServiceConfig),
}

/// An HTTP service that admits or refuses each viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub url: String,
    /// The longest a decision may take; past it the viewer is refused (503).
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<std::path::PathBuf>,
    url: Option<String>,
    timeout: Option<Secs>,
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked_section::<D, RawAccess, Self>(d)
    }
}

impl TryFrom<RawAccess> for Access {
    type Error = String;

    fn try_from(a: RawAccess) -> Result<Self, String> {
        if a.timeout.is_some() && a.url.is_none() {
            return Err("timeout: only with url".into());
        }
        match (a.token, a.token_env, a.token_file, a.url) {
            (Some(t), None, None, None) if !t.trim().is_empty() => {
                Ok(Access::Token(TokenSource::Literal(Secret::new(t))))
            }
            (Some(_), None, None, None) => Err("token is empty: expected a token".into()),
            (None, Some(e), None, None) => Ok(Access::Token(TokenSource::Env(e))),
            (None, None, Some(f), None) => Ok(Access::Token(TokenSource::File(f))),
            (None, None, None, Some(url)) => Ok(Access::Service(ServiceConfig {
                url: service_url("url", &url)?,
                timeout: service_timeout(a.timeout)?,
            })),
            _ => Err("expected exactly one of token, token_env, token_file or url".into()),
        }
    }
}

/// An `http://` or `https://` URL with a host. (HTTPS is verified against
/// the system's trusted roots.)
pub fn service_url(field: &str, url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{field} {url:?}: expected an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{field} {url:?}: no host"));
    }
    if url.parse::<http::Uri>().is_err() {
        return Err(format!("{field} {url:?}: not a valid URL"));
    }
    Ok(url.to_owned())
}

fn service_timeout(t: Option<Secs>) -> Result<Duration, String> {
    match t {
        None => Ok(DEFAULT_SERVICE_TIMEOUT),
        Some(Secs(d)) if d.is_zero() || d > Duration::from_secs(30) => Err(format!(
            "timeout {d:?}: expected above 0 and at most 30 s (a viewer's setup has 30 s)"
        )),
        Some(Secs(d)) => Ok(d),
    }
}
