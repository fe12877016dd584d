//! Delivery markers and read positions in the bucket `xfer_chat_state`, as rising
//! numbers: `delivered.<user>` and `read.<user>.c.<channel>` / `read.<user>.u.<other>`.
//!
//! Each daemon answers from a copy that a watcher of the bucket keeps current, so a
//! user's markers follow them to whichever daemon they connect to. Changes are written
//! by [`DeliveryMarkers::persist`] / [`ReadPositions::persist`] (about once a second,
//! and at once for `MarkRead`) with compare-and-set, so a value never goes down even
//! when two daemons write at once; what could not be written stays to be written next
//! time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use xfer_proto::Target;

use super::{Cluster, block_on, supervise, token, untoken};
use crate::chat::{DeliveryMarkers, ReadPositions};

/// The bucket.
pub const BUCKET: &str = "xfer_chat_state";

#[derive(Default)]
struct Values {
    /// Key -> value, as known here.
    known: HashMap<String, u64>,
    /// Keys raised here and not yet written.
    dirty: HashSet<String>,
}

/// Rising numbers in the bucket, with a local copy.
pub struct NatsMarkers {
    cluster: Arc<Cluster>,
    kv: kv::Store,
    values: Arc<Mutex<Values>>,
    handle: tokio::runtime::Handle,
}

impl NatsMarkers {
    /// Opens the bucket and starts the watcher; returns once the watcher has read the
    /// bucket's current values (or after a few seconds).
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses.
    pub async fn open(cluster: &Arc<Cluster>) -> anyhow::Result<Arc<NatsMarkers>> {
        let kv = cluster.bucket(BUCKET, std::time::Duration::ZERO, 1).await?;
        let markers = Arc::new(NatsMarkers {
            cluster: cluster.clone(),
            kv: kv.clone(),
            values: Arc::default(),
            handle: tokio::runtime::Handle::current(),
        });
        let (loaded_tx, mut loaded) = tokio::sync::watch::channel(false);
        let values = markers.values.clone();
        supervise(cluster, "chat markers watcher", move |_| {
            watch(kv.clone(), values.clone(), loaded_tx.clone())
        });
        let _ = tokio::time::timeout(super::REQUEST_TIMEOUT, loaded.wait_for(|l| *l)).await;
        Ok(markers)
    }

    fn values(&self) -> std::sync::MutexGuard<'_, Values> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.values().known.get(key).copied()
    }

    /// Raises `key` to `value` here; true if it moved.
    fn raise(&self, key: String, value: u64) -> bool {
        let mut v = self.values();
        if v.known.get(&key).is_some_and(|&k| k >= value) {
            return false;
        }
        v.known.insert(key.clone(), value);
        v.dirty.insert(key);
        true
    }

    /// Writes the raised keys (blocking).
    fn flush(&self) -> std::io::Result<()> {
        let dirty: Vec<(String, u64)> = {
            let mut v = self.values();
            let keys: Vec<String> = v.dirty.drain().collect();
            keys.into_iter()
                .filter_map(|k| v.known.get(&k).map(|n| (k, *n)))
                .collect()
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let mut failed = Vec::new();
        if self.cluster.check().is_ok() {
            for (key, value) in dirty {
                let ok = block_on(&self.handle, raise_in(&self.kv, &key, value))
                    .is_some_and(|r| r.is_ok());
                if !ok {
                    failed.push(key);
                }
            }
        } else {
            failed = dirty.into_iter().map(|(k, _)| k).collect();
        }
        if failed.is_empty() {
            return Ok(());
        }
        self.values().dirty.extend(failed);
        Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            self.cluster.unreachable().to_string(),
        ))
    }
}

/// Sets `key` to `value` unless it already holds as much (compare-and-set, retried).
async fn raise_in(kv: &kv::Store, key: &str, value: u64) -> anyhow::Result<()> {
    for _ in 0..5 {
        let entry = kv.entry(key).await?;
        let (current, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                e.revision,
            ),
            Some(e) => (0, e.revision),
            None => (0, 0),
        };
        if current >= value {
            return Ok(());
        }
        let bytes = value.to_string().into();
        let written = if revision == 0 {
            kv.create(key, bytes)
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        } else {
            kv.update(key, bytes, revision)
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        };
        if written.is_ok() {
            return Ok(());
        }
    }
    anyhow::bail!("{key} kept changing while being raised")
}

async fn watch(
    kv: kv::Store,
    values: Arc<Mutex<Values>>,
    loaded: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut watch = kv.watch_all().await?;
    if kv.status().await.map(|s| s.values() == 0).unwrap_or(false) {
        loaded.send_replace(true);
    }
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        if entry.operation == kv::Operation::Put
            && let Some(n) = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        {
            let mut v = values.lock().unwrap_or_else(|p| p.into_inner());
            let known = v.known.entry(entry.key.clone()).or_insert(0);
            *known = (*known).max(n);
        }
        if entry.delta == 0 {
            loaded.send_replace(true);
        }
    }
    Ok(())
}

fn delivered_key(user: &str) -> String {
    format!("delivered.{}", token(user))
}

fn read_prefix(user: &str) -> String {
    format!("read.{}.", token(user))
}

fn read_key(user: &str, target: &Target) -> String {
    let prefix = read_prefix(user);
    match target {
        Target::Channel(c) => format!("{prefix}c.{}", token(c.as_str())),
        Target::User(u) => format!("{prefix}u.{}", token(u.as_str())),
    }
}

impl DeliveryMarkers for NatsMarkers {
    fn get(&self, user: &str) -> u64 {
        NatsMarkers::get(self, &delivered_key(user)).unwrap_or(0)
    }

    fn advance(&self, user: &str, id: u64) {
        self.raise(delivered_key(user), id);
    }

    fn persist(&self) -> std::io::Result<()> {
        self.flush()
    }
}

impl ReadPositions for NatsMarkers {
    fn positions(&self, user: &str) -> BTreeMap<Target, u64> {
        let prefix = read_prefix(user);
        self.values()
            .known
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&prefix)?;
                let target = match rest.split_once('.')? {
                    ("c", c) => format!("#{}", untoken(c)),
                    ("u", u) => format!("@{}", untoken(u)),
                    _ => return None,
                };
                Target::parse(&target).ok().map(|t| (t, *v))
            })
            .collect()
    }

    fn mark(&self, user: &str, target: &Target, id: u64) -> bool {
        self.raise(read_key(user, target), id)
    }

    fn persist(&self) -> std::io::Result<()> {
        self.flush()
    }
}
