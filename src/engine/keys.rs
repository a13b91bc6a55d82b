//! The DTLS side of a connection of ffwhep's own (docs/OWN_CONNECTION.md)
//! and the SRTP contexts it yields: the handshake configured as `rtc`
//! configures it (our certificate, the SRTP profiles, a client certificate
//! required and checked against the SDP's fingerprint), then the keys
//! exported once the handshake is done.

use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::dtls::state::State;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::srtp::config::{Config, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;
use std::sync::Arc;

/// Replay windows of the contexts that decrypt what the peer sends.
const REPLAY_WINDOW: usize = 64;

/// The handshake's configuration: `certificate` ours, the peer's checked
/// against `fingerprint` (its SDP's `a=fingerprint`, SHA-256, colon hex).
pub(crate) fn dtls_config(
    provider: Arc<dyn RTCCryptoProvider>,
    certificate: &RTCCertificate,
    fingerprint: &str,
    is_client: bool,
) -> anyhow::Result<Arc<HandshakeConfig>> {
    let want = fingerprint.to_ascii_lowercase();
    let hasher = provider.clone();
    let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
        let first = certs
            .first()
            .ok_or(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)?;
        let digest = hasher
            .crypto()
            .hash(HashAlgorithm::Sha256, first)
            .map_err(|_| rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)?;
        if colon_hex(&digest) == want {
            Ok(())
        } else {
            Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
        }
    });
    let config = ConfigBuilder::default()
        .with_crypto_provider(provider)
        .with_certificates(vec![certificate.dtls_certificate.clone()])
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
        ])
        .with_client_auth(ClientAuthType::RequireAnyClientCert)
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(verify))
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .build(is_client, None)?;
    Ok(Arc::new(config))
}

/// The SRTP contexts of a finished handshake: ours (RTP and RTCP out) and
/// the peer's (SRTCP in).
pub(crate) fn srtp_contexts(
    state: &State,
    provider: &dyn RTCCryptoProvider,
) -> anyhow::Result<(Context, Context)> {
    let profile = match state.srtp_protection_profile() {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            ProtectionProfile::Aes128CmHmacSha1_80
        }
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => {
            ProtectionProfile::Aes128CmHmacSha1_32
        }
        other => anyhow::bail!("no SRTP profile was agreed ({other:?})"),
    };
    let mut config = Config {
        profile,
        ..Default::default()
    };
    let material = state.export_keying_material(
        LABEL_EXTRACTOR_DTLS_SRTP,
        &[],
        config.keying_material_len(),
    )?;
    config.set_session_keys_from_keying_material(material.as_ref(), state.is_client())?;
    let keys = &config.keys;
    let ours = Context::new(
        &keys.local_master_key,
        &keys.local_master_salt,
        profile,
        None,
        None,
        provider.crypto(),
    )?;
    let theirs = Context::new(
        &keys.remote_master_key,
        &keys.remote_master_salt,
        profile,
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
        provider.crypto(),
    )?;
    Ok((ours, theirs))
}

/// Bytes as lower-case colon hex (`ab:cd:..`), as SDP fingerprints are.
fn colon_hex(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
    use rtc::shared::TransportProtocol;
    use std::net::SocketAddr;
    use std::time::Instant;

    fn fingerprint_of(cert: &RTCCertificate, provider: &dyn RTCCryptoProvider) -> String {
        let der = &cert.dtls_certificate.certificate[0];
        colon_hex(&provider.crypto().hash(HashAlgorithm::Sha256, der).unwrap())
    }

    /// Moves every datagram `from` sends to `to`; whether `to` finished.
    fn deliver(from: &mut Endpoint, to: &mut Endpoint, from_addr: SocketAddr) -> bool {
        let mut done = false;
        while let Some(t) = from.poll_transmit() {
            let events = to
                .read(
                    Instant::now(),
                    from_addr,
                    None,
                    BytesMut::from(&t.message[..]),
                )
                .unwrap_or_default();
            done |= events
                .iter()
                .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        }
        done
    }

    const SERVER: &str = "127.0.0.1:1";
    const CLIENT: &str = "127.0.0.1:2";

    /// A server and a client handshake in memory; the server expects the
    /// client's certificate when `honest`, another one otherwise. The two
    /// endpoints, and whether each finished.
    fn handshake(honest: bool) -> (Endpoint, Endpoint, bool, bool) {
        let provider = rtc::crypto::default_provider().unwrap();
        let now = std::time::SystemTime::now();
        let ours = super::super::identity::Identity::new()
            .unwrap()
            .certificate(now);
        let theirs = super::super::identity::Identity::new()
            .unwrap()
            .certificate(now);
        let (server_addr, client_addr): (SocketAddr, SocketAddr) =
            (SERVER.parse().unwrap(), CLIENT.parse().unwrap());
        let expected = fingerprint_of(if honest { &theirs } else { &ours }, &*provider);
        let server_cfg = dtls_config(provider.clone(), &ours, &expected, false).unwrap();
        let client_cfg = dtls_config(
            provider.clone(),
            &theirs,
            &fingerprint_of(&ours, &*provider),
            true,
        )
        .unwrap();
        let mut server = Endpoint::new(server_addr, TransportProtocol::UDP, Some(server_cfg));
        let mut client = Endpoint::new(client_addr, TransportProtocol::UDP, None);
        client
            .connect(Instant::now(), server_addr, client_cfg, None)
            .unwrap();
        let (mut server_done, mut client_done) = (false, false);
        for _ in 0..20 {
            server_done |= deliver(&mut client, &mut server, client_addr);
            client_done |= deliver(&mut server, &mut client, server_addr);
        }
        (server, client, server_done, client_done)
    }

    #[test]
    fn a_handshake_in_memory_gives_keys_both_ends_agree_on() {
        let provider = rtc::crypto::default_provider().unwrap();
        let (server, client, server_done, client_done) = handshake(true);
        assert!(server_done && client_done, "the handshake did not finish");
        let (server_addr, client_addr): (SocketAddr, SocketAddr) =
            (SERVER.parse().unwrap(), CLIENT.parse().unwrap());
        let (mut server_out, _) = srtp_contexts(
            server.get_connection_state(client_addr).unwrap(),
            &*provider,
        )
        .unwrap();
        let (_, mut client_in) = srtp_contexts(
            client.get_connection_state(server_addr).unwrap(),
            &*provider,
        )
        .unwrap();
        // An RTP packet protected by one end is read by the other.
        let plain = [
            0x80u8, 102, 0, 1, 0, 0, 0, 10, 0x12, 0x34, 0x56, 0x78, 0xde, 0xad, 0xbe, 0xef,
        ];
        let sealed = server_out.encrypt_rtp(&plain).unwrap();
        assert_ne!(&sealed[12..], &plain[12..]);
        let opened = client_in.decrypt_rtp(&sealed).unwrap();
        assert_eq!(&opened[..], &plain[..]);
    }

    #[test]
    fn a_peer_whose_certificate_is_not_the_fingerprint_is_refused() {
        let (_, _, server_done, _) = handshake(false);
        assert!(
            !server_done,
            "a certificate that is not the SDP's was accepted"
        );
    }
}
