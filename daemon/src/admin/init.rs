//! `xferd init`: writes the documented default config with the overrides it was given
//! (never over an existing one), creates the data directory and TLS identity (with
//! `--ca`, a local CA and a certificate issued by it: `ca.rs`), and reports the
//! fingerprint.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::Config;
use crate::config::discover::Overrides;

/// What `init` did, for the caller to print.
pub struct InitReport {
    /// Whether a config file was written (false: one existed and was kept).
    pub wrote_config: bool,
    /// The data directory in use (absolute).
    pub data_dir: PathBuf,
    /// Whether the data directory was created now.
    pub created_data_dir: bool,
    /// The certificate fingerprint.
    pub fingerprint: xfer_certs::Fingerprint,
    /// The certificate's path, if it was generated now.
    pub generated_cert: Option<PathBuf>,
    /// With `--ca`: the CA used (or created) and the certificate it issued.
    pub ca: Option<super::ca::CaReport>,
}

/// Runs `init` with `config_path` (absolute) as the config file to create.
///
/// A new file gets the example text with `overrides` written in; an existing file is
/// kept as it is and the overrides only apply to this run. With `ca` (`--ca` and its extra
/// names), the server certificate is issued by the local CA, which is created if missing.
///
/// # Errors
/// Unwritable paths, an unreadable existing config, a data directory that is not UTF-8;
/// with `ca`, a `[tls]` certificate of the admin's own or an unusable CA.
pub fn init(
    config_path: &Path,
    overrides: &Overrides,
    ca: Option<&[String]>,
) -> anyhow::Result<InitReport> {
    let wrote_config = !config_path.exists();
    if wrote_config {
        let text = render(overrides)?;
        xfer_certs::pem::write_atomic(config_path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing config `{}`", config_path.display()))?;
    }
    let mut config = Config::load(config_path)?;
    overrides.apply(&mut config);
    config.validate()?;
    let created_data_dir = !config.data_dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data directory `{}`", config.data_dir.display()))?;
    let mut generated_cert = None;
    let mut ca_report = None;
    if let Some(extra) = ca {
        ca_report = Some(super::ca::ensure(&config, extra)?);
    } else if config.tls_is_generated() {
        let names = xfer_certs::generate::default_names(&config.tls.names);
        let cert = config.cert_path();
        if xfer_certs::generate::ensure_identity(&cert, &config.key_path(), &names)?.is_some() {
            generated_cert = Some(cert);
        }
    }
    let fingerprint = super::fingerprint::fingerprint(&config)?;
    Ok(InitReport {
        wrote_config,
        data_dir: config.data_dir,
        created_data_dir,
        fingerprint,
        generated_cert,
        ca: ca_report,
    })
}

/// The example config with `listen` and `data_dir` set from `overrides` (the data
/// directory absolute, so it means the same from any working directory).
fn render(overrides: &Overrides) -> anyhow::Result<String> {
    let mut listen = None;
    if let Some(addr) = &overrides.listen {
        listen = Some(format!("listen = {}", toml_string(addr)));
    }
    let mut data_dir = None;
    if let Some(dir) = &overrides.data_dir {
        let dir = crate::config::discover::absolute(dir);
        let Some(dir) = dir.to_str() else {
            bail!("data directory `{}` is not UTF-8", dir.display());
        };
        data_dir = Some(format!("data_dir = {}", toml_string(dir)));
    }
    let mut out = String::with_capacity(crate::config::EXAMPLE.len());
    for line in crate::config::EXAMPLE.lines() {
        let replaced = if line.starts_with("listen = ") {
            listen.take()
        } else if line.starts_with("# data_dir = ") {
            data_dir.take()
        } else {
            None
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    // The example must keep both lines for this to work; the tests check it.
    if listen.is_some() || data_dir.is_some() {
        bail!("internal: the example config lacks a `listen` or `# data_dir` line");
    }
    Ok(out)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_carries_the_overrides() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:9000".into()),
            data_dir: Some("/srv/x \"y\"".into()),
        };
        let c = Config::parse(&render(&overrides).unwrap()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.data_dir, Path::new("/srv/x \"y\""));
        let plain = render(&Overrides::default()).unwrap();
        assert_eq!(plain, crate::config::EXAMPLE);
    }
}
