//! Self-signed certificate generation for the daemon's identity.
//!
//! The daemon calls [`ensure_identity`] on start: the first run creates an ECDSA P-256 key and
//! a ten-year self-signed certificate; later runs leave existing files alone. Certificates are
//! long-lived on purpose: clients pin the fingerprint, so expiry would only break them. This
//! module never rotates or overwrites an existing identity.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

use crate::pem::write_atomic;
use crate::{CertError, Fingerprint};

/// Backdating absorbs clock skew between the daemon and its clients.
const BACKDATE: Duration = Duration::days(1);
/// A pinned certificate should not expire under the user.
const VALIDITY: Duration = Duration::days(3650);
/// The subject common name of generated certificates.
const COMMON_NAME: &str = "xferd";

/// A freshly generated certificate and private key, PEM-encoded.
pub struct GeneratedIdentity {
    /// The certificate (`BEGIN CERTIFICATE`): self-signed, or the chain `[leaf, CA]` when
    /// issued by a [`LocalCa`](crate::ca::LocalCa).
    pub cert_pem: String,
    /// The PKCS#8 private key (`BEGIN PRIVATE KEY`); write it with mode 0600.
    pub key_pem: String,
    /// The certificate's SHA-256 fingerprint, for clients to pin.
    pub fingerprint: Fingerprint,
}

/// Generates an ECDSA P-256 key and a self-signed certificate with CN `xferd`.
///
/// Each name becomes a subject alternative name: an IP SAN if it parses as an IP address, a DNS
/// SAN otherwise. Duplicates are dropped. The certificate is valid from one day ago for 3650 days.
///
/// # Errors
///
/// [`CertError::Generate`] if rcgen rejects a name (e.g. non-ASCII) or fails to sign.
pub fn generate_self_signed(names: &[String]) -> Result<GeneratedIdentity, CertError> {
    let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
    let mut params = CertificateParams::new(dedup(names.iter().cloned())).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, COMMON_NAME);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;

    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(GeneratedIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint: Fingerprint::of_der(cert.der()),
    })
}

/// The names a daemon certificate should cover by default.
///
/// The machine hostname (if readable and plain ASCII), `localhost`, `127.0.0.1`, `::1`, then
/// `extra`; deduplicated (case-insensitively), first occurrence kept.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let base = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    dedup(
        hostname()
            .into_iter()
            .chain(base)
            .chain(extra.iter().cloned()),
    )
}

fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_ascii_lowercase())
        // rcgen needs an IA5 (ASCII) string for a DNS SAN; skip anything odd.
        .find(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        })
}

/// DNS names are case-insensitive, so `Lab` and `lab` are the same SAN.
pub(crate) fn dedup(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    names
        .filter(|n| seen.insert(n.to_ascii_lowercase()))
        .collect()
}

/// Makes sure a certificate and key exist, generating them on first use.
///
/// If both files exist nothing is touched and `Ok(None)` is returned (their contents are not
/// checked here; loading them does that). If neither exists, a new identity for `names` is
/// generated, the key written with mode 0600 and the certificate with 0644 (both atomically),
/// and its fingerprint returned.
///
/// # Errors
///
/// [`CertError::Io`] with kind `NotFound`, naming the missing file, if only one of the two
/// exists (regenerating would silently change the pinned identity); otherwise any error from
/// [`generate_self_signed`] or [`write_atomic`].
pub fn ensure_identity(
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<Option<Fingerprint>, CertError> {
    let exists = |p: &Path| p.try_exists().map_err(|e| CertError::io(p, e));
    match (exists(cert)?, exists(key)?) {
        (true, true) => return Ok(None),
        (false, false) => {}
        (cert_exists, _) => {
            let (missing, present) = if cert_exists {
                (key, cert)
            } else {
                (cert, key)
            };
            let message = format!(
                "not found, but `{}` exists; restore it, or remove both files to generate a new identity",
                present.display()
            );
            return Err(CertError::io(
                missing,
                io::Error::new(io::ErrorKind::NotFound, message),
            ));
        }
    }
    let id = generate_self_signed(names)?;
    write_identity(&id, cert, key)?;
    Ok(Some(id.fingerprint))
}

/// Writes `id`'s key (mode 0600) and then its certificate (mode 0644), each atomically,
/// replacing whatever was there.
///
/// Key first: a crash in between leaves a key that does not match the certificate (or a
/// key without a certificate), which loading reports, never a silently different identity.
///
/// # Errors
///
/// Any error from [`write_atomic`].
pub fn write_identity(id: &GeneratedIdentity, cert: &Path, key: &Path) -> Result<(), CertError> {
    write_atomic(key, id.key_pem.as_bytes(), 0o600)?;
    write_atomic(cert, id.cert_pem.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pem::{check_private_mode, load_certs, load_key};
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn default_names_are_deduplicated_in_order() {
        let names = default_names(&["lab.example".into(), "LOCALHOST".into(), "::1".into()]);
        let tail = &names[names.len() - 4..];
        assert_eq!(tail, ["localhost", "127.0.0.1", "::1", "lab.example"]);
        let unique: HashSet<_> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn generate_rejects_non_ascii_name() {
        let err = generate_self_signed(&["héllo".into()]);
        assert!(matches!(err, Err(CertError::Generate(_))));
    }

    #[test]
    fn ensure_identity_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("state/cert.pem");
        let key = tmp.path().join("state/key.pem");
        let names = default_names(&[]);

        let fp = ensure_identity(&cert, &key, &names)
            .unwrap()
            .expect("generated");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert) & 0o600, 0o600);
        check_private_mode(&key).unwrap();
        load_key(&key).unwrap();
        assert_eq!(Fingerprint::of_der(&load_certs(&cert).unwrap()[0]), fp);

        let before = fs::read(&cert).unwrap();
        assert!(ensure_identity(&cert, &key, &names).unwrap().is_none());
        assert_eq!(fs::read(&cert).unwrap(), before);
        assert_eq!(Fingerprint::of_der(&load_certs(&cert).unwrap()[0]), fp);
    }

    #[test]
    fn ensure_identity_refuses_half_an_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("cert.pem");
        let key = tmp.path().join("key.pem");
        ensure_identity(&cert, &key, &["localhost".into()]).unwrap();
        fs::remove_file(&key).unwrap();
        match ensure_identity(&cert, &key, &["localhost".into()]) {
            Err(CertError::Io { path, source }) => {
                assert_eq!(path, key);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Io NotFound, got {other:?}"),
        }
        assert!(!key.exists(), "nothing may be generated");
    }
}
