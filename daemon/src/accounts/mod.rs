//! Accounts: who may log in and how often they may try.
//!
//! The password file (`name:PHC` lines, argon2id, mode 0600, rewritten atomically under a lock
//! file) lives in `password_file`; session tokens (random, stored hashed, expiring, tied to the
//! password hash they were issued under) in `tokens`; per-source and per-name login throttling
//! in `throttle`. [`Verifier`] runs argon2 off the async threads behind a semaphore and makes an
//! unknown user cost exactly as much as a wrong password.
//!
//! This module does not speak the protocol, log audit events or decide what a session may do:
//! the session code combines these pieces.

mod password_file;
mod throttle;
mod tokens;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

pub use password_file::{
    Entry, LivePasswordFile, PasswordFile, PasswordFileError, UserName, hash_password,
};
pub use throttle::{Throttle, ThrottleConfig, Verdict};
pub use tokens::{NewSession, SessionInfo, SessionStore, SharedSessions};

/// Verifies passwords: argon2 work on the blocking pool behind a semaphore; unknown users cost
/// the same as wrong passwords.
pub struct Verifier {
    permits: Arc<Semaphore>,
    /// PHC string of a random password, hashed with the default parameters: what an unknown user
    /// is "verified" against so that the attempt costs a full argon2 run.
    dummy: Arc<str>,
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("available_permits", &self.permits.available_permits())
            .field("verifications", &self.verifications())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Creates a verifier running at most `permits` (at least 1) argon2 verifications at a time;
    /// computes the dummy hash on the blocking pool.
    pub async fn new(permits: usize) -> Self {
        let dummy = tokio::task::spawn_blocking(dummy_phc)
            .await
            .expect("dummy hash task does not panic");
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            dummy: dummy.into(),
            verifications: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns true if `phc` (Some) verifies `password`; false otherwise. With `phc == None`
    /// (unknown user) it verifies against the dummy hash and returns false: same time, same work.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes gives up the attempt, but a verification already
    /// started keeps its semaphore permit until it ends, so cancelled logins cannot pile up
    /// argon2 work beyond the permit count.
    pub async fn verify(&self, phc: Option<String>, password: String) -> bool {
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return false;
        };
        let dummy = Arc::clone(&self.dummy);
        let verifications = Arc::clone(&self.verifications);
        let task = tokio::task::spawn_blocking(move || {
            // The permit moves into the blocking task: it is released when the work is done,
            // not when the (possibly cancelled) caller goes away.
            let _permit = permit;
            let ok = match &phc {
                Some(phc) => verify_phc(phc, &password, &dummy),
                None => {
                    verify_phc(&dummy, &password, &dummy);
                    false
                }
            };
            verifications.fetch_add(1, Ordering::Relaxed);
            ok
        });
        task.await.unwrap_or(false)
    }

    /// Count of argon2 verifications actually run, for tests and metrics.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

/// One argon2 verification. A PHC string that does not parse (the password file validates them,
/// so this should not happen) is replaced by the dummy so the attempt still costs the same.
fn verify_phc(phc: &str, password: &str, dummy: &str) -> bool {
    let argon = Argon2::default();
    match PasswordHash::new(phc) {
        Ok(hash) => argon.verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => {
            if let Ok(hash) = PasswordHash::new(dummy) {
                let _ = argon.verify_password(password.as_bytes(), &hash);
            }
            false
        }
    }
}

/// Hashes a random password with the default parameters. Its secrecy does not matter (a `None`
/// PHC never verifies), so if the system RNG fails a fixed password and salt do as well.
fn dummy_phc() -> String {
    let mut secret = [0u8; 32];
    if getrandom::fill(&mut secret).is_ok()
        && let Ok(phc) = hash_password(&hex(&secret))
    {
        return phc;
    }
    Argon2::default()
        .hash_password_with_salt(b"xferd dummy password", b"xferd-dummy-salt")
        .expect("default argon2 parameters hash a fixed password and a 16-byte salt")
        .to_string()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes exactly `N` bytes of lowercase or uppercase hex.
pub(crate) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Replaces `path` with `contents` atomically (temp file created 0600, fsync, rename, fsync of
/// the directory), as `xfer_certs::pem::write_atomic` does, with the I/O error kept intact.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    xfer_certs::pem::write_atomic(path, contents, 0o600).map_err(|e| match e {
        xfer_certs::CertError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifier_accepts_right_password_only_and_counts_work() {
        let verifier = Verifier::new(2).await;
        let phc = tokio::task::spawn_blocking(|| hash_password("correct horse"))
            .await
            .expect("join")
            .expect("hash");

        assert!(
            verifier
                .verify(Some(phc.clone()), "correct horse".into())
                .await
        );
        assert!(!verifier.verify(Some(phc), "wrong horse".into()).await);
        assert!(!verifier.verify(None, "correct horse".into()).await);
        assert_eq!(verifier.verifications(), 3);
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001abff"), Some(bytes));
        assert_eq!(unhex::<4>("0001abf"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }

    #[test]
    fn write_atomic_replaces_file_with_mode_0600() {
        use std::fs;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
