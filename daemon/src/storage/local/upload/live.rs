//! The registry of uploads open on some connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::LocalUpload;

/// Uploads open on some connection, by (user, key): a second `PutBegin` for the same
/// destination takes the upload over (the first connection may be dead but not yet
/// timed out, e.g. after a network cut), and expiry and removal leave them alone or stop
/// them.
#[derive(Default)]
pub(crate) struct LiveUploads(Mutex<HashMap<(String, String), Weak<LocalUpload>>>);

impl LiveUploads {
    /// The upload of `user` to partial `key`, if a connection has it open.
    pub fn get(&self, user: &str, key: &str) -> Option<Arc<LocalUpload>> {
        let live = self.lock();
        live.get(&(user.to_owned(), key.to_owned()))?.upgrade()
    }

    /// Stops the upload of `user` to partial `key`, if one is open.
    pub fn supersede(&self, user: &str, key: &str) {
        if let Some(live) = self.get(user, key) {
            live.supersede();
        }
    }

    pub fn register(&self, user: &str, upload: &Arc<LocalUpload>) {
        let mut live = self.lock();
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(
            (user.to_owned(), upload.key().to_owned()),
            Arc::downgrade(upload),
        );
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Weak<LocalUpload>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
