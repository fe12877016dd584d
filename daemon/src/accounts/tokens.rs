//! Login sessions: random 256-bit tokens, stored hashed, expiring, revocable, persisted.
//!
//! Only blake3(token) is kept, in memory and in the JSON file, so a leaked session file does not
//! leak usable tokens. Each session remembers a 16-byte tag of the password hash it was issued
//! under; `xferd user passwd` / `user del` change or remove that hash, which invalidates the
//! user's sessions without any signal between processes. Writes are synchronous and small:
//! async callers wrap them in `spawn_blocking`. This module does not know about users' rights.
//!
//! Several daemons share their sessions through [`SharedSessions`] (a NATS key-value
//! bucket, `cluster/sessions.rs`), which is then the authority: a new session is stored
//! there before it is handed out, a token is looked up there on every validation, and a
//! revocation removes it there. The local file stays a cache of the sessions this
//! daemon issued or validated, which keep working on it while the shared store cannot
//! be reached.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{hex, unhex, write_atomic};

const TOKEN_PREFIX: &str = "xft1_";
const TOKEN_BYTES: usize = 32;
/// Older sessions of a user are dropped beyond this many, so one account cannot grow the file
/// without bound.
const MAX_SESSIONS_PER_USER: usize = 64;
const FILE_VERSION: u32 = 1;

/// A freshly created session. The token is shown to the client once and never stored.
pub struct NewSession {
    /// `xft1_` followed by 64 lowercase hex digits.
    pub token: String,
    pub expires_unix: u64,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"<redacted>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

/// What a valid token stands for.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub user: String,
    pub expires_unix: u64,
}

type TokenHash = [u8; 32];
type PwTag = [u8; 16];

#[derive(Clone, Debug)]
struct Record {
    user: String,
    created_unix: u64,
    expires_unix: u64,
    pw_tag: PwTag,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFile {
    version: u32,
    sessions: Vec<StoredSession>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSession {
    token_blake3: String,
    user: String,
    created_unix: u64,
    expires_unix: u64,
    pw_tag: String,
}

/// Where several daemons keep their sessions in common, by `hex(blake3(token))`; the
/// value is opaque to the store. Blocking, like [`SessionStore`]'s methods.
pub trait SharedSessions: Send + Sync + fmt::Debug {
    /// Stores a session record.
    ///
    /// # Errors
    /// When the shared store cannot be reached or refuses; the message is one line for
    /// the user.
    fn put(&self, key: &str, record: &[u8]) -> io::Result<()>;
    /// The record of a session, `None` when there is none (expired, revoked, unknown).
    ///
    /// # Errors
    /// When the shared store cannot be reached.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Removes a session.
    ///
    /// # Errors
    /// When the shared store cannot be reached.
    fn delete(&self, key: &str) -> io::Result<()>;
}

/// The daemon's sessions, persisted to one JSON file (mode 0600).
#[derive(Debug)]
pub struct SessionStore {
    path: PathBuf,
    /// Lifetime of new sessions, in seconds; changed by a config reload.
    ttl_secs: AtomicU64,
    sessions: Mutex<HashMap<TokenHash, Record>>,
    /// Serialises persisting so that a later snapshot never lands before an earlier one, while
    /// `validate` only ever waits for the short `sessions` lock.
    write_lock: Mutex<()>,
    /// Set when the file is behind memory: `validate` dropped dead sessions it still
    /// holds, or a new session could not be written (full disk).
    forgotten: AtomicBool,
    /// The sessions of every daemon of a cluster, when there is one.
    shared: std::sync::OnceLock<std::sync::Arc<dyn SharedSessions>>,
}

impl SessionStore {
    /// Sets the lifetime of sessions created from now on (existing ones keep theirs).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    /// Loads `path` (missing = no sessions), dropping expired records. New sessions live `ttl`.
    ///
    /// # Errors
    /// An `InvalidData` error naming the path if the file is corrupt; I/O errors otherwise.
    pub fn open(path: &Path, ttl: Duration) -> io::Result<Self> {
        let now = unix_now();
        let sessions = match std::fs::read(path) {
            Ok(bytes) => parse(&bytes)
                .map_err(|message| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("session file `{}` is corrupt: {message}", path.display()),
                    )
                })?
                .into_iter()
                .filter(|(_, r)| r.expires_unix > now)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read session file `{}`: {e}", path.display()),
                ));
            }
        };
        Ok(Self {
            path: path.to_owned(),
            ttl_secs: AtomicU64::new(ttl.as_secs()),
            sessions: Mutex::new(sessions),
            write_lock: Mutex::new(()),
            forgotten: AtomicBool::new(false),
            shared: std::sync::OnceLock::new(),
        })
    }

    /// Makes `shared` the authority for sessions (see the module doc). Set once, before
    /// serving.
    pub fn share(&self, shared: std::sync::Arc<dyn SharedSessions>) {
        let _ = self.shared.set(shared);
    }

    /// Creates a session for `user`, whose current password hash is `phc`, and persists it
    /// before returning. Keeps at most 64 sessions per user, dropping the oldest.
    ///
    /// # Errors
    /// If the system random number generator fails or the file cannot be written; the session
    /// is then not created.
    pub fn create(&self, user: &str, phc: &str, now_unix: u64) -> io::Result<NewSession> {
        let mut secret = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut secret)
            .map_err(|e| io::Error::other(format!("system random number generator failed: {e}")))?;
        let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
        let key = token_hash(&token);
        let expires_unix = now_unix.saturating_add(self.ttl_secs.load(Ordering::Relaxed));
        let record = Record {
            user: user.to_owned(),
            created_unix: now_unix,
            expires_unix,
            pw_tag: pw_tag(phc),
        };

        if let Some(shared) = self.shared.get() {
            // Stored in common first: a token handed out works on every daemon.
            shared.put(&hex(&key), &stored_record(&key, &record)?)?;
        }
        let evicted = {
            let mut sessions = self.lock();
            sessions.insert(key, record);
            evict_oldest_of(&mut sessions, user, key)
        };
        if let Err(e) = self.persist() {
            // A full or read-only data disk must not lock everyone out: the session
            // lives in memory (until a restart) and the file catches up at the next
            // write or purge that succeeds.
            if out_of_space(&e) {
                tracing::warn!(user, error = %e, "session kept in memory only: its file cannot be written");
                self.forgotten.store(true, Ordering::Relaxed);
            } else {
                let mut sessions = self.lock();
                sessions.remove(&key);
                sessions.extend(evicted);
                return Err(e);
            }
        }
        Ok(NewSession {
            token,
            expires_unix,
        })
    }

    /// Validates a presented token: it must exist, not be expired, and have been issued under
    /// the user's current password hash (`current_phc(user)`; `None` = the user no longer
    /// exists). Returns `None` for any failure and forgets sessions found dead (they leave the
    /// file at the next write or purge). The secret is only ever compared through a
    /// hash-map lookup of its blake3 hash, so timing reveals nothing about it.
    pub fn validate(
        &self,
        token: &str,
        current_phc: impl Fn(&str) -> Option<String>,
        now_unix: u64,
    ) -> Option<SessionInfo> {
        if !is_well_formed(token) {
            return None;
        }
        let key = token_hash(token);
        let record = match self.shared.get().map(|s| s.get(&hex(&key))) {
            // The shared store decides: a session made elsewhere is learnt, one revoked
            // or expired elsewhere is forgotten here too.
            Some(Ok(Some(bytes))) => {
                let Some(record) = parse_record(&key, &bytes) else {
                    tracing::warn!("ignoring a damaged shared session record");
                    return None;
                };
                self.lock().insert(key, record.clone());
                record
            }
            Some(Ok(None)) => {
                if self.lock().remove(&key).is_some() {
                    self.forgotten.store(true, Ordering::Relaxed);
                }
                return None;
            }
            // Unreachable: sessions this daemon knows keep working.
            Some(Err(e)) => {
                tracing::warn!(error = %e, "shared session store unreachable; validating from the local cache");
                self.lock().get(&key).cloned()?
            }
            None => self.lock().get(&key).cloned()?,
        };
        // `current_phc` may read the password file: call it without holding the lock.
        let alive = record.expires_unix > now_unix
            && current_phc(&record.user).is_some_and(|phc| pw_tag(&phc) == record.pw_tag);
        if !alive {
            if self.lock().remove(&key).is_some() {
                self.forgotten.store(true, Ordering::Relaxed);
            }
            return None;
        }
        Some(SessionInfo {
            user: record.user,
            expires_unix: record.expires_unix,
        })
    }

    /// Revokes `token` and persists. Returns whether it existed.
    ///
    /// # Errors
    /// If the file cannot be written (the session is revoked in memory anyway).
    pub fn revoke(&self, token: &str) -> io::Result<bool> {
        if !is_well_formed(token) {
            return Ok(false);
        }
        let key = token_hash(token);
        if let Some(shared) = self.shared.get() {
            // Revoked in common first: a logout that could not reach the shared store
            // fails, rather than leave the token valid on other daemons.
            shared.delete(&hex(&key))?;
        }
        let existed = self.lock().remove(&key).is_some();
        if existed && let Err(e) = self.persist() {
            // Revoked in memory at once; on a full or read-only disk the file catches up
            // at the next write or purge that succeeds (as for a new session).
            if !out_of_space(&e) {
                return Err(e);
            }
            tracing::warn!(error = %e, "session revoked in memory only: its file cannot be written");
            self.forgotten.store(true, Ordering::Relaxed);
        }
        Ok(existed)
    }

    /// Drops expired sessions and persists if anything changed. Returns how many were dropped.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn purge_expired(&self, now_unix: u64) -> io::Result<usize> {
        let removed = {
            let mut sessions = self.lock();
            let before = sessions.len();
            sessions.retain(|_, r| r.expires_unix > now_unix);
            before - sessions.len()
        };
        let forgotten = self.forgotten.swap(false, Ordering::Relaxed);
        if (removed > 0 || forgotten)
            && let Err(e) = self.persist()
        {
            self.forgotten.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(removed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Record>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the current sessions atomically (temp file 0600, fsync, rename, directory fsync).
    fn persist(&self) -> io::Result<()> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Snapshot after taking the write lock, so it includes every change made before.
        let bytes = {
            let sessions = self.lock();
            let mut stored: Vec<StoredSession> = sessions
                .iter()
                .map(|(key, r)| StoredSession {
                    token_blake3: hex(key),
                    user: r.user.clone(),
                    created_unix: r.created_unix,
                    expires_unix: r.expires_unix,
                    pw_tag: hex(&r.pw_tag),
                })
                .collect();
            stored.sort_by(|a, b| {
                (a.created_unix, &a.token_blake3).cmp(&(b.created_unix, &b.token_blake3))
            });
            serde_json::to_vec_pretty(&StoredFile {
                version: FILE_VERSION,
                sessions: stored,
            })
            .map_err(io::Error::other)?
        };
        write_atomic(&self.path, &bytes).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write session file `{}`: {e}", self.path.display()),
            )
        })
    }
}

/// Whether `e` says the disk cannot take more now (full, over quota, read-only).
fn out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::QuotaExceeded
    )
}

/// One session as the shared store keeps it: the file's record format.
fn stored_record(key: &TokenHash, r: &Record) -> io::Result<Vec<u8>> {
    serde_json::to_vec(&StoredSession {
        token_blake3: hex(key),
        user: r.user.clone(),
        created_unix: r.created_unix,
        expires_unix: r.expires_unix,
        pw_tag: hex(&r.pw_tag),
    })
    .map_err(io::Error::other)
}

/// A record from the shared store, if it is whole and is the one for `key`.
fn parse_record(key: &TokenHash, bytes: &[u8]) -> Option<Record> {
    let s: StoredSession = serde_json::from_slice(bytes).ok()?;
    if unhex::<32>(&s.token_blake3)? != *key {
        return None;
    }
    Some(Record {
        user: s.user,
        created_unix: s.created_unix,
        expires_unix: s.expires_unix,
        pw_tag: unhex::<16>(&s.pw_tag)?,
    })
}

fn parse(bytes: &[u8]) -> Result<HashMap<TokenHash, Record>, String> {
    let file: StoredFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FILE_VERSION {
        return Err(format!("unsupported version {}", file.version));
    }
    file.sessions
        .into_iter()
        .map(|s| {
            let key = unhex::<32>(&s.token_blake3).ok_or("bad token_blake3")?;
            let pw_tag = unhex::<16>(&s.pw_tag).ok_or("bad pw_tag")?;
            let record = Record {
                user: s.user,
                created_unix: s.created_unix,
                expires_unix: s.expires_unix,
                pw_tag,
            };
            Ok((key, record))
        })
        .collect()
}

/// Removes `user`'s oldest sessions beyond the limit, never `keep` (the one just created, which
/// may share its creation second with others). Returns them so a failed write can restore them.
fn evict_oldest_of(
    sessions: &mut HashMap<TokenHash, Record>,
    user: &str,
    keep: TokenHash,
) -> Vec<(TokenHash, Record)> {
    let mut mine: Vec<(u64, TokenHash)> = sessions
        .iter()
        .filter(|(k, r)| r.user == user && **k != keep)
        .map(|(k, r)| (r.created_unix, *k))
        .collect();
    let excess = (mine.len() + 1).saturating_sub(MAX_SESSIONS_PER_USER);
    if excess == 0 {
        return Vec::new();
    }
    mine.sort_unstable();
    mine[..excess]
        .iter()
        .filter_map(|(_, k)| sessions.remove_entry(k))
        .collect()
}

fn is_well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == TOKEN_BYTES * 2 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn token_hash(token: &str) -> TokenHash {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn pw_tag(phc: &str) -> PwTag {
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&blake3::hash(phc.as_bytes()).as_bytes()[..16]);
    tag
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TTL: Duration = Duration::from_secs(3600);
    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    fn phc_of(user: &str) -> Option<String> {
        (user == "alice").then(|| PHC.to_owned())
    }

    fn store(dir: &tempfile::TempDir) -> SessionStore {
        SessionStore::open(&dir.path().join("sessions.json"), TTL).expect("open")
    }

    #[test]
    fn token_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).create("alice", PHC, 1000).expect("create");
        assert_eq!(s.token.len(), 5 + 64);
        assert!(s.token.starts_with("xft1_"));
        assert!(is_well_formed(&s.token));
        assert_eq!(s.expires_unix, 1000 + 3600);
        assert!(!format!("{s:?}").contains(&s.token[5..]));
    }

    #[test]
    fn create_validate_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let s = store.create("alice", PHC, 1000).expect("create");
        let info = store.validate(&s.token, phc_of, 1001).expect("valid");
        assert_eq!(info.user, "alice");
        assert_eq!(info.expires_unix, 4600);

        let mut forged = s.token.clone();
        forged.pop();
        forged.push(if s.token.ends_with('0') { '1' } else { '0' });
        assert!(store.validate(&forged, phc_of, 1001).is_none());
        assert!(store.validate("garbage", phc_of, 1001).is_none());
        assert!(
            store
                .validate(&s.token.to_uppercase(), phc_of, 1001)
                .is_none()
        );

        assert!(store.revoke(&s.token).expect("revoke"));
        assert!(!store.revoke(&s.token).expect("revoke again"));
        assert!(store.validate(&s.token, phc_of, 1001).is_none());
    }

    #[test]
    fn sessions_expire_and_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let old = store.create("alice", PHC, 1000).expect("create");
        let new = store.create("alice", PHC, 2000).expect("create");
        assert!(store.validate(&old.token, phc_of, 4599).is_some());
        assert!(store.validate(&old.token, phc_of, 4600).is_none());
        assert_eq!(store.purge_expired(4600).expect("purge"), 0);
        assert_eq!(store.purge_expired(5600).expect("purge"), 1);
        assert!(store.validate(&new.token, phc_of, 5600).is_none());
        let reloaded = SessionStore::open(&dir.path().join("sessions.json"), TTL).expect("open");
        assert!(reloaded.lock().is_empty());
    }

    #[test]
    fn password_change_or_removal_invalidates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let s = store.create("alice", PHC, 1000).expect("create");
        let changed = |_: &str| Some(format!("{PHC}x"));
        assert!(store.validate(&s.token, changed, 1001).is_none());
        // Dead sessions are forgotten, even if the old hash comes back.
        assert!(store.validate(&s.token, phc_of, 1001).is_none());

        let s = store.create("alice", PHC, 1000).expect("create");
        assert!(store.validate(&s.token, |_| None, 1001).is_none());
        assert!(store.validate(&s.token, phc_of, 1001).is_none());
    }

    #[test]
    fn sessions_survive_reload_and_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sessions.json");
        let s = store(&dir)
            .create("alice", PHC, unix_now())
            .expect("create");

        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&s.token[5..]), "token stored in clear");

        let reloaded = SessionStore::open(&path, TTL).expect("reopen");
        let info = reloaded
            .validate(&s.token, phc_of, unix_now())
            .expect("still valid");
        assert_eq!(info.user, "alice");
    }

    #[test]
    fn corrupt_file_names_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sessions.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = SessionStore::open(&path, TTL).expect_err("corrupt");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn at_most_64_sessions_per_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(&dir);
        let first = store.create("alice", PHC, 1000).expect("create");
        let mut last = None;
        for i in 0..MAX_SESSIONS_PER_USER as u64 {
            last = Some(store.create("alice", PHC, 1001 + i).expect("create"));
        }
        store.create("bob", PHC, 1000).expect("create");
        assert_eq!(store.lock().len(), MAX_SESSIONS_PER_USER + 1);
        assert!(store.validate(&first.token, phc_of, 1100).is_none());
        let last = last.expect("created");
        assert!(store.validate(&last.token, phc_of, 1100).is_some());
    }
}
