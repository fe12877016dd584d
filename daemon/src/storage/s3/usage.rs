//! Bytes stored per user and their uploads in progress, without listing the bucket on
//! every upload: counted by listing the user's prefix on first use and again when the
//! count is older than [`REFRESH`], and kept up to date in between by this node's own
//! commits, removals and uploads. Other nodes' changes are seen at the next refresh, so
//! with several nodes a quota can be overrun by what they admit within that window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use object_store::ObjectStore;

use super::Shared;
use super::client::{get_record, os_err};
use super::keys::{self, Area};
use super::records::PartialRecord;
use crate::storage::{RelPath, StorageError};

/// How long a count is trusted before the user's prefix is listed again.
pub(super) const REFRESH: Duration = Duration::from_secs(30);

/// One user's count.
#[derive(Debug, Clone, Default)]
pub(super) struct UserUsage {
    /// Bytes of committed files.
    pub files: u64,
    /// Uploads in progress: destination → final size.
    pub partials: HashMap<String, u64>,
    at: Option<Instant>,
}

impl UserUsage {
    /// Committed bytes plus uploads in progress at their final size.
    pub fn used_bytes(&self) -> u64 {
        self.files
            .saturating_add(self.partials.values().sum::<u64>())
    }
}

#[derive(Default)]
pub(super) struct UsageCache {
    users: Mutex<HashMap<String, UserUsage>>,
}

impl UsageCache {
    /// `user`'s count, listed again when it is missing or older than [`REFRESH`].
    pub async fn get(&self, shared: &Shared, user: &str) -> Result<UserUsage, StorageError> {
        if let Some(u) = self
            .lock()
            .get(user)
            .filter(|u| u.at.is_some_and(|at| at.elapsed() < REFRESH))
        {
            return Ok(u.clone());
        }
        let counted = count(shared, user).await?;
        self.lock().insert(user.to_owned(), counted.clone());
        Ok(counted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserUsage>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Committed bytes changed by `delta` on this node.
    pub fn add_files(&self, user: &str, delta: i64) {
        if let Some(u) = self.lock().get_mut(user) {
            u.files = u.files.saturating_add_signed(delta);
        }
    }

    /// An upload to `path` of `size` bytes began (or resumed).
    pub fn set_partial(&self, user: &str, path: &str, size: u64) {
        if let Some(u) = self.lock().get_mut(user) {
            u.partials.insert(path.to_owned(), size);
        }
    }

    /// The upload to `path` ended (committed, removed or expired).
    pub fn drop_partial(&self, user: &str, path: &str) {
        if let Some(u) = self.lock().get_mut(user) {
            u.partials.remove(path);
        }
    }

    /// Forgets `user`'s count: the next use lists again (after a change too large to
    /// track piece by piece, such as a recursive removal that failed half-way).
    pub fn forget(&self, user: &str) {
        self.lock().remove(user);
    }
}

/// Lists `user`'s files and uploads in progress.
async fn count(shared: &Shared, user: &str) -> Result<UserUsage, StorageError> {
    let home = RelPath::home();
    let mut files = 0u64;
    let mut listing = shared
        .store
        .list(Some(&shared.key(user, Area::Files, &home)));
    while let Some(meta) = listing.next().await {
        files += meta.map_err(os_err("counting a user's files"))?.size;
    }
    let base = shared.key(user, Area::Partials, &home);
    let records: Vec<_> = shared
        .store
        .list(Some(&base))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(os_err("counting a user's uploads"))?;
    let (store, base) = (&shared.store, &base);
    let sizes: Vec<_> = futures_util::stream::iter(records)
        .map(|m| async move {
            let r = get_record::<PartialRecord>(store, &m.location).await?;
            Ok::<_, StorageError>(r.map(|r| (keys::below(base, &m.location), r)))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut partials = HashMap::new();
    for r in sizes {
        if let Some((Some(path), record)) = r? {
            partials.insert(path, record.size);
        }
    }
    Ok(UserUsage {
        files,
        partials,
        at: Some(Instant::now()),
    })
}
