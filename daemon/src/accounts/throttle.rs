//! Login throttling, anchored on OpenSSH's `PerSourcePenalties`.
//!
//! Two token buckets are kept: one per source (IPv4 address, or IPv6 /64 as OpenSSH groups them)
//! and one per user name. Only failed *verifications* consume tokens: attempts refused here never
//! reach argon2 and cost nothing, so a throttled attacker cannot extend their own penalty
//! indefinitely and a flood cannot lock a name forever. An empty user bucket blocks only the
//! sources that took part in emptying it, so the real user, from a clean address, still gets in.
//!
//! Memory is bounded: each map holds at most `max_entries` keys, and `check` never inserts.
//! This module does not sleep, log or know about sessions; callers pass the current `Instant`.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A source that failed on a name more often than this within the user window is blocked while
/// that name's bucket is empty. Small enough that a flood must spread over many addresses, large
/// enough that the real user mistyping a couple of times is not caught.
const PAIR_FAILURES_TOLERATED: u32 = 3;

/// Refill intervals are capped at one year so that `Instant` arithmetic cannot overflow.
const MAX_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Throttling limits.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// Failures allowed from one source before it is throttled (default 10).
    pub source_burst: u32,
    /// One source failure forgiven per this many seconds (default 30).
    pub source_refill_secs: u64,
    /// Failures on one user name, from all sources, before that name is throttled (default 20).
    pub user_burst: u32,
    /// One user-name failure forgiven per this many seconds (default 60).
    pub user_refill_secs: u64,
    /// Cap on tracked sources and on tracked names, each (default 65536). When full, fully
    /// refilled entries are evicted first, then the oldest.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            source_burst: 10,
            source_refill_secs: 30,
            user_burst: 20,
            user_refill_secs: 60,
            max_entries: 65536,
        }
    }
}

/// The answer to "may this source try to log in as this user now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny { retry_after: Duration },
}

/// Whom a penalty applies to: an IPv4 address, or an IPv6 /64 (one customer's network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6Prefix64(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        // `to_canonical` folds IPv4-mapped IPv6 (`::ffff:a.b.c.d`) back to IPv4.
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) >> 64;
                Self::V6Prefix64(u64::try_from(bits).expect("u128 >> 64 fits in u64"))
            }
        }
    }
}

/// User names are tracked by a fixed-size digest: names come from the network before they are
/// validated, and long ones must not make the map cost more memory.
type NameKey = [u8; 16];

fn name_key(user: &str) -> NameKey {
    let hash = blake3::hash(user.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// A token bucket stored as the instant at which it will be full again (GCRA): each failure
/// pushes `full_at` one interval further, never more than `burst` intervals past now (the bucket
/// cannot go below empty).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    full_at: Instant,
    last_failure: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Rate {
    burst: u32,
    interval: Duration,
}

impl Rate {
    fn new(burst: u32, refill_secs: u64) -> Self {
        Self {
            burst: burst.max(1),
            interval: Duration::from_secs(refill_secs).min(MAX_REFILL),
        }
    }

    /// Time for an empty bucket to refill completely.
    fn window(self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }

    /// `Some(wait)` if the bucket is empty at `now`.
    fn wait(self, bucket: &Bucket, now: Instant) -> Option<Duration> {
        let debt = bucket.full_at.saturating_duration_since(now);
        let allowance = self.interval.saturating_mul(self.burst - 1);
        (debt > allowance).then(|| debt - allowance)
    }

    fn consume(self, bucket: &mut Bucket, now: Instant) {
        let debt = bucket.full_at.saturating_duration_since(now);
        let debt = (debt + self.interval).min(self.window());
        bucket.full_at = now.checked_add(debt).unwrap_or(bucket.full_at);
        bucket.last_failure = now;
    }
}

/// Failures of one source on one name.
#[derive(Clone, Copy, Debug)]
struct PairRecord {
    failures: u32,
    last_failure: Instant,
}

impl PairRecord {
    /// Failures counted at `now`: a whole user window without a failure forgets them.
    fn failures_at(&self, now: Instant, window: Duration) -> u32 {
        if now.saturating_duration_since(self.last_failure) >= window {
            0
        } else {
            self.failures
        }
    }
}

/// Makes room for one more key in a map already holding `max` or more: evicts every spent
/// entry, then, if still full, the one whose last failure is oldest.
/// `view` tells whether an entry is spent (fully refilled) and when it last failed.
fn make_room<K: Eq + Hash + Copy, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    view: impl Fn(&V) -> (bool, Instant),
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !view(v).0);
    while map.len() >= max {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| view(v).1).map(|(k, _)| *k) else {
            return;
        };
        map.remove(&oldest);
    }
}

/// The limits in force; replaced whole by [`Throttle::reconfigure`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    source_rate: Rate,
    user_rate: Rate,
    max_entries: usize,
}

impl Limits {
    fn new(cfg: &ThrottleConfig) -> Self {
        Self {
            source_rate: Rate::new(cfg.source_burst, cfg.source_refill_secs),
            user_rate: Rate::new(cfg.user_burst, cfg.user_refill_secs),
            max_entries: cfg.max_entries.max(1),
        }
    }
}

#[derive(Debug)]
struct State {
    limits: Limits,
    sources: HashMap<SourceKey, Bucket>,
    names: HashMap<NameKey, Bucket>,
    pairs: HashMap<(SourceKey, NameKey), PairRecord>,
}

/// Login throttle shared by all sessions. Its lock is held only for map operations, never
/// across `.await`.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
}

impl Throttle {
    /// A throttle with limits `cfg` (a burst of 0 counts as 1, `max_entries` of 0 as 1).
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            state: Mutex::new(State {
                limits: Limits::new(&cfg),
                sources: HashMap::new(),
                names: HashMap::new(),
                pairs: HashMap::new(),
            }),
        }
    }

    /// Applies new limits (a config reload). Failures already counted stay counted.
    pub fn reconfigure(&self, cfg: ThrottleConfig) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.limits = Limits::new(&cfg);
    }

    /// To call before verifying. Denied if the source's bucket is empty. If the user name's
    /// bucket is empty, denied only if this source itself failed on that name more than 3 times
    /// within the user window (the time the name's bucket takes to refill): the real user, from
    /// a clean address, still gets in while a flood on their name goes on.
    pub fn check(&self, source: IpAddr, user: &str, now: Instant) -> Verdict {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.check_locked(&state, SourceKey::of(source), name_key(user), now)
    }

    /// [`Throttle::check`] and, when allowed, [`Throttle::record_failure`] at once, under one
    /// lock: the attempt counts as a failure from the moment it is admitted, so many concurrent
    /// connections from one source cannot all pass before the first verification ends. A
    /// success hands the reservation back ([`Throttle::refund`]).
    pub fn admit(&self, source: IpAddr, user: &str, now: Instant) -> Verdict {
        let (src, name) = (SourceKey::of(source), name_key(user));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let verdict = self.check_locked(&state, src, name, now);
        if verdict == Verdict::Allow {
            self.fail_locked(&mut state, src, name, now);
        }
        verdict
    }

    fn check_locked(&self, state: &State, src: SourceKey, name: NameKey, now: Instant) -> Verdict {
        let limits = state.limits;
        if let Some(wait) = state
            .sources
            .get(&src)
            .and_then(|b| limits.source_rate.wait(b, now))
        {
            return Verdict::Deny { retry_after: wait };
        }
        if let Some(wait) = state
            .names
            .get(&name)
            .and_then(|b| limits.user_rate.wait(b, now))
        {
            let pair_failures = state
                .pairs
                .get(&(src, name))
                .map_or(0, |p| p.failures_at(now, limits.user_rate.window()));
            if pair_failures > PAIR_FAILURES_TOLERATED {
                return Verdict::Deny { retry_after: wait };
            }
        }
        Verdict::Allow
    }

    /// To call after a verification that failed: consumes one token from the source's bucket
    /// and the name's bucket and counts the failure for (source, name).
    pub fn record_failure(&self, source: IpAddr, user: &str, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.fail_locked(&mut state, SourceKey::of(source), name_key(user), now);
    }

    fn fail_locked(&self, state: &mut State, src: SourceKey, name: NameKey, now: Instant) {
        let limits = state.limits;
        let max = limits.max_entries;
        let user_window = limits.user_rate.window();

        let fresh = Bucket {
            full_at: now,
            last_failure: now,
        };
        if !state.sources.contains_key(&src) {
            make_room(&mut state.sources, max, |b| {
                (b.full_at <= now, b.last_failure)
            });
        }
        let bucket = state.sources.entry(src).or_insert(fresh);
        limits.source_rate.consume(bucket, now);

        if !state.names.contains_key(&name) {
            make_room(&mut state.names, max, |b| {
                (b.full_at <= now, b.last_failure)
            });
        }
        let bucket = state.names.entry(name).or_insert(fresh);
        limits.user_rate.consume(bucket, now);

        if !state.pairs.contains_key(&(src, name)) {
            make_room(&mut state.pairs, max, |p| {
                (p.failures_at(now, user_window) == 0, p.last_failure)
            });
        }
        match state.pairs.entry((src, name)) {
            MapEntry::Occupied(mut e) => {
                let pair = e.get_mut();
                pair.failures = pair.failures_at(now, user_window).saturating_add(1);
                pair.last_failure = now;
            }
            MapEntry::Vacant(e) => {
                e.insert(PairRecord {
                    failures: 1,
                    last_failure: now,
                });
            }
        }
    }

    /// To call after a successful login: forgets this source's failures *on this name*.
    /// The source's own penalty stays, or an attacker holding one valid account could reset it
    /// between guesses at other accounts.
    pub fn record_success(&self, source: IpAddr, user: &str, _now: Instant) {
        let key = (SourceKey::of(source), name_key(user));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pairs.remove(&key);
    }

    /// To call after a successful login admitted by [`Throttle::admit`]: hands back the one
    /// failure reserved for it (never more: a valid account cannot buy extra guesses) and
    /// forgets this source's failures on this name.
    pub fn refund(&self, source: IpAddr, user: &str, now: Instant) {
        let (src, name) = (SourceKey::of(source), name_key(user));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = state.limits;
        let give_back = |bucket: Option<&mut Bucket>, interval: Duration| {
            if let Some(b) = bucket {
                b.full_at = b.full_at.checked_sub(interval).unwrap_or(now).max(now);
            }
        };
        give_back(state.sources.get_mut(&src), limits.source_rate.interval);
        give_back(state.names.get_mut(&name), limits.user_rate.interval);
        state.pairs.remove(&(src, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_reserves_so_concurrent_attempts_cannot_all_pass() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        let src = ip("10.9.9.9");
        // 100 attempts admitted before any verification finishes: only the burst gets in.
        let admitted = (0..100)
            .filter(|_| t.admit(src, "alice", now) == Verdict::Allow)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn reconfigure_applies_new_bursts_and_keeps_counted_failures() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        let src = ip("10.9.9.7");
        for _ in 0..3 {
            assert_eq!(t.admit(src, "x", now), Verdict::Allow);
        }
        t.reconfigure(ThrottleConfig {
            source_burst: 3,
            ..ThrottleConfig::default()
        });
        assert!(matches!(t.admit(src, "x", now), Verdict::Deny { .. }));
        t.reconfigure(ThrottleConfig::default());
        assert_eq!(t.admit(src, "x", now), Verdict::Allow);
    }

    #[test]
    fn refund_returns_exactly_one_reservation() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        let src = ip("10.9.9.8");
        for _ in 0..9 {
            assert_eq!(t.admit(src, "x", now), Verdict::Allow);
        }
        // A success (e.g. on the attacker's own account) gives back only its own reservation.
        assert_eq!(t.admit(src, "mine", now), Verdict::Allow);
        t.refund(src, "mine", now);
        assert_eq!(t.admit(src, "x", now), Verdict::Allow);
        assert!(matches!(t.admit(src, "x", now), Verdict::Deny { .. }));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn fail(t: &Throttle, source: &str, user: &str, n: u32, now: Instant) {
        for _ in 0..n {
            assert_eq!(
                t.check(ip(source), user, now),
                Verdict::Allow,
                "{source} {user}"
            );
            t.record_failure(ip(source), user, now);
        }
    }

    #[test]
    fn source_is_denied_after_burst_but_others_are_not() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        fail(&t, "10.0.0.1", "alice", 10, now);
        assert!(matches!(
            t.check(ip("10.0.0.1"), "alice", now),
            Verdict::Deny { .. }
        ));
        assert!(matches!(
            t.check(ip("10.0.0.1"), "bob", now),
            Verdict::Deny { .. }
        ));
        assert_eq!(t.check(ip("10.0.0.2"), "alice", now), Verdict::Allow);
        // IPv4-mapped IPv6 is the same source.
        assert!(matches!(
            t.check(ip("::ffff:10.0.0.1"), "alice", now),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn flood_on_a_name_blocks_flooders_not_a_clean_source() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        // 5 sources x 4 failures = user_burst (20); each stays under its source burst (10).
        for i in 1..=5 {
            fail(&t, &format!("192.0.2.{i}"), "alice", 4, now);
        }
        for i in 1..=5 {
            let verdict = t.check(ip(&format!("192.0.2.{i}")), "alice", now);
            assert!(matches!(verdict, Verdict::Deny { .. }), "{i}: {verdict:?}");
            // The flooders can still try other names.
            assert_eq!(
                t.check(ip(&format!("192.0.2.{i}")), "bob", now),
                Verdict::Allow
            );
        }
        assert_eq!(t.check(ip("198.51.100.7"), "alice", now), Verdict::Allow);
    }

    #[test]
    fn buckets_refill_over_time() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        fail(&t, "10.0.0.1", "alice", 10, now);
        assert_eq!(
            t.check(ip("10.0.0.1"), "alice", now),
            Verdict::Deny {
                retry_after: Duration::from_secs(30)
            }
        );
        let later = now + Duration::from_secs(29);
        assert!(matches!(
            t.check(ip("10.0.0.1"), "alice", later),
            Verdict::Deny { .. }
        ));
        let later = now + Duration::from_secs(30);
        assert_eq!(t.check(ip("10.0.0.1"), "alice", later), Verdict::Allow);
        // One token came back: one more failure empties the bucket again.
        t.record_failure(ip("10.0.0.1"), "alice", later);
        assert!(matches!(
            t.check(ip("10.0.0.1"), "alice", later),
            Verdict::Deny { .. }
        ));
        let much_later = later + Duration::from_secs(300);
        fail(&t, "10.0.0.1", "alice", 10, much_later);
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        for i in 1..=10 {
            fail(&t, &format!("2001:db8:1:2::{i:x}"), "alice", 1, now);
        }
        assert!(matches!(
            t.check(ip("2001:db8:1:2:ffff::1"), "bob", now),
            Verdict::Deny { .. }
        ));
        assert_eq!(t.check(ip("2001:db8:1:3::1"), "bob", now), Verdict::Allow);
    }

    #[test]
    fn maps_stay_within_max_entries() {
        let cfg = ThrottleConfig {
            max_entries: 4,
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(cfg);
        let now = Instant::now();
        for i in 0..100u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.record_failure(
                source,
                &format!("user{i}"),
                now + Duration::from_millis(i.into()),
            );
        }
        let state = t.state.lock().expect("lock");
        assert!(state.sources.len() <= 4);
        assert!(state.names.len() <= 4);
        assert!(state.pairs.len() <= 4);
        // The newest entries are the ones kept.
        assert!(state.sources.contains_key(&SourceKey::of(ip("10.0.0.99"))));
    }

    #[test]
    fn eviction_prefers_refilled_entries() {
        let cfg = ThrottleConfig {
            max_entries: 2,
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(cfg);
        let now = Instant::now();
        fail(&t, "10.0.0.1", "alice", 10, now);
        // 10.0.0.2 fails once, later; refilled after 30 s, long before 10.0.0.1 (300 s).
        let later = now + Duration::from_secs(1);
        t.record_failure(ip("10.0.0.2"), "bob", later);
        t.record_failure(ip("10.0.0.3"), "carol", later + Duration::from_secs(60));
        let state = t.state.lock().expect("lock");
        assert!(state.sources.contains_key(&SourceKey::of(ip("10.0.0.1"))));
        assert!(!state.sources.contains_key(&SourceKey::of(ip("10.0.0.2"))));
    }

    #[test]
    fn success_does_not_reset_source_penalty() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        fail(&t, "10.0.0.1", "victim", 9, now);
        t.record_success(ip("10.0.0.1"), "mallory", now);
        t.record_failure(ip("10.0.0.1"), "victim", now);
        assert!(matches!(
            t.check(ip("10.0.0.1"), "victim", now),
            Verdict::Deny { .. }
        ));
        assert!(matches!(
            t.check(ip("10.0.0.1"), "mallory", now),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn success_forgets_pair_failures_on_that_name() {
        let t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        // Flood alice from others, and let 10.0.0.9 mistype 4 times.
        for i in 1..=4 {
            fail(&t, &format!("192.0.2.{i}"), "alice", 4, now);
        }
        fail(&t, "10.0.0.9", "alice", 4, now);
        assert!(matches!(
            t.check(ip("10.0.0.9"), "alice", now),
            Verdict::Deny { .. }
        ));
        t.record_success(ip("10.0.0.9"), "alice", now);
        assert_eq!(t.check(ip("10.0.0.9"), "alice", now), Verdict::Allow);
    }
}
