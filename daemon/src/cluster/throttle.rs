//! The failed-login throttle shared by several daemons: the same token buckets as the
//! local [`Throttle`](crate::accounts::Throttle) (per source address, per user name),
//! kept in the bucket `xfer_throttle` so that guesses spread over daemons add up.
//!
//! A bucket is one number, the unix time (ms) at which it is full again; a failure
//! pushes it one refill interval later, and a source or name is refused while it lies
//! more than `burst - 1` intervals ahead. Updates are compare-and-set. As locally, a
//! user name is only refused to a source that itself failed on it before (here: that
//! has more than a few failures of its own), so strangers cannot lock a user out.
//!
//! When NATS cannot be reached the local throttle alone applies (it always does too).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;

use super::Cluster;
use crate::accounts::{ThrottleConfig, Verdict};

/// The bucket.
pub const BUCKET: &str = "xfer_throttle";
/// Failures of one source before the name limit applies to it too.
const SOURCE_FAILURES_BEFORE_NAME_LIMIT: u64 = 3;

/// The shared throttle.
pub struct SharedThrottle {
    cluster: Arc<Cluster>,
    kv: kv::Store,
    config: Mutex<ThrottleConfig>,
}

/// One kind of bucket's limits.
#[derive(Clone, Copy)]
struct Rate {
    burst: u64,
    refill_ms: u64,
}

impl Rate {
    /// How long until an attempt is allowed, if it is not now.
    fn wait(self, full_at: u64, now: u64) -> Option<Duration> {
        let ahead = full_at.saturating_sub(now);
        let allowed = self.burst.saturating_sub(1) * self.refill_ms;
        (ahead > allowed).then(|| Duration::from_millis(ahead - allowed))
    }

    /// Failures counted in a bucket full at `full_at`.
    fn failures(self, full_at: u64, now: u64) -> u64 {
        full_at.saturating_sub(now).div_ceil(self.refill_ms.max(1))
    }
}

impl SharedThrottle {
    /// Opens the bucket; its entries live as long as the slowest bucket takes to refill.
    ///
    /// # Errors
    /// When JetStream cannot be reached or refuses.
    pub async fn open(
        cluster: Arc<Cluster>,
        config: ThrottleConfig,
    ) -> anyhow::Result<SharedThrottle> {
        let longest = (u64::from(config.source_burst) * config.source_refill_secs)
            .max(u64::from(config.user_burst) * config.user_refill_secs)
            .clamp(60, 365 * 24 * 3600);
        let kv = cluster
            .bucket(BUCKET, Duration::from_secs(longest), 1)
            .await?;
        Ok(SharedThrottle {
            cluster,
            kv,
            config: Mutex::new(config),
        })
    }

    /// Applies new limits (a config reload).
    pub fn reconfigure(&self, config: ThrottleConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn rates(&self) -> (Rate, Rate) {
        let c = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (
            Rate {
                burst: c.source_burst.into(),
                refill_ms: c.source_refill_secs.saturating_mul(1000),
            },
            Rate {
                burst: c.user_burst.into(),
                refill_ms: c.user_refill_secs.saturating_mul(1000),
            },
        )
    }

    /// Like [`Throttle::admit`](crate::accounts::Throttle::admit), across daemons: the
    /// verdict, and when allowed one failure reserved in both buckets (given back by
    /// [`SharedThrottle::refund`] on success). `Allow` when NATS cannot be reached.
    pub async fn admit(&self, source: IpAddr, user: &str) -> Verdict {
        if self.cluster.check().is_err() {
            return Verdict::Allow;
        }
        let (source_rate, user_rate) = self.rates();
        let (src_key, name_key) = (source_key(source), name_key(user));
        let now = crate::now_unix_ms();
        let result = async {
            let src = self.read(&src_key).await?;
            let name = self.read(&name_key).await?;
            if let Some(wait) = source_rate.wait(src.0, now) {
                return Ok(Verdict::Deny { retry_after: wait });
            }
            if source_rate.failures(src.0, now) > SOURCE_FAILURES_BEFORE_NAME_LIMIT
                && let Some(wait) = user_rate.wait(name.0, now)
            {
                return Ok(Verdict::Deny { retry_after: wait });
            }
            self.shift(&src_key, source_rate.refill_ms as i64).await?;
            self.shift(&name_key, user_rate.refill_ms as i64).await?;
            anyhow::Ok(Verdict::Allow)
        };
        match tokio::time::timeout(super::REQUEST_TIMEOUT, result).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared login throttle failed; the local one applies");
                Verdict::Allow
            }
            Err(_) => Verdict::Allow,
        }
    }

    /// Gives back the failure [`SharedThrottle::admit`] reserved (a login succeeded).
    pub async fn refund(&self, source: IpAddr, user: &str) {
        if self.cluster.check().is_err() {
            return;
        }
        let (source_rate, user_rate) = self.rates();
        let work = async {
            self.shift(&source_key(source), -(source_rate.refill_ms as i64))
                .await?;
            self.shift(&name_key(user), -(user_rate.refill_ms as i64))
                .await
        };
        if let Ok(Err(e)) = tokio::time::timeout(super::REQUEST_TIMEOUT, work).await {
            tracing::warn!(error = %e, "refunding a shared login reservation failed");
        }
    }

    /// A bucket's `full_at` and revision (0, 0 when absent).
    async fn read(&self, key: &str) -> anyhow::Result<(u64, u64)> {
        Ok(match self.kv.entry(key).await? {
            Some(e) if e.operation == kv::Operation::Put => (
                std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                e.revision,
            ),
            Some(e) => (0, e.revision),
            None => (0, 0),
        })
    }

    /// Moves a bucket's `full_at` by `delta_ms` from `max(full_at, now)`, with
    /// compare-and-set.
    async fn shift(&self, key: &str, delta_ms: i64) -> anyhow::Result<()> {
        for _ in 0..8 {
            let (full_at, revision) = self.read(key).await?;
            let now = crate::now_unix_ms();
            let base = full_at.max(now);
            let next = base.saturating_add_signed(delta_ms).max(now);
            let value = next.to_string().into();
            let written = if revision == 0 {
                self.kv
                    .create(key, value)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            } else {
                self.kv
                    .update(key, value, revision)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            };
            if written.is_ok() {
                return Ok(());
            }
        }
        anyhow::bail!("throttle entry kept changing")
    }
}

/// An IPv4 address, or an IPv6 /64, as the local throttle groups them.
fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("src.{}", crate::accounts::hex(&v4.octets())),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("src.{}", crate::accounts::hex(&v4.octets())),
            None => format!("src.{}", crate::accounts::hex(&v6.octets()[..8])),
        },
    }
}

/// Any name a peer sends (already truncated), as a key.
fn name_key(user: &str) -> String {
    format!("user.{}", crate::accounts::hex(user.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_after_its_burst() {
        let rate = Rate {
            burst: 3,
            refill_ms: 1000,
        };
        let now = 1_000_000;
        assert_eq!(rate.wait(0, now), None);
        assert_eq!(
            rate.wait(now + 2000, now),
            None,
            "two failures: a third try is allowed"
        );
        assert_eq!(
            rate.wait(now + 3000, now),
            Some(Duration::from_secs(1)),
            "three failures: refused until one is forgiven"
        );
        assert_eq!(rate.failures(now + 3000, now), 3);
    }
}
