//! Connections not yet logged in: counted per source address and overall.
//!
//! A connection is admitted at accept and holds a [`PreAuthGuard`] until it logs in or
//! ends. A source over its own cap is refused whatever the total, so one host cannot
//! take the whole pre-login budget. Overall, from `start` on, a new connection is
//! dropped with a probability rising linearly to certain at `full` (sshd's MaxStartups
//! `start:rate:full`), so a flood thins out instead of hitting a hard wall that a
//! legitimate client would only get through by luck of timing.
//!
//! Nothing here sleeps or logs; the caller closes refused connections and logs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct PreAuthLimits {
    /// Most unauthenticated connections from one address.
    pub per_source: usize,
    /// From this total on, new ones are dropped at random.
    pub start: usize,
    /// From this total on, new ones are all refused.
    pub full: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its source already has `limits.unauthenticated_per_source` connections.
    #[error("source has {0} connections not yet logged in (limits.unauthenticated_per_source)")]
    PerSource(usize),
    /// `limits.unauthenticated_full` connections are not yet logged in.
    #[error("{0} connections not yet logged in (limits.unauthenticated_full)")]
    Full(usize),
    /// Dropped at random between `limits.unauthenticated_start` and `_full`.
    #[error("{0} connections not yet logged in, dropping at random (limits.unauthenticated_start)")]
    Dropped(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// The shared counts.
#[derive(Default)]
pub struct PreAuthGate {
    counts: Mutex<Counts>,
}

/// The source a connection is counted against: an IPv4 address (also when it arrives
/// IPv4-mapped on a dual-stack socket), or an IPv6 /64 — one host can use a whole /64,
/// as the login throttle also assumes.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl PreAuthGate {
    /// Admits a connection from `ip`, or says why not. `roll` is a uniformly random
    /// number, passed in so that tests can choose it.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &PreAuthLimits,
        roll: u32,
    ) -> Result<PreAuthGuard, Refusal> {
        let ip = source_of(ip);
        let mut c = self.lock();
        let from_source = c.by_source.get(&ip).copied().unwrap_or(0);
        if from_source >= limits.per_source {
            return Err(Refusal::PerSource(from_source));
        }
        if c.total >= limits.full {
            return Err(Refusal::Full(c.total));
        }
        if c.total >= limits.start {
            // Probability (total - start + 1) / (full - start + 1): just above zero at
            // `start`, certain at `full` (which is refused above).
            let span = (limits.full - limits.start + 1) as u64;
            let over = (c.total - limits.start + 1) as u64;
            if u64::from(roll) % span < over {
                return Err(Refusal::Dropped(c.total));
            }
        }
        c.total += 1;
        *c.by_source.entry(ip).or_default() += 1;
        Ok(PreAuthGuard {
            gate: self.clone(),
            ip,
        })
    }

    /// Unauthenticated connections now.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic elsewhere: every change is one step.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, ip: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&ip);
            }
        }
    }
}

/// One admitted connection not yet logged in; dropping it (at login, or when the
/// connection ends) frees its place.
pub struct PreAuthGuard {
    gate: Arc<PreAuthGate>,
    ip: IpAddr,
}

impl Drop for PreAuthGuard {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PreAuthLimits = PreAuthLimits {
        per_source: 3,
        start: 4,
        full: 8,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn one_source_is_capped_and_others_still_get_in() {
        let gate = Arc::new(PreAuthGate::default());
        let held: Vec<_> = (0..3)
            .map(|_| gate.admit(ip(1), &LIMITS, 0).unwrap())
            .collect();
        assert_eq!(
            gate.admit(ip(1), &LIMITS, u32::MAX).err(),
            Some(Refusal::PerSource(3))
        );
        let other = gate
            .admit(ip(2), &LIMITS, u32::MAX)
            .expect("another source");
        drop(held);
        assert_eq!(gate.total(), 1);
        assert!(gate.admit(ip(1), &LIMITS, 0).is_ok(), "places were freed");
        drop(other);
    }

    #[test]
    fn an_ipv4_mapped_peer_counts_as_its_ipv4_source() {
        let gate = Arc::new(PreAuthGate::default());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let _held: Vec<_> = (0..3)
            .map(|_| gate.admit(ip(1), &LIMITS, 0).unwrap())
            .collect();
        assert!(gate.admit(mapped, &LIMITS, 0).is_err());
    }

    #[test]
    fn drops_rise_from_start_to_certain_at_full() {
        let gate = Arc::new(PreAuthGate::default());
        let mut held: Vec<_> = (0..4)
            .map(|i| gate.admit(ip(i), &LIMITS, 0).unwrap())
            .collect();
        // total 4 = start: probability 1/5; rolls 0 drop, 1..4 pass.
        assert_eq!(
            gate.admit(ip(10), &LIMITS, 0).err(),
            Some(Refusal::Dropped(4))
        );
        held.push(gate.admit(ip(10), &LIMITS, 1).unwrap());
        // total 5: probability 2/5.
        assert!(gate.admit(ip(11), &LIMITS, 1).is_err());
        held.push(gate.admit(ip(11), &LIMITS, 2).unwrap());
        held.push(gate.admit(ip(12), &LIMITS, 4).unwrap());
        held.push(gate.admit(ip(13), &LIMITS, 4).unwrap());
        // total 8 = full: refused whatever the roll.
        assert_eq!(gate.admit(ip(14), &LIMITS, 4).err(), Some(Refusal::Full(8)));
        held.pop();
        assert!(gate.admit(ip(14), &LIMITS, 4).is_ok());
    }
}
