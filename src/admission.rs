//! External authorization: before a viewer's session is made, ffwhep asks
//! an HTTP service whether it may watch (a POST of JSON: the stream, the
//! bearer token presented, the remote address, the user agent). A 2xx answer
//! admits; 401 and 403 refuse with the service's reason, any other answer
//! refuses with 403; no answer within the timeout, or none at all, is 503.
//! An answer is reused for the `max-age` of the service's `Cache-Control`.

use crate::outbound::{CallError, Outbound};
use crate::profile::access::ServiceConfig;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Answers remembered at most (a full cache forgets the expired, then all).
const MAX_CACHED: usize = 4096;
/// The longest an answer is reused, whatever the service says.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// The most of the service's reason passed on.
const MAX_REASON: usize = 200;

/// Who asks to watch.
#[derive(Debug, Clone, Serialize)]
pub struct Ask {
    pub stream: String,
    /// The bearer token presented, without `Bearer `.
    pub token: Option<String>,
    pub remote: Option<String>,
    pub user_agent: Option<String>,
}

/// Why a viewer may not watch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The service said no: 401 or 403, and its reason.
    #[error("{1}")]
    Denied(u16, String),
    /// No decision could be had.
    #[error("the authorization service did not answer: {0}")]
    Unavailable(String),
}

/// Decisions taken, for /status and /metrics.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AdmissionCounts {
    pub admitted: u64,
    pub refused: u64,
    pub unavailable: u64,
    /// Decisions reused from the cache (also counted above).
    pub cached: u64,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
    cached: AtomicU64,
}

type Key = (String, Option<String>, Option<IpAddr>);
/// A decision, and until when it may be reused.
type Cached = (Instant, Result<(), Refusal>);

/// One service and what it answered.
pub struct Admission {
    config: ServiceConfig,
    client: Outbound,
    cache: Mutex<HashMap<Key, Cached>>,
    counters: Counters,
}

impl Admission {
    pub fn new(config: ServiceConfig) -> Self {
        let client = Outbound::for_urls([config.url.as_str()]);
        Self {
            config,
            client,
            cache: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    pub fn counts(&self) -> AdmissionCounts {
        let c = &self.counters;
        AdmissionCounts {
            admitted: c.admitted.load(Relaxed),
            refused: c.refused.load(Relaxed),
            unavailable: c.unavailable.load(Relaxed),
            cached: c.cached.load(Relaxed),
        }
    }

    /// Asks the service (or its cached answer) whether `ask` may watch.
    pub async fn admit(&self, ask: &Ask, remote_ip: Option<IpAddr>) -> Result<(), Refusal> {
        let key = (ask.stream.clone(), ask.token.clone(), remote_ip);
        let cached = self
            .lock()
            .get(&key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, d)| d.clone());
        let decision = match cached {
            Some(d) => {
                self.counters.cached.fetch_add(1, Relaxed);
                d
            }
            None => {
                let (decision, max_age) = self.ask(ask).await;
                if let Some(age) = max_age.filter(|a| !a.is_zero()) {
                    self.remember(key, Instant::now() + age.min(MAX_AGE), decision.clone());
                }
                decision
            }
        };
        let counter = match &decision {
            Ok(()) => &self.counters.admitted,
            Err(Refusal::Denied(..)) => &self.counters.refused,
            Err(Refusal::Unavailable(_)) => &self.counters.unavailable,
        };
        counter.fetch_add(1, Relaxed);
        decision
    }

    /// One request to the service: its decision, and how long it may be
    /// reused (none for no answer).
    async fn ask(&self, ask: &Ask) -> (Result<(), Refusal>, Option<Duration>) {
        let body = serde_json::to_string(ask).unwrap_or_default();
        let sent = self
            .client
            .post_json(&self.config.url, body, self.config.timeout)
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(e) => {
                let why = match &e {
                    CallError::Timeout(t) => format!("no answer within {t:?}"),
                    CallError::Failed(_) => "it cannot be reached".to_owned(),
                };
                tracing::warn!(stream = %ask.stream, url = %self.config.url, error = %e, "authorization service: {why}");
                return (Err(Refusal::Unavailable(why)), None);
            }
        };
        let status = answer.status;
        let max_age = answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let decision = match status {
            200..=299 => Ok(()),
            401 | 403 => Err(Refusal::Denied(status, reason(&answer.body, status))),
            _ => Err(Refusal::Denied(403, reason(&answer.body, status))),
        };
        tracing::debug!(stream = %ask.stream, status, "authorization service answered");
        (decision, max_age)
    }

    fn remember(&self, key: Key, until: Instant, decision: Result<(), Refusal>) {
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (u, _)| *u > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (until, decision));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        // A cache entry is written whole under the lock.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `max-age` of a `Cache-Control` value (`no-store` or `no-cache`: none).
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for part in value.split(',').map(str::trim) {
        let lower = part.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            age = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// The service's reason, made safe to pass on: its first line, printable,
/// bounded; or a plain one from the status.
fn reason(text: &str, status: u16) -> String {
    match crate::outbound::first_line(text, MAX_REASON) {
        Some(line) => format!("refused: {line}"),
        None => format!("the authorization service refused (HTTP {status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_age() {
        assert_eq!(max_age("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("private, Max-Age=5"), Some(Duration::from_secs(5)));
        assert_eq!(max_age("max-age=60, no-store"), None);
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=x"), None);
        assert_eq!(max_age(""), None);
    }

    #[test]
    fn a_reason_is_one_bounded_printable_line() {
        assert_eq!(
            reason("not on the list\nmore", 403),
            "refused: not on the list"
        );
        assert_eq!(
            reason("", 401),
            "the authorization service refused (HTTP 401)"
        );
        let long = "x".repeat(1000);
        assert_eq!(reason(&long, 403).len(), "refused: ".len() + MAX_REASON);
        assert_eq!(reason("a\u{7}b", 403), "refused: ab");
    }
}
