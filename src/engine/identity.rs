//! The DTLS certificate every connection of the engine presents: made once
//! (an ECDSA P-256 key and a self-signed certificate), not once per viewer,
//! and made again before it expires.

use rtc::crypto::SignatureScheme;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long a certificate is valid.
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A certificate is replaced this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The engine's certificate.
pub(crate) struct Identity {
    current: Mutex<RTCCertificate>,
}

fn make(now: SystemTime) -> anyhow::Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider()?;
    let mut params = CertificateParams::new(vec!["ffwhep".to_owned()])?;
    // A day's slack for peers whose clocks are behind.
    params.not_before = (now - Duration::from_secs(24 * 3600)).into();
    params.not_after = (now + VALIDITY).into();
    Ok(RTCCertificate::generate(
        provider.crypto(),
        SignatureScheme::EcdsaP256Sha256,
        params,
    )?)
}

impl Identity {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            current: Mutex::new(make(SystemTime::now())?),
        })
    }

    /// The certificate for a connection made at `now`: the current one, or
    /// a new one when the current expires within [`RENEW_BEFORE`] (should
    /// making it fail, the current one while it lasts).
    pub fn certificate(&self, now: SystemTime) -> RTCCertificate {
        let current = self.lock().clone();
        let due = current
            .expires
            .duration_since(now)
            .map_or(true, |left| left < RENEW_BEFORE);
        if !due {
            return current;
        }
        // Made outside the lock: joins meanwhile take the current one.
        match make(now) {
            Ok(fresh) => {
                *self.lock() = fresh.clone();
                tracing::info!("DTLS certificate renewed");
                fresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the DTLS certificate");
                current
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RTCCertificate> {
        // Replaced whole under the lock: a poisoned lock still holds one.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_one_certificate_until_it_nears_its_end() {
        let id = Identity::new().unwrap();
        let now = SystemTime::now();
        let a = id.certificate(now);
        assert_eq!(a, id.certificate(now), "shared, not made per connection");
        // Valid for 30 days; within a week of its end: a new one.
        let left = a.expires.duration_since(now).unwrap();
        assert!(
            left > Duration::from_secs(29 * 24 * 3600) && left <= VALIDITY,
            "{left:?}"
        );
        let late = a.expires - Duration::from_secs(3600);
        let b = id.certificate(late);
        assert_ne!(a, b);
        // And that one is shared from then on.
        assert_eq!(b, id.certificate(now));
    }
}
