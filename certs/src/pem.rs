//! Reading PEM certificates and keys, checking key-file permissions, and writing files atomically.
//!
//! Parsing goes through `rustls_pki_types::pem::PemObject` (rustls-pemfile is unmaintained,
//! RUSTSEC-2025-0134). Files are read whole with `std::fs` first so every I/O error names its
//! path. This module does not generate keys or decide which files to use.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertError;

/// Loads every certificate in a PEM file, in file order (end-entity first for a chain).
///
/// # Errors
///
/// [`CertError::Io`] if the file cannot be read, [`CertError::Pem`] if it cannot be decoded
/// or holds no `CERTIFICATE` block.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = fs::read(path).map_err(|e| CertError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.to_owned(),
            message: "no certificate found (expected a `BEGIN CERTIFICATE` block)".to_owned(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
///
/// # Errors
///
/// [`CertError::Io`] if the file cannot be read, [`CertError::Pem`] if it cannot be decoded
/// or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = fs::read(path).map_err(|e| CertError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::Pem {
            path: path.to_owned(),
            message: "no private key found (expected a `BEGIN PRIVATE KEY` block)".to_owned(),
        },
        other => pem_error(path, other),
    })
}

fn pem_error(path: &Path, err: pem::Error) -> CertError {
    CertError::Pem {
        path: path.to_owned(),
        message: format!("invalid PEM: {err}"),
    }
}

/// Checks that a private-key file grants no permission bits to group or others.
///
/// # Errors
///
/// [`CertError::InsecureMode`] if `mode & 0o077 != 0`; [`CertError::Io`] if the file cannot
/// be inspected.
pub fn check_private_mode(path: &Path) -> Result<(), CertError> {
    let mode = fs::metadata(path)
        .map_err(|e| CertError::io(path, e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CertError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Replaces `path` with `contents` so readers see either the old or the new file, never a mix.
///
/// Missing parent directories are created with mode 0700. The data goes to a temporary file in
/// the same directory, created with `mode` (so a key is never briefly world-readable; the
/// umask may only remove bits), fsynced, renamed over `path`, and the directory is fsynced so
/// the rename survives a crash.
///
/// # Errors
///
/// [`CertError::Io`] naming the file or directory that failed; the temporary file is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CertError::io(dir, e))?;

    let tmp = dir.join(temp_name(path));
    let written = write_synced(&tmp, contents, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| CertError::io(path, e)));
    if let Err(e) = written {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CertError::io(dir, e))
}

fn write_synced(tmp: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| CertError::io(tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CertError::io(tmp, e))
}

/// A hidden name unique within this process (pid + counter); `create_new` guards the rest.
fn temp_name(path: &Path) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{base}.tmp.{}.{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate_self_signed;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_atomic_creates_dirs_and_sets_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/key.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&tmp.path().join("a")) & 0o077, 0);
        check_private_mode(&path).unwrap();

        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn check_private_mode_rejects_group_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key.pem");
        fs::write(&path, b"k").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        match check_private_mode(&path) {
            Err(CertError::InsecureMode { mode, .. }) => assert_eq!(mode, 0o640),
            other => panic!("expected InsecureMode, got {other:?}"),
        }
        let msg = check_private_mode(&path).unwrap_err().to_string();
        assert!(
            msg.contains("mode 640") && msg.contains("chmod 600"),
            "{msg}"
        );
    }

    #[test]
    fn loads_generated_cert_and_key() {
        let id = generate_self_signed(&["localhost".to_owned()]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cert = tmp.path().join("cert.pem");
        let key = tmp.path().join("key.pem");
        fs::write(&cert, &id.cert_pem).unwrap();
        fs::write(&key, &id.key_pem).unwrap();
        let certs = load_certs(&cert).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(crate::Fingerprint::of_der(&certs[0]), id.fingerprint);
        assert!(matches!(load_key(&key).unwrap(), PrivateKeyDer::Pkcs8(_)));
    }

    #[test]
    fn load_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.pem");
        fs::write(&empty, b"just text\n").unwrap();
        assert!(matches!(load_certs(&empty), Err(CertError::Pem { .. })));
        assert!(matches!(load_key(&empty), Err(CertError::Pem { .. })));
        let missing = tmp.path().join("missing.pem");
        let err = load_certs(&missing).unwrap_err();
        assert!(matches!(&err, CertError::Io { path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.pem"));
    }
}
