//! Login sessions in the key-value bucket `xfer_sessions`: one key per session,
//! `hex(blake3(token))` (tokens are never stored), the value the session file's record.
//! The bucket's age limit is the session lifetime, so expired sessions leave by
//! themselves. See [`SharedSessions`] for how the local store uses it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;

use super::{Cluster, block_on};
use crate::accounts::SharedSessions;

/// The bucket.
pub const BUCKET: &str = "xfer_sessions";

/// Sessions on NATS.
pub struct NatsSessions {
    cluster: Arc<Cluster>,
    kv: kv::Store,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for NatsSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSessions").finish_non_exhaustive()
    }
}

impl NatsSessions {
    /// Opens the bucket, whose entries live `ttl` (the session lifetime).
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses.
    pub async fn open(cluster: Arc<Cluster>, ttl: Duration) -> anyhow::Result<NatsSessions> {
        let kv = cluster.bucket(BUCKET, ttl, 1).await?;
        Ok(NatsSessions {
            cluster,
            kv,
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// One line for a failure: unreachable, or what the request said.
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) -> io::Error {
        if self.cluster.check().is_err() {
            return io::Error::new(
                io::ErrorKind::NotConnected,
                format!("login unavailable: {}", self.cluster.unreachable()),
            );
        }
        io::Error::other(format!("{what} in NATS: {e}"))
    }

    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> io::Result<T> {
        self.cluster.check().map_err(|e| self.failed(what, &e))?;
        match block_on(&self.handle, f) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(self.failed(what, &e)),
            None => Err(self.failed(what, &"timed out")),
        }
    }
}

impl SharedSessions for NatsSessions {
    fn put(&self, key: &str, record: &[u8]) -> io::Result<()> {
        let value = bytes::Bytes::copy_from_slice(record);
        self.run("storing a session", self.kv.put(key, value))
            .map(drop)
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.run("reading a session", self.kv.get(key))
            .map(|v| v.map(|b| b.to_vec()))
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.run("revoking a session", self.kv.purge(key))
    }
}
