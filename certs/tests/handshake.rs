//! Real TLS handshakes over loopback TCP between the crate's server and client configs.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CipherSuite, ClientConfig, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xfer_certs::config::{client_config_ca, client_config_pinned, server_config};
use xfer_certs::generate::{GeneratedIdentity, generate_self_signed};
use xfer_certs::{ALPN, Fingerprint, PinnedVerifier};

const TIMEOUT: Duration = Duration::from_secs(10);

fn identity() -> (GeneratedIdentity, Arc<ServerConfig>) {
    let id = generate_self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let certs = vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let config = server_config(certs, key).unwrap();
    (id, config)
}

/// Runs one handshake; on success the client sends `ping` and the server answers `pong`.
/// Returns whether the client side succeeded and the bytes the server received.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (bool, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = TlsAcceptor::from(server).accept(tcp).await else {
            return Vec::new();
        };
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(ALPN));
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        buf.to_vec()
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let ok = match tokio::time::timeout(TIMEOUT, TlsConnector::from(client).connect(name, tcp))
        .await
        .expect("handshake timed out")
    {
        Ok(mut tls) => {
            let (_, conn) = tls.get_ref();
            assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
            assert_eq!(conn.alpn_protocol(), Some(ALPN));
            // xfer and xferd agree on AES-128-GCM (the provider lists it first).
            let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
            assert_eq!(suite, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
            tls.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            true
        }
        Err(_) => false,
    };
    let received = tokio::time::timeout(TIMEOUT, server_task)
        .await
        .expect("server timed out")
        .unwrap();
    (ok, received)
}

#[tokio::test]
async fn pinned_right_fingerprint_connects_over_tls13_with_alpn() {
    let (id, server) = identity();
    let verifier = PinnedVerifier::new(Some(id.fingerprint));
    let client = client_config_pinned(verifier.clone());
    // The pin is the identity: the dialled name does not have to be in the certificate.
    let (ok, received) = handshake(server, client, "anything.example").await;
    assert!(ok);
    assert_eq!(received, b"ping");
    assert_eq!(verifier.seen(), Some(id.fingerprint));
}

#[tokio::test]
async fn pinned_none_fails_and_reports_server_fingerprint() {
    let (id, server) = identity();
    let verifier = PinnedVerifier::new(None);
    let (ok, received) =
        handshake(server, client_config_pinned(verifier.clone()), "localhost").await;
    assert!(!ok);
    assert!(received.is_empty(), "nothing may reach the server");
    assert_eq!(verifier.seen(), Some(id.fingerprint));
}

#[tokio::test]
async fn pinned_wrong_fingerprint_fails_and_reports_real_one() {
    let (id, server) = identity();
    let wrong = Fingerprint::of_der(b"some other certificate");
    let verifier = PinnedVerifier::new(Some(wrong));
    let (ok, received) =
        handshake(server, client_config_pinned(verifier.clone()), "localhost").await;
    assert!(!ok);
    assert!(received.is_empty(), "nothing may reach the server");
    assert_eq!(verifier.seen(), Some(id.fingerprint));
}

#[tokio::test]
async fn ca_file_checks_server_name_against_sans() {
    let (id, server) = identity();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &id.cert_pem).unwrap();
    let client = client_config_ca(&ca).unwrap();

    assert!(
        handshake(server.clone(), client.clone(), "localhost")
            .await
            .0
    );
    assert!(
        handshake(server.clone(), client.clone(), "127.0.0.1")
            .await
            .0
    );
    let (ok, received) = handshake(server, client, "evil.example").await;
    assert!(!ok);
    assert!(received.is_empty());
}

#[tokio::test]
async fn ca_file_rejects_a_different_self_signed_cert() {
    let (_, server) = identity();
    let (other, _) = identity();
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &other.cert_pem).unwrap();
    let (ok, _) = handshake(server, client_config_ca(&ca).unwrap(), "localhost").await;
    assert!(!ok);
}
