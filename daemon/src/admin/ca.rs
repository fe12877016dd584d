//! `xferd ca init|issue|show` and `xferd init --ca`: a local certificate authority in
//! `<data_dir>/ca/` that issues the server certificate, so devices that install the CA
//! once trust xferd by name, without warnings and without the internet.
//!
//! The issued certificate replaces the generated one at `[tls]`'s default paths, served as
//! the chain `[leaf, CA]`; a running daemon picks it up on reload. Certificates set in
//! `[tls]` (the admin's own) are never touched. The CA key is read only by these commands.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use xfer_certs::Fingerprint;
use xfer_certs::ca::{Issued, LocalCa};

use crate::Config;
use crate::config::discover::Loaded;

/// What `ca init`, `ca issue` and `init --ca` did, for the caller to print.
pub struct CaReport {
    /// The CA certificate, to install on devices.
    pub ca_cert: PathBuf,
    /// The CA key (mode 0600).
    pub ca_key: PathBuf,
    /// The CA certificate's fingerprint.
    pub ca_fingerprint: Fingerprint,
    /// The last day the CA is valid.
    pub ca_not_after: String,
    /// Whether the CA was created now (false: an existing one was used).
    pub created_ca: bool,
    /// Where the issued chain was written.
    pub cert: PathBuf,
    /// The issued server certificate.
    pub issued: Issued,
}

/// What `ca show` reports.
pub struct CaStatus {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// Its fingerprint.
    pub ca_fingerprint: Fingerprint,
    /// The last day it is valid.
    pub ca_not_after: String,
    /// The served certificate's path.
    pub cert: PathBuf,
    /// The served certificate's names and last valid day, if this CA issued it.
    pub served: Option<(Vec<String>, String)>,
}

/// `xferd ca init`: creates the CA and issues the server certificate from it. An existing
/// CA is refused unless `force` (devices that trust it would have to install the new one).
///
/// # Errors
/// An existing CA without `force`; a `[tls]` certificate of the admin's own; a missing
/// data directory; unwritable files.
pub fn init(loaded: &Loaded, extra: &[String], force: bool) -> anyhow::Result<CaReport> {
    let config = &loaded.config;
    require_ca_setup(loaded)?;
    let (cert, key) = (config.ca_cert_path(), config.ca_key_path());
    if !force && (cert.exists() || key.exists()) {
        let which = match LocalCa::load(&cert, &key) {
            Ok(ca) => format!("`{}` ({})", cert.display(), ca.fingerprint()),
            Err(_) => format!("`{}` or `{}`", cert.display(), key.display()),
        };
        bail!(
            "a CA already exists: {which}; to issue a new server certificate from it run `xferd ca issue`; to replace it (every device that trusts it must then install the new one) run `xferd ca init --force`"
        );
    }
    create_and_issue(config, extra)
}

/// `xferd ca issue`: a new server certificate from the existing CA (new names, renewal).
/// The CA is kept.
///
/// # Errors
/// No CA; an unreadable or mismatched CA key; as [`init`] for the setup.
pub fn issue(loaded: &Loaded, extra: &[String]) -> anyhow::Result<CaReport> {
    let config = &loaded.config;
    require_ca_setup(loaded)?;
    let ca = load(config)?;
    issue_from(config, ca, false, extra)
}

/// `xferd init --ca`: uses the CA if there is one (it is kept), creates it otherwise, and
/// issues the server certificate. The data directory must exist.
///
/// # Errors
/// As [`issue`] and [`init`].
pub fn ensure(config: &Config, extra: &[String]) -> anyhow::Result<CaReport> {
    require_generated_tls(config)?;
    let (cert, key) = (config.ca_cert_path(), config.ca_key_path());
    if cert.exists() || key.exists() {
        let ca = load(config)?;
        issue_from(config, ca, false, extra)
    } else {
        create_and_issue(config, extra)
    }
}

/// `xferd ca show`: the CA and whether the served certificate comes from it.
///
/// # Errors
/// No CA, or it cannot be read.
pub fn show(config: &Config) -> anyhow::Result<CaStatus> {
    let ca = load(config)?;
    let cert = config.cert_path();
    let served = match xfer_certs::pem::load_certs(&cert) {
        Ok(chain) if ca.is_in_chain(&chain) => xfer_certs::ca::inspect(&chain[0])
            .ok()
            .map(|i| (i.names, i.not_after.to_string())),
        _ => None,
    };
    Ok(CaStatus {
        ca_cert: config.ca_cert_path(),
        ca_fingerprint: ca.fingerprint(),
        ca_not_after: ca.not_after().to_string(),
        cert,
        served,
    })
}

/// Checks a `--name` value: a DNS name (letters, digits, `-`, `.`, an optional leading
/// `*.`) or an IP address, as certificates can carry it.
///
/// # Errors
/// A message naming the value and what is allowed.
pub fn parse_name(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let host = s.strip_prefix("*.").unwrap_or(s);
    let ok = !host.is_empty()
        && s.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{s}` is not a DNS name (letters, digits, '-' and '.', e.g. nas.lan) or an IP address"
        ))
    }
}

fn create_and_issue(config: &Config, extra: &[String]) -> anyhow::Result<CaReport> {
    let label = xfer_certs::generate::default_names(&[])
        .into_iter()
        .next()
        .unwrap_or_else(|| "localhost".to_owned());
    let ca = LocalCa::generate(&label)?;
    let (cert, key) = (config.ca_cert_path(), config.ca_key_path());
    ca.save(&cert, &key)
        .with_context(|| format!("writing the CA to `{}`", cert.display()))?;
    issue_from(config, ca, true, extra)
}

fn issue_from(
    config: &Config,
    ca: LocalCa,
    created_ca: bool,
    extra: &[String],
) -> anyhow::Result<CaReport> {
    let issued = ca.issue(&leaf_names(config, extra))?;
    let (cert, key) = (config.cert_path(), config.key_path());
    xfer_certs::generate::write_identity(&issued.identity, &cert, &key)
        .with_context(|| format!("writing the server certificate `{}`", cert.display()))?;
    Ok(CaReport {
        ca_cert: config.ca_cert_path(),
        ca_key: config.ca_key_path(),
        ca_fingerprint: ca.fingerprint(),
        ca_not_after: ca.not_after().to_string(),
        created_ca,
        cert,
        issued,
    })
}

fn load(config: &Config) -> anyhow::Result<LocalCa> {
    let (cert, key) = (config.ca_cert_path(), config.ca_key_path());
    if !cert.exists() && !key.exists() {
        bail!(
            "no CA at `{}`; create one with `xferd ca init`",
            cert.display()
        );
    }
    Ok(LocalCa::load(&cert, &key)?)
}

/// The server certificate's names: this host's name, localhost, 127.0.0.1, ::1, the
/// `[tls] names`, the listen address unless it is a wildcard, the names of the certificate
/// being replaced (so a renewal keeps them), then `extra`.
fn leaf_names(config: &Config, extra: &[String]) -> Vec<String> {
    let mut names = config.tls.names.clone();
    if let Ok(addr) = config.listen_addr()
        && !addr.ip().is_unspecified()
    {
        names.push(addr.ip().to_string());
    }
    if let Ok(chain) = xfer_certs::pem::load_certs(&config.cert_path())
        && let Ok(info) = xfer_certs::ca::inspect(&chain[0])
    {
        names.extend(info.names);
    }
    names.extend(extra.iter().cloned());
    xfer_certs::generate::default_names(&names)
}

/// The CA issues only the generated default identity, in an existing data directory.
fn require_ca_setup(loaded: &Loaded) -> anyhow::Result<()> {
    let config = &loaded.config;
    require_generated_tls(config)?;
    if !config.data_dir.is_dir() {
        bail!(
            "data directory `{}` (from {}) does not exist; point at the server's config with `xferd --config FILE ca …`, or set up a new server with `xferd init --ca`",
            config.data_dir.display(),
            loaded.data_dir_origin()
        );
    }
    Ok(())
}

fn require_generated_tls(config: &Config) -> anyhow::Result<()> {
    if !config.tls_is_generated() {
        bail!(
            "[tls] cert and key are set in the config, so xferd serves that certificate; `xferd ca` issues only the built-in `tls/cert.pem`; remove both keys from [tls] to use it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_names_or_addresses() {
        assert_eq!(parse_name("NAS.lan").unwrap(), "nas.lan");
        assert_eq!(parse_name("*.lab.example").unwrap(), "*.lab.example");
        assert_eq!(parse_name("192.168.1.20").unwrap(), "192.168.1.20");
        assert_eq!(parse_name("fe80::1").unwrap(), "fe80::1");
        for bad in [
            "",
            "nas lan",
            "-nas.lan",
            "nas..lan",
            "héllo.lan",
            "a/b",
            "*.",
        ] {
            let err = parse_name(bad).unwrap_err();
            assert!(err.contains("not a DNS name"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_renewal_keeps_the_names_of_the_certificate_it_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: tmp.path().to_owned(),
            listen: "192.168.7.7:7443".into(),
            ..Config::default()
        };
        let first = ensure(&config, &["nas.lan".into()]).unwrap();
        assert!(first.created_ca);
        for name in ["localhost", "127.0.0.1", "::1", "192.168.7.7", "nas.lan"] {
            assert!(first.issued.names.iter().any(|n| n == name), "{name}");
        }
        let second = ensure(&config, &["10.0.0.2".into()]).unwrap();
        assert!(!second.created_ca);
        assert_eq!(second.ca_fingerprint, first.ca_fingerprint);
        assert!(second.issued.names.iter().any(|n| n == "nas.lan"));
        assert!(second.issued.names.iter().any(|n| n == "10.0.0.2"));
        assert_ne!(
            second.issued.identity.fingerprint,
            first.issued.identity.fingerprint
        );
        let status = show(&config).unwrap();
        assert_eq!(status.served.unwrap().0, second.issued.names);
    }
}
