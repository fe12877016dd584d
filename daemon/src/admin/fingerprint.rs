//! `xferd fingerprint`: prints the served certificate's `SHA256:` fingerprint, the
//! value users compare with what `xfer login` shows them on first contact.

use anyhow::Context;
use xfer_certs::Fingerprint;

use crate::Config;

/// The fingerprint of the configured certificate.
///
/// # Errors
/// When there is no certificate yet, with a hint to run `xferd init`.
pub fn fingerprint(config: &Config) -> anyhow::Result<Fingerprint> {
    let path = config.cert_path();
    if !path.exists() {
        anyhow::bail!(
            "no certificate at `{}` yet; run `xferd init` (or start xferd once) to generate one",
            path.display()
        );
    }
    let chain = xfer_certs::pem::load_certs(&path)
        .with_context(|| format!("reading certificate `{}`", path.display()))?;
    Ok(Fingerprint::of_der(&chain[0]))
}
