//! The DTLS certificate every connection of the engine presents: made once
//! (an ECDSA P-256 key and a self-signed certificate), not once per viewer,
//! and made again before it expires.

use rtc::crypto::SignatureScheme;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A certificate is replaced this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The engine's certificate.
pub(crate) struct Identity {
    current: Mutex<RTCCertificate>,
}

fn make() -> anyhow::Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider()?;
    let params = CertificateParams::new(vec!["ffwhep".to_owned()])?;
    Ok(RTCCertificate::generate(
        provider.crypto(),
        SignatureScheme::EcdsaP256Sha256,
        params,
    )?)
}

impl Identity {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            current: Mutex::new(make()?),
        })
    }

    /// The certificate for a connection made at `now`: the current one, or
    /// a new one when the current expires within [`RENEW_BEFORE`] (should
    /// making it fail, the current one while it lasts).
    pub fn certificate(&self, now: SystemTime) -> RTCCertificate {
        // Replaced whole under the lock: a poisoned lock still holds one.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let renew = current
            .expires
            .duration_since(now)
            .map_or(true, |left| left < RENEW_BEFORE);
        if renew {
            match make() {
                Ok(fresh) => *current = fresh,
                Err(e) => tracing::warn!(error = %e, "cannot renew the DTLS certificate"),
            }
        }
        current.clone()
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
        // Within a week of expiry: a new one.
        let late = a.expires - Duration::from_secs(3600);
        let b = id.certificate(late);
        assert_ne!(a, b);
        // And that one is shared from then on.
        assert_eq!(b, id.certificate(now));
    }
}
