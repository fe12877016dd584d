//! A small local certificate authority, so browsers and phones can trust the daemon
//! without warnings and without a public CA (no internet, no DNS challenge).
//!
//! [`LocalCa::generate`] makes an ECDSA P-256 CA certificate that may sign server
//! certificates only (path length 0); [`LocalCa::issue`] signs a server certificate for a
//! list of names and returns the chain `[leaf, CA]` to serve. The CA is installed once on
//! each device; the leaf can then be re-issued (new names, renewal) without touching the
//! devices. This module does not choose file locations or names and never prompts.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use time::{Date, Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::generate::{GeneratedIdentity, dedup};
use crate::pem::{check_private_mode, load_certs, write_atomic};
use crate::{CertError, Fingerprint};

/// Backdating absorbs clock skew between the daemon and the devices that check it.
const BACKDATE: Duration = Duration::days(1);
/// A CA installed on every device should outlive many server certificates.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Apple platforms reject TLS server certificates valid for more than 825 days, even from a
/// CA the user installed (iOS 13 / macOS 10.15 requirements); the others accept it too.
const LEAF_VALIDITY: Duration = Duration::days(825);

/// A certificate authority: its certificate and its signing key.
pub struct LocalCa {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

/// A server certificate issued by a [`LocalCa`].
pub struct Issued {
    /// The chain `[leaf, CA]` as PEM, the leaf's key and the leaf's fingerprint.
    pub identity: GeneratedIdentity,
    /// The subject alternative names, in order (IP addresses in text form).
    pub names: Vec<String>,
    /// The last day the certificate is valid (UTC).
    pub not_after: Date,
}

impl LocalCa {
    /// Generates a new CA key and certificate; `label` (e.g. the host name) goes into its
    /// common name with today's date and a tag from the key, so two CAs in one trust store
    /// can be told apart.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if rcgen fails (e.g. a non-ASCII label).
    pub fn generate(label: &str) -> Result<Self, CertError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate().map_err(gen_err)?;
        // Two CAs made on one host on one day must still differ in name: verifiers find
        // the issuer by name, and one name for two keys fails as a bad signature.
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let tag: String = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "xferd");
        dn.push(
            DnType::CommonName,
            format!("xferd CA {label} {} {tag}", now.date()),
        );
        params.distinguished_name = dn;
        // May sign server certificates, not other CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA from its certificate and key files.
    ///
    /// # Errors
    ///
    /// [`CertError::InsecureMode`] if the key file is readable by group or others (checked
    /// first); [`CertError::Io`] / [`CertError::Pem`] for unreadable or malformed files;
    /// [`CertError::Ca`] if the certificate is not a CA or the key is not its key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CertError> {
        check_private_mode(key)?;
        let der = load_certs(cert)?.swap_remove(0);
        let key_pem = std::fs::read_to_string(key).map_err(|e| CertError::io(key, e))?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Pem {
            path: key.to_owned(),
            message: format!("not a usable private key: {e}"),
        })?;
        let ca_error = |message: &str| CertError::Ca {
            path: cert.to_owned(),
            message: message.to_owned(),
        };
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| ca_error(&format!("cannot parse the certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(ca_error("not a CA certificate"));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(CertError::Ca {
                path: cert.to_owned(),
                message: format!("its key is not `{}`", key.display()),
            });
        }
        Ok(Self {
            cert_pem: pem_of(&der),
            cert: der,
            key: key_pair,
        })
    }

    /// Writes the key (mode 0600) and then the certificate (mode 0644), each atomically.
    ///
    /// # Errors
    ///
    /// Any error from [`write_atomic`].
    pub fn save(&self, cert: &Path, key: &Path) -> Result<(), CertError> {
        write_atomic(key, self.key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(cert, self.cert_pem.as_bytes(), 0o644)
    }

    /// The CA certificate (DER), the trust anchor devices install.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The SHA-256 fingerprint of the CA certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert)
    }

    /// The last day the CA certificate is valid (UTC).
    pub fn not_after(&self) -> Date {
        inspect(&self.cert)
            .map(|i| i.not_after)
            .expect("parsed when generated or loaded")
    }

    /// Whether `chain` (end-entity first, as served) carries this CA after its leaf.
    pub fn is_in_chain(&self, chain: &[CertificateDer<'_>]) -> bool {
        chain
            .iter()
            .skip(1)
            .any(|c| c.as_ref() == self.cert.as_ref())
    }

    /// Issues a server certificate with a new ECDSA P-256 key for `names`: each is an IP
    /// SAN if it parses as an IP address, a DNS SAN otherwise; duplicates are dropped
    /// (case-insensitively). Valid from a day ago for 825 days, or until the CA expires.
    ///
    /// # Errors
    ///
    /// [`CertError::Generate`] if rcgen rejects a name or fails to sign.
    pub fn issue(&self, names: &[String]) -> Result<Issued, CertError> {
        let names = dedup(names.iter().cloned());
        let mut params = CertificateParams::new(names.clone()).map_err(gen_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "xferd");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        let ca_end = inspect(&self.cert)
            .map(|i| i.not_after_time)
            .map_err(CertError::Generate)?;
        params.not_after = (now + LEAF_VALIDITY).min(ca_end);

        let issuer = Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(gen_err)?;
        let key = KeyPair::generate().map_err(gen_err)?;
        let leaf = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(Issued {
            identity: GeneratedIdentity {
                cert_pem: leaf.pem() + &self.cert_pem,
                key_pem: key.serialize_pem(),
                fingerprint: Fingerprint::of_der(leaf.der()),
            },
            names,
            not_after: params.not_after.date(),
        })
    }
}

/// What [`inspect`] reads from a certificate.
pub struct CertInfo {
    /// DNS and IP subject alternative names, in order (IP addresses in text form).
    pub names: Vec<String>,
    /// The last day it is valid (UTC).
    pub not_after: Date,
    not_after_time: OffsetDateTime,
}

/// Reads the names and expiry of a DER certificate.
///
/// # Errors
///
/// A message saying why the certificate cannot be parsed.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let sans = x509
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?;
    let names = sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip_text(b),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after_time = x509.validity().not_after.to_datetime();
    Ok(CertInfo {
        names,
        not_after: not_after_time.date(),
        not_after_time,
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    use std::net::IpAddr;
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn gen_err(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::provider;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{ServerName, UnixTime};
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    /// Verifies `chain_pem` for `name` the way a browser does, with `ca` as the only root.
    fn verify(ca: &CertificateDer<'static>, chain_pem: &str, name: &str) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn issued_chain_verifies_by_name_and_address() {
        let ca = LocalCa::generate("lab").unwrap();
        let issued = ca
            .issue(&names(&[
                "localhost",
                "127.0.0.1",
                "nas.lan",
                "NAS.lan",
                "::1",
            ]))
            .unwrap();
        assert_eq!(issued.names, ["localhost", "127.0.0.1", "nas.lan", "::1"]);
        let chain = &issued.identity.cert_pem;
        for name in ["localhost", "127.0.0.1", "nas.lan", "::1"] {
            verify(ca.cert_der(), chain, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify(ca.cert_der(), chain, "other.lan").is_err());
        // Made on the same host on the same day, yet a different issuer.
        let stranger = LocalCa::generate("lab").unwrap();
        let err = verify(stranger.cert_der(), chain, "localhost").unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");

        let served: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(served.len(), 2, "leaf then CA");
        assert_eq!(Fingerprint::of_der(&served[0]), issued.identity.fingerprint);
        assert!(ca.is_in_chain(&served));
        assert!(!stranger.is_in_chain(&served));
        assert_eq!(inspect(&served[0]).unwrap().names, issued.names);
        let days = (issued.not_after - OffsetDateTime::now_utc().date()).whole_days();
        assert!((823..=825).contains(&days), "{days}");
    }

    #[test]
    fn a_saved_ca_loads_and_keeps_issuing_for_the_same_root() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (
            tmp.path().join("ca/ca.pem"),
            tmp.path().join("ca/ca-key.pem"),
        );
        let ca = LocalCa::generate("lab").unwrap();
        ca.save(&cert, &key).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);

        let loaded = LocalCa::load(&cert, &key).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.cert_pem(), fs::read_to_string(&cert).unwrap());
        let issued = loaded.issue(&names(&["localhost"])).unwrap();
        let root = crate::pem::load_certs(&cert).unwrap().remove(0);
        verify(&root, &issued.identity.cert_pem, "localhost").unwrap();
    }

    #[test]
    fn load_refuses_what_is_not_a_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
        let leaf = crate::generate::generate_self_signed(&names(&["localhost"])).unwrap();
        crate::generate::write_identity(&leaf, &cert, &key).unwrap();
        let err = LocalCa::load(&cert, &key).err().expect("refused");
        assert!(err.to_string().contains("not a CA certificate"), "{err}");

        // Another CA's key.
        let (a, b) = (
            LocalCa::generate("a").unwrap(),
            LocalCa::generate("b").unwrap(),
        );
        a.save(&cert, &key).unwrap();
        let other_key = tmp.path().join("other-key.pem");
        b.save(&tmp.path().join("other.pem"), &other_key).unwrap();
        let err = LocalCa::load(&cert, &other_key).err().expect("refused");
        assert!(err.to_string().contains("its key is not"), "{err}");

        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            LocalCa::load(&cert, &key),
            Err(CertError::InsecureMode { .. })
        ));
    }
}
