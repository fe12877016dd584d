//! `xferd check`: validates the configuration the daemon would use, like `sshd -t`.
//!
//! Beyond the key checks of `Config::validate`, it opens what the daemon would open at
//! start: the certificate and key (which must parse and match, the key 0600), the
//! password file (mode and every line) and the data directory (a writable directory,
//! or creatable). It changes nothing.

use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{AccessFlags, access};

use crate::Config;
use crate::accounts::PasswordFile;

/// Checks `config` as the daemon would use it.
///
/// # Errors
/// The first problem, in one line naming the key or file.
pub fn check(config: &Config) -> anyhow::Result<()> {
    config.validate()?;
    check_data_dir(&config.data_dir)?;
    check_tls(config)?;
    let passwd = config.password_file();
    if passwd.exists() {
        PasswordFile::load(&passwd).with_context(|| "password_file".to_owned())?;
    }
    Ok(())
}

/// `data_dir` must be a writable directory, or be creatable: the nearest existing
/// ancestor a writable directory.
fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => bail!("data_dir `{}`: no existing ancestor", dir.display()),
        }
    }
    if !existing.is_dir() {
        bail!(
            "data_dir `{}`: `{}` is not a directory",
            dir.display(),
            existing.display()
        );
    }
    if access(existing, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        let what = if existing == dir {
            "is not writable by this user"
        } else {
            "does not exist and its parent is not writable by this user"
        };
        bail!("data_dir `{}` {what}", dir.display());
    }
    Ok(())
}

/// Configured files must exist and parse; generated ones may be missing (both).
fn check_tls(config: &Config) -> anyhow::Result<()> {
    let (cert, key) = (config.cert_path(), config.key_path());
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) if config.tls_is_generated() => return Ok(()),
        (cert_exists, _) => {
            let (missing, which) = if cert_exists {
                (&key, "key")
            } else {
                (&cert, "cert")
            };
            bail!("[tls] {which} `{}` does not exist", missing.display());
        }
    }
    xfer_certs::config::load_server_config(&cert, &key)
        .with_context(|| format!("[tls] cert `{}` / key `{}`", cert.display(), key.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.join("data"),
            ..Config::default()
        }
    }

    #[test]
    fn a_fresh_data_dir_that_can_be_created_passes() {
        let tmp = tempfile::TempDir::new().unwrap();
        check(&config_in(tmp.path())).unwrap();
    }

    #[test]
    fn a_configured_certificate_must_exist() {
        let tmp = tempfile::TempDir::new().unwrap();
        let mut c = config_in(tmp.path());
        c.tls.cert = Some("/nonexistent/cert.pem".into());
        c.tls.key = Some("/nonexistent/key.pem".into());
        let err = format!("{:#}", check(&c).unwrap_err());
        assert!(
            err.contains("[tls] cert") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_garbled_certificate_is_named() {
        let tmp = tempfile::TempDir::new().unwrap();
        let c = config_in(tmp.path());
        std::fs::create_dir_all(c.cert_path().parent().unwrap()).unwrap();
        std::fs::write(c.cert_path(), "not a certificate").unwrap();
        std::fs::write(c.key_path(), "not a key").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(c.key_path(), mode).unwrap();
        let err = format!("{:#}", check(&c).unwrap_err());
        assert!(err.contains("cert.pem"), "{err}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_named() {
        let tmp = tempfile::TempDir::new().unwrap();
        let file = tmp.path().join("data");
        std::fs::write(&file, "").unwrap();
        let err = check(&config_in(tmp.path())).unwrap_err().to_string();
        assert!(
            err.contains("data_dir") && err.contains("not a directory"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_password_file_is_named() {
        let tmp = tempfile::TempDir::new().unwrap();
        let c = config_in(tmp.path());
        std::fs::create_dir_all(&c.data_dir).unwrap();
        std::fs::write(c.password_file(), "bob-without-a-hash\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(c.password_file(), mode).unwrap();
        let err = format!("{:#}", check(&c).unwrap_err());
        assert!(
            err.contains("password_file") && err.contains("passwd:1"),
            "{err}"
        );
    }
}
