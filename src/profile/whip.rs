//! The `whip:` section: SFUs or CDNs the stream is pushed into over WHIP
//! (RFC 9725), each with its bearer token and how failed attempts are
//! retried. Plain data.

use super::access::service_url;
use super::restart::{Factor, Fraction, Policy, RestartConfig, Secs};
use crate::auth::{Secret, TokenSource};
use serde::Deserialize;
use std::time::Duration;

/// One WHIP endpoint to publish to.
#[derive(Debug, Clone, PartialEq)]
pub struct WhipConfig {
    pub url: String,
    pub token: Option<TokenSource>,
    /// Delays between attempts; a push is retried for as long as the stream
    /// runs (`policy` is always, `max_attempts` unbounded).
    pub retry: RestartConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhip {
    url: String,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<std::path::PathBuf>,
    #[serde(default)]
    retry: RawRetry,
}

/// `retry:` of a push: the backoff of `restart:`, without its limits.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    initial_delay: Secs,
    factor: Factor,
    max_delay: Secs,
    jitter: Fraction,
    healthy_after: Secs,
}

impl Default for RawRetry {
    fn default() -> Self {
        let r = RestartConfig::default();
        Self {
            initial_delay: r.initial_delay,
            factor: r.factor,
            max_delay: r.max_delay,
            jitter: r.jitter,
            healthy_after: r.healthy_after,
        }
    }
}

impl<'de> Deserialize<'de> for WhipConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::checked_section::<D, RawWhip, Self>(d)
    }
}

impl TryFrom<RawWhip> for WhipConfig {
    type Error = String;

    fn try_from(w: RawWhip) -> Result<Self, String> {
        let url = service_url("url", &w.url)?;
        let token = match (w.token, w.token_env, w.token_file) {
            (None, None, None) => None,
            (Some(t), None, None) if !t.trim().is_empty() => {
                Some(TokenSource::Literal(Secret::new(t)))
            }
            (Some(_), None, None) => return Err("token is empty: expected a token".into()),
            (None, Some(e), None) => Some(TokenSource::Env(e)),
            (None, None, Some(f)) => Some(TokenSource::File(f)),
            _ => return Err("expected at most one of token, token_env or token_file".into()),
        };
        let r = w.retry;
        if r.initial_delay.0.is_zero() {
            return Err("retry.initial_delay: expected above 0".into());
        }
        let retry = RestartConfig {
            policy: Policy::Always,
            initial_delay: r.initial_delay,
            factor: r.factor,
            max_delay: Secs(r.max_delay.0.max(r.initial_delay.0)),
            jitter: r.jitter,
            max_attempts: u32::MAX,
            window: Secs(Duration::from_secs(1)),
            healthy_after: r.healthy_after,
        };
        Ok(Self { url, token, retry })
    }
}
