//! rustls configurations for the daemon and the client: TLS 1.3 only, ALPN [`ALPN`], ring.
//!
//! The crypto provider is always passed explicitly: rustls' implicit default panics when more
//! than one provider is compiled into the binary. This module builds configs; it does not open
//! sockets or decide which trust mode a client uses.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::version::TLS13;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pem::{check_private_mode, load_certs, load_key};
use crate::{ALPN, CertError, HTTP_ALPN, PinnedVerifier};

/// The crypto provider used by every config in this crate: ring, with
/// TLS_AES_128_GCM_SHA256 first.
///
/// AES-128 takes 10 rounds to AES-256's 14; the client's order decides the suite, so an
/// xfer client and xferd agree on AES-128-GCM (as browsers do), and every TLS 1.3 suite
/// stays available to other clients. aws-lc-rs, measured inside xfer, was no cheaper
/// than ring (bench/RESULTS.md).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A TLS 1.3 server config presenting `certs` (end-entity first) with `key`, no client auth.
///
/// # Errors
///
/// [`CertError::Tls`] if the key does not match the certificate or is unsupported.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, CertError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // xfer/1 first: the server's order decides, so a client offering it gets it.
    config.alpn_protocols = vec![ALPN.to_vec(), HTTP_ALPN[0].to_vec(), HTTP_ALPN[1].to_vec()];
    Ok(Arc::new(config))
}

/// Loads the daemon's certificate chain and key from PEM files and builds a server config.
///
/// # Errors
///
/// [`CertError::InsecureMode`] if the key file is readable by group or others (checked
/// before anything is read), then any error from [`load_certs`], [`load_key`] or
/// [`server_config`].
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, CertError> {
    check_private_mode(key)?;
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    server_config(certs, key)
}

/// A TLS 1.3 client config that trusts exactly what `verifier` accepts (a pinned fingerprint).
///
/// Keep the `Arc` to read [`PinnedVerifier::seen`] after a failed handshake.
pub fn client_config_pinned(verifier: Arc<PinnedVerifier>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(config)
}

/// A TLS 1.3 client config trusting the CA certificates in a PEM file, with standard
/// WebPKI verification (chain, validity and server name are all checked).
///
/// # Errors
///
/// Any error from [`load_certs`]; [`CertError::Tls`] if a certificate cannot be used as a
/// trust anchor.
pub fn client_config_ca(ca_file: &Path) -> Result<Arc<ClientConfig>, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots.add(cert)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::ensure_identity;
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn load_server_config_checks_key_mode_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("cert.pem");
        let key = tmp.path().join("key.pem");
        ensure_identity(&cert, &key, &["localhost".into()]).unwrap();
        let config = load_server_config(&cert, &key).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [ALPN.to_vec(), b"http/1.1".to_vec(), b"h2".to_vec()]
        );

        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_server_config(&cert, &key),
            Err(CertError::InsecureMode { .. })
        ));
    }

    #[test]
    fn mismatched_key_is_a_tls_error() {
        let a = crate::generate::generate_self_signed(&["a".into()]).unwrap();
        let b = crate::generate::generate_self_signed(&["b".into()]).unwrap();
        use rustls::pki_types::pem::PemObject as _;
        let certs = vec![CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(b.key_pem.as_bytes()).unwrap();
        assert!(matches!(server_config(certs, key), Err(CertError::Tls(_))));
    }

    #[test]
    fn ca_file_without_certs_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.pem");
        fs::write(&ca, "").unwrap();
        assert!(matches!(client_config_ca(&ca), Err(CertError::Pem { .. })));
    }
}
