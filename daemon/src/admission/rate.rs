//! A token bucket shared by all of one user's transfers (`limits.user_bytes_per_sec`).
//!
//! Charging never waits: it books the bytes, letting the balance go into debt, and
//! returns the instant at which the debt is paid. The caller pauses reading (uploads)
//! or sending (downloads) until then, with the rest of its session still running, so
//! nothing blocks a runtime thread and the chunk pipeline keeps its window. Because the
//! debt is shared, several connections of one user together get the configured rate.
//! The rate is passed on every charge, so a changed configuration applies at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Bytes of credit kept at most, in seconds of the rate: a transfer starting after a
/// pause may burst this much.
const BURST_SECS: f64 = 1.0;

/// One user's balance.
#[derive(Default)]
pub struct Bucket {
    state: Mutex<Option<State>>,
}

struct State {
    /// Bytes that may be moved now; negative while in debt.
    balance: f64,
    at: Instant,
}

impl Bucket {
    /// Books `bytes` at `rate` bytes/s at `now`; `Some(t)` when the caller must wait
    /// until `t`.
    pub fn charge(&self, bytes: u64, rate: u64, now: Instant) -> Option<Instant> {
        if rate == 0 {
            return None;
        }
        let rate = rate as f64;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = s.get_or_insert(State {
            balance: rate * BURST_SECS,
            at: now,
        });
        let earned = now.saturating_duration_since(state.at).as_secs_f64() * rate;
        state.balance = (state.balance + earned).min(rate * BURST_SECS) - bytes as f64;
        state.at = now;
        (state.balance < 0.0).then(|| now + Duration::from_secs_f64(-state.balance / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Moves `total` bytes in `chunk`-sized pieces through `bucket`, sleeping as told;
    /// returns the (virtual) time it took.
    async fn transfer(bucket: &Bucket, total: u64, chunk: u64, rate: u64) -> Duration {
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            if let Some(until) = bucket.charge(chunk, rate, Instant::now()) {
                tokio::time::sleep_until(until).await;
            }
            sent += chunk;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_is_paced_to_the_rate_after_a_one_second_burst() {
        let bucket = Bucket::default();
        // 10 MiB at 2 MiB/s: 2 MiB of burst, then 8 MiB at the rate = 4 s.
        let took = transfer(&bucket, 10 * MIB, MIB, 2 * MIB).await;
        assert_eq!(took, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn connections_of_one_user_share_the_rate() {
        let bucket = std::sync::Arc::new(Bucket::default());
        let (a, b) = tokio::join!(
            transfer(&bucket, 6 * MIB, MIB, 2 * MIB),
            transfer(&bucket, 6 * MIB, MIB, 2 * MIB),
        );
        // 12 MiB together at 2 MiB/s with 2 MiB of burst: 5 s, not 2 s each.
        assert_eq!(a.max(b), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn credit_earned_while_idle_is_capped_at_the_burst() {
        let bucket = Bucket::default();
        assert!(bucket.charge(MIB, MIB, Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(60)).await;
        // One minute idle earns one second's worth, not sixty.
        let took = transfer(&bucket, 3 * MIB, MIB, MIB).await;
        assert_eq!(took, Duration::from_secs(2));
    }

    #[test]
    fn rate_zero_is_no_cap() {
        let bucket = Bucket::default();
        assert!(bucket.charge(u64::MAX, 0, Instant::now()).is_none());
    }
}
