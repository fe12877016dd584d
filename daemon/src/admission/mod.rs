//! Admission: who may hold what, and how fast, before and after login.
//!
//! Connections not yet logged in are counted apart from logged-in ones
//! (`preauth`): per source address and overall, with random early drop between a
//! start and a full mark (as sshd's MaxStartups), so one host flooding the port cannot
//! lock the others out. A connection takes one of `max_connections` slots only when it
//! logs in. Logged-in users are bounded in transfers in progress and, optionally, in
//! bytes per second (`rate`), both over all their connections.
//!
//! Every limit is logged when it bites, but at most once per [`BURST_WINDOW`] with the
//! number of hits left unlogged, so a peer cannot write unbounded log lines. This
//! module decides and logs; the session turns a refusal into the peer's reply.

mod preauth;
mod rate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

pub use preauth::{PreAuthGate, PreAuthGuard, PreAuthLimits, Refusal};
pub use rate::Bucket;

use crate::config::LimitsConfig;

/// A limit that keeps biting is logged at most once per this long.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);

/// Logs one kind of event at most once per [`BURST_WINDOW`].
#[derive(Default)]
pub struct BurstLog {
    state: Mutex<BurstState>,
}

#[derive(Default)]
struct BurstState {
    last: Option<Instant>,
    suppressed: u64,
}

impl BurstLog {
    /// Records one hit at `now`; `Some(n)` when this one is to be logged, `n` being the
    /// hits left unlogged since the last line.
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < BURST_WINDOW => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// One line per burst for each limit.
#[derive(Default)]
struct Logs {
    preauth: BurstLog,
    login_deadline: BurstLog,
    handshake: BurstLog,
    connections: BurstLog,
    transfers: BurstLog,
    bandwidth: BurstLog,
}

/// The admission state the server shares between connections.
pub struct Admission {
    preauth: Arc<PreAuthGate>,
    connections: Arc<Semaphore>,
    /// The `max_connections` the semaphore was sized for; a reload may change it.
    capacity: Mutex<usize>,
    transfers: Arc<UserTransfers>,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
    logs: Logs,
}

impl Admission {
    /// Admission with `max_connections` login slots.
    pub fn new(max_connections: usize) -> Admission {
        Admission {
            preauth: Arc::new(PreAuthGate::default()),
            connections: Arc::new(Semaphore::new(max_connections)),
            capacity: Mutex::new(max_connections),
            transfers: Arc::new(UserTransfers::default()),
            buckets: Mutex::new(HashMap::new()),
            logs: Logs::default(),
        }
    }

    /// Resizes the login slots to a reloaded `max_connections`. Lowering it takes effect
    /// as connections end: the excess slots are withdrawn as they come free, nobody is cut.
    pub fn set_max_connections(&self, wanted: usize) {
        let mut capacity = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        let current = *capacity;
        if wanted > current {
            self.connections.add_permits(wanted - current);
        } else if wanted < current {
            let excess = u32::try_from(current - wanted).unwrap_or(u32::MAX);
            let limit = self.connections.clone();
            tokio::spawn(async move {
                if let Ok(permits) = limit.acquire_many_owned(excess).await {
                    permits.forget();
                }
            });
        }
        *capacity = wanted;
    }

    /// Admits a connection just accepted from `peer` as unauthenticated, or refuses it
    /// (the caller closes it at once).
    pub fn admit(&self, peer: SocketAddr, limits: &LimitsConfig) -> Option<PreAuthGuard> {
        let limits = PreAuthLimits {
            per_source: limits.unauthenticated_per_source,
            start: limits.unauthenticated_start,
            full: limits.unauthenticated_full,
        };
        let roll = getrandom::u32().unwrap_or(u32::MAX);
        match self.preauth.admit(peer.ip(), &limits, roll) {
            Ok(guard) => Some(guard),
            Err(refusal) => {
                if let Some(suppressed) = self.logs.preauth.hit(Instant::now()) {
                    warn!(%peer, %refusal, suppressed, "refusing connections not yet logged in");
                }
                None
            }
        }
    }

    /// Connections admitted and not yet logged in (all sources).
    pub fn unauthenticated(&self) -> usize {
        self.preauth.total()
    }

    /// A pre-login connection ran out of time (`reason`); logged once per burst.
    pub fn login_deadline_reached(&self, peer: SocketAddr, reason: &str) {
        if let Some(suppressed) = self.logs.login_deadline.hit(Instant::now()) {
            info!(%peer, reason, suppressed, "closing connections that did not log in in time");
        }
    }

    /// A TLS handshake or hello failed (`reason`); logged once per burst.
    pub fn handshake_failed(&self, peer: SocketAddr, reason: &str) {
        if let Some(suppressed) = self.logs.handshake.hit(Instant::now()) {
            info!(%peer, reason, suppressed, "connection refused during handshake");
        }
    }

    /// One of `max_connections` slots for a connection that just logged in, or `None`
    /// when all are taken.
    pub fn connection_slot(&self, user: &str) -> Option<OwnedSemaphorePermit> {
        let permit = self.connections.clone().try_acquire_owned().ok();
        if permit.is_none()
            && let Some(suppressed) = self.logs.connections.hit(Instant::now())
        {
            warn!(
                user,
                suppressed, "limits.max_connections reached; refusing logins"
            );
        }
        permit
    }

    /// A slot for one more transfer of `user`, or `None` when they have `max` already.
    pub fn begin_transfer(&self, user: &str, max: usize) -> Option<TransferSlot> {
        let slot = self.transfers.try_begin(user, max);
        if slot.is_none()
            && let Some(suppressed) = self.logs.transfers.hit(Instant::now())
        {
            warn!(
                user,
                max, suppressed, "limits.max_transfers_per_user reached; refusing transfers"
            );
        }
        slot
    }

    /// Charges `bytes` to `user`'s bandwidth at `rate` bytes/s (0 = no cap); the instant
    /// until which this user's transfers should pause, if any.
    pub fn charge(&self, user: &str, bytes: u64, rate: u64) -> Option<tokio::time::Instant> {
        if rate == 0 {
            return None;
        }
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            buckets.entry(user.to_owned()).or_default().clone()
        };
        let until = bucket.charge(bytes, rate, tokio::time::Instant::now());
        if until.is_some()
            && let Some(suppressed) = self.logs.bandwidth.hit(Instant::now())
        {
            info!(
                user,
                rate, suppressed, "limits.user_bytes_per_sec reached; pacing transfers"
            );
        }
        until
    }
}

/// Transfers in progress per user, over all connections.
#[derive(Default)]
struct UserTransfers {
    counts: Mutex<HashMap<String, usize>>,
}

impl UserTransfers {
    fn try_begin(self: &Arc<Self>, user: &str, max: usize) -> Option<TransferSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(user.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(TransferSlot {
            owner: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// One transfer in progress; frees its place when dropped.
pub struct TransferSlot {
    owner: Arc<UserTransfers>,
    user: String,
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_once_with_the_count_it_hid() {
        let log = BurstLog::default();
        let t0 = Instant::now();
        assert_eq!(log.hit(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(log.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.hit(t0 + BURST_WINDOW), Some(500));
        assert_eq!(log.hit(t0 + BURST_WINDOW), None);
    }

    #[test]
    fn transfers_are_counted_per_user_and_freed_on_drop() {
        let a = Admission::new(4);
        let one = a.begin_transfer("alice", 2).expect("first");
        let two = a.begin_transfer("alice", 2).expect("second");
        assert!(
            a.begin_transfer("alice", 2).is_none(),
            "third is over the cap"
        );
        assert!(
            a.begin_transfer("bob", 2).is_some(),
            "bob has his own count"
        );
        drop(one);
        let three = a.begin_transfer("alice", 2).expect("a slot was freed");
        drop((two, three));
        assert!(a.transfers.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn login_slots_run_out_and_come_back() {
        let a = Admission::new(1);
        let slot = a.connection_slot("alice").expect("one slot");
        assert!(a.connection_slot("bob").is_none());
        drop(slot);
        assert!(a.connection_slot("bob").is_some());
    }
}
