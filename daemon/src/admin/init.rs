//! `xferd init`: writes the documented default config (never over an existing one),
//! creates the data directory and TLS identity, and prints the fingerprint.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context;

use crate::Config;

/// What `init` did, for the caller to print.
pub struct InitReport {
    /// Whether a config file was written (false: one existed and was kept).
    pub wrote_config: bool,
    /// The certificate fingerprint.
    pub fingerprint: xfer_certs::Fingerprint,
    /// Whether the certificate was generated now.
    pub generated_cert: bool,
}

/// Runs `init` with `config_path` as the config file to create.
///
/// # Errors
/// Unwritable paths, or an unreadable existing config.
pub fn init(config_path: &Path, overrides: impl FnOnce(&mut Config)) -> anyhow::Result<InitReport> {
    let wrote_config = !config_path.exists();
    if wrote_config {
        xfer_certs::pem::write_atomic(config_path, crate::config::EXAMPLE.as_bytes(), 0o644)
            .with_context(|| format!("writing config `{}`", config_path.display()))?;
    }
    let mut config = Config::load(config_path)?;
    overrides(&mut config);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data directory `{}`", config.data_dir.display()))?;
    let mut generated_cert = false;
    if config.tls_is_generated() {
        let names = xfer_certs::generate::default_names(&config.tls.names);
        generated_cert =
            xfer_certs::generate::ensure_identity(&config.cert_path(), &config.key_path(), &names)?
                .is_some();
    }
    let fingerprint = super::fingerprint::fingerprint(&config)?;
    Ok(InitReport {
        wrote_config,
        fingerprint,
        generated_cert,
    })
}
