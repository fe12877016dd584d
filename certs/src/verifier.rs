//! [`PinnedVerifier`]: accept exactly one server certificate, identified by its fingerprint.
//!
//! This is the crate's one use of rustls' `danger` API. Instead of chain and hostname
//! validation, the end-entity certificate's SHA-256 must equal the pinned [`Fingerprint`];
//! anything else aborts the handshake, so nothing is ever sent on an unverified connection.
//! The fingerprint that was presented is recorded so the caller can show it and ask the user
//! (trust on first use). Handshake signatures are still verified normally, which proves the
//! server holds the certificate's private key. Deciding what to pin is not done here.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::Fingerprint;

/// A rustls server-certificate verifier that trusts one pinned fingerprint and nothing else.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier accepting only `expected`; with `None` every certificate is rejected, which
    /// is how a client learns an unknown server's fingerprint (see [`PinnedVerifier::seen`]).
    pub fn new(expected: Option<Fingerprint>) -> Arc<Self> {
        Arc::new(Self {
            expected,
            seen: Mutex::new(None),
            provider: crate::config::provider(),
        })
    }

    /// The fingerprint of the end-entity certificate presented in the last handshake, if any.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        // The pin is the identity, so the name the client dialled is not checked.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(presented);
        // Plain equality is fine: fingerprints are public, there is no secret to leak by timing.
        if self.expected == Some(presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(v: &PinnedVerifier, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("ignored.example").unwrap();
        v.verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn accepts_only_the_pinned_fingerprint() {
        let (good, bad) = (b"good".as_slice(), b"bad".as_slice());
        let v = PinnedVerifier::new(Some(Fingerprint::of_der(good)));
        assert_eq!(v.seen(), None);
        assert!(verify(&v, good).is_ok());
        assert!(verify(&v, bad).is_err());
        assert_eq!(v.seen(), Some(Fingerprint::of_der(bad)));

        let none = PinnedVerifier::new(None);
        assert!(matches!(
            verify(&none, good),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            ))
        ));
        assert_eq!(none.seen(), Some(Fingerprint::of_der(good)));
        assert!(!none.supported_verify_schemes().is_empty());
    }
}
