//! `xferd fingerprint`: prints the served certificate's `SHA256:` fingerprint, the
//! value users compare with what `xfer login` shows them on first contact.
//!
//! When there is no certificate it says where it looked and how to look elsewhere,
//! rather than suggesting `xferd init`: run in the wrong directory, that would make a
//! second server identity instead of finding the real one.

use anyhow::Context;
use xfer_certs::Fingerprint;

use crate::Config;
use crate::config::discover::Loaded;

/// The fingerprint of the configured certificate.
///
/// # Errors
/// When there is no certificate, naming the path looked at.
pub fn fingerprint(config: &Config) -> anyhow::Result<Fingerprint> {
    let path = config.cert_path();
    if !path.exists() {
        anyhow::bail!("no certificate at `{}`", path.display());
    }
    let chain = xfer_certs::pem::load_certs(&path)
        .with_context(|| format!("reading certificate `{}`", path.display()))?;
    Ok(Fingerprint::of_der(&chain[0]))
}

/// [`fingerprint`] for `xferd fingerprint`: a missing certificate is explained with the
/// config and data directory used and how to point at another.
///
/// # Errors
/// As [`fingerprint`], in one line saying what to do.
pub fn describe(loaded: &Loaded) -> anyhow::Result<Fingerprint> {
    let config = &loaded.config;
    if config.cert_path().exists() {
        return fingerprint(config);
    }
    let origin = loaded.data_dir_origin();
    let elsewhere = "if xferd runs with another config, name it: `xferd --config FILE fingerprint`";
    if config.data_dir.is_dir() {
        anyhow::bail!(
            "no certificate at `{}` (data directory from {origin}); xferd generates one on its first start here; {elsewhere}",
            config.cert_path().display()
        );
    }
    anyhow::bail!(
        "no data directory `{}` (from {origin}), so no certificate; {elsewhere}",
        config.data_dir.display()
    )
}
