//! The registry of live connections, for the admin: who is connected from where, what
//! each connection is transferring and how far it got, and a handle to end it.
//!
//! A session registers when it is accepted and holds a [`Registration`]; dropping it
//! (the session's end) removes the entry. Transfers report progress through a shared
//! atomic counter, so a busy upload costs one relaxed add per chunk. This module does
//! not end anything itself: [`Connections::kick`] cancels a token each session selects
//! on, and the session closes the way it does on shutdown (an upload keeps its
//! verified chunks for a resume).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// All live connections. Cheap to share: clones see the same registry.
#[derive(Default)]
pub struct Connections {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Inner {
    fn live(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One live connection.
pub struct Connection {
    id: u64,
    peer: SocketAddr,
    since_unix: u64,
    user: Mutex<Option<String>>,
    /// Cancelled by a kick, and (as a child token) by the server's shutdown.
    stop: CancellationToken,
    kicked: AtomicBool,
    transfers: Mutex<BTreeMap<u64, Arc<Progress>>>,
}

/// Which way a transfer moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server (`push`, `send`).
    Upload,
    /// Server to client (`pull`).
    Download,
}

/// How far one transfer got.
pub struct Progress {
    path: String,
    direction: Direction,
    total: u64,
    done: AtomicU64,
}

impl Progress {
    /// Counts `n` more bytes done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Records that everything up to `offset` is done (downloads stream in order).
    pub fn reach(&self, offset: u64) {
        self.done.fetch_max(offset, Ordering::Relaxed);
    }
}

/// A session's entry; dropping it unregisters the connection.
pub struct Registration {
    conn: Arc<Connection>,
    registry: Arc<Inner>,
}

/// A transfer's entry; dropping it removes the transfer from its connection's list.
pub struct Tracked {
    conn: Arc<Connection>,
    id: u64,
    progress: Arc<Progress>,
}

impl Connections {
    /// Registers a connection accepted from `peer`; its stop token is a child of
    /// `shutdown`, so it fires on a kick and on shutdown alike.
    pub fn register(&self, peer: SocketAddr, shutdown: &CancellationToken) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Connection {
            id,
            peer,
            since_unix: crate::now_unix(),
            user: Mutex::new(None),
            stop: shutdown.child_token(),
            kicked: AtomicBool::new(false),
            transfers: Mutex::new(BTreeMap::new()),
        });
        self.inner.live().insert(id, conn.clone());
        Registration {
            conn,
            registry: self.inner.clone(),
        }
    }

    /// Ends every connection logged in as `user` now; returns how many.
    pub fn kick(&self, user: &str) -> usize {
        let live = self.inner.live();
        let mut n = 0;
        for conn in live.values() {
            if conn.user().as_deref() == Some(user) {
                conn.kicked.store(true, Ordering::Relaxed);
                conn.stop.cancel();
                n += 1;
            }
        }
        n
    }

    /// What every live connection is doing, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionInfo> {
        let live: Vec<Arc<Connection>> = self.inner.live().values().cloned().collect();
        let now = crate::now_unix();
        live.iter()
            .map(|c| ConnectionInfo {
                id: c.id,
                peer: c.peer.to_string(),
                user: c.user(),
                connected_secs: now.saturating_sub(c.since_unix),
                transfers: c
                    .transfers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|p| TransferInfo {
                        path: p.path.clone(),
                        direction: p.direction,
                        done_bytes: p.done.load(Ordering::Relaxed).min(p.total),
                        total_bytes: p.total,
                    })
                    .collect(),
            })
            .collect()
    }
}

impl Connection {
    fn user(&self) -> Option<String> {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Registration {
    /// Records who is logged in on this connection (`None` after a logout).
    pub fn set_user(&self, user: Option<&str>) {
        *self.conn.user.lock().unwrap_or_else(|p| p.into_inner()) = user.map(str::to_owned);
    }

    /// Fires when the admin kicks this connection or the server shuts down.
    pub fn stop_token(&self) -> CancellationToken {
        self.conn.stop.clone()
    }

    /// Whether the stop came from a kick (rather than the shutdown).
    pub fn kicked(&self) -> bool {
        self.conn.kicked.load(Ordering::Relaxed)
    }

    /// Lists a transfer under `id` until the returned handle is dropped.
    pub fn track(&self, id: u64, path: &str, direction: Direction, total: u64) -> Tracked {
        let progress = Arc::new(Progress {
            path: path.to_owned(),
            direction,
            total,
            done: AtomicU64::new(0),
        });
        self.conn
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, progress.clone());
        Tracked {
            conn: self.conn.clone(),
            id,
            progress,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.live().remove(&self.conn.id);
    }
}

impl Tracked {
    /// The transfer's progress counter.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conn
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// One connection in `xferd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Registry id, in accept order.
    pub id: u64,
    /// Client address and port.
    pub peer: String,
    /// Logged-in user; `None` before login.
    pub user: Option<String>,
    /// Seconds since the connection was accepted.
    pub connected_secs: u64,
    /// Transfers open on it.
    pub transfers: Vec<TransferInfo>,
}

/// One open transfer in `xferd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// Path in the owner's namespace.
    pub path: String,
    /// Upload or download.
    pub direction: Direction,
    /// Bytes verified (upload) or sent (download) so far.
    pub done_bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn kick_stops_only_that_users_connections_and_drop_unregisters() {
        let registry = Connections::default();
        let shutdown = CancellationToken::new();
        let bob = registry.register(peer(), &shutdown);
        bob.set_user(Some("bob"));
        let alice = registry.register(peer(), &shutdown);
        alice.set_user(Some("alice"));
        let anon = registry.register(peer(), &shutdown);
        assert_eq!(registry.kick("bob"), 1);
        assert!(bob.stop_token().is_cancelled() && bob.kicked());
        assert!(!alice.stop_token().is_cancelled() && !anon.stop_token().is_cancelled());
        drop(bob);
        assert_eq!(registry.snapshot().len(), 2);
        assert_eq!(registry.kick("bob"), 0);
        shutdown.cancel();
        assert!(alice.stop_token().is_cancelled() && !alice.kicked());
    }

    #[test]
    fn transfers_report_progress_until_dropped() {
        let registry = Connections::default();
        let reg = registry.register(peer(), &CancellationToken::new());
        let up = reg.track(1, "a.bin", Direction::Upload, 100);
        up.progress().add(40);
        let down = reg.track(2, "b.bin", Direction::Download, 10);
        down.progress().reach(7);
        down.progress().reach(5);
        let t = &registry.snapshot()[0].transfers;
        assert_eq!((t[0].done_bytes, t[0].total_bytes), (40, 100));
        assert_eq!((t[1].done_bytes, t[1].direction), (7, Direction::Download));
        drop(up);
        assert_eq!(registry.snapshot()[0].transfers.len(), 1);
    }
}
