//! `--limit-rate RATE`: parsing (`500K`, `10M`, `1.5G`, binary units as in curl and
//! rsync) and a token bucket applied in the send and receive loops.

use std::time::{Duration, Instant};

use crate::error::UsageError;

/// Parses a rate in bytes per second: a number with an optional `K`, `M` or `G` suffix
/// (powers of 1024, case-insensitive, optionally followed by `B` or `iB`). `0` means
/// no limit, as for rsync's `--bwlimit`.
///
/// # Errors
/// [`UsageError`] for anything else.
pub fn parse_rate(s: &str) -> Result<Option<u64>, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid rate `{s}`: expected bytes per second, e.g. 500K, 10M or 1G"
        ))
    };
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = bytes.round() as u64;
    Ok((bytes > 0).then_some(bytes))
}

/// A token bucket: `rate` bytes per second on average, bursts of at most a quarter of a
/// second's worth. A transfer larger than the bucket goes into debt and waits it off,
/// so the long-run rate is exact whatever the chunk size.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter for `bytes_per_sec`, starting with a full bucket.
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = rate / 4.0;
        RateLimiter {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` bytes' worth of tokens at `now`; returns how long to wait before
    /// moving them.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// An optional limiter, for loops that may or may not be limited.
#[derive(Debug, Clone, Default)]
pub struct Throttle(Option<RateLimiter>);

impl Throttle {
    /// Limited to `rate` bytes per second, or unlimited.
    pub fn new(rate: Option<u64>) -> Self {
        Throttle(rate.map(|r| RateLimiter::new(r, Instant::now())))
    }

    /// Whether a limit is in force.
    pub fn is_limited(&self) -> bool {
        self.0.is_some()
    }

    /// How long to wait before moving `n` bytes (zero when unlimited).
    pub fn take(&mut self, n: u64) -> Duration {
        match &mut self.0 {
            Some(l) => l.take(n, Instant::now()),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_curl() {
        assert_eq!(parse_rate("1000").unwrap(), Some(1000));
        assert_eq!(parse_rate("500K").unwrap(), Some(500 * 1024));
        assert_eq!(parse_rate("500k").unwrap(), Some(500 * 1024));
        assert_eq!(parse_rate("10M").unwrap(), Some(10 << 20));
        assert_eq!(parse_rate("10MB").unwrap(), Some(10 << 20));
        assert_eq!(parse_rate("10MiB").unwrap(), Some(10 << 20));
        assert_eq!(parse_rate("1.5G").unwrap(), Some(3 << 29));
        assert_eq!(parse_rate("0").unwrap(), None);
        for bad in [
            "",
            "K",
            "-1",
            "1T",
            "abc",
            "1e9",
            "1..2M",
            "99999999999999999999G",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bucket_keeps_the_average_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1000, t0);
        // The burst (250 bytes) passes at once.
        assert_eq!(l.take(250, t0), Duration::ZERO);
        // 1000 more bytes at the same instant: one second of debt.
        assert_eq!(l.take(1000, t0), Duration::from_secs(1));
        // After waiting it off, the bucket is empty: 500 bytes cost half a second.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.take(500, t1), Duration::from_millis(500));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(l.take(250, t2), Duration::ZERO);
        let wait = l.take(1000, t2).as_secs_f64();
        assert!((wait - 1.0).abs() < 1e-9, "{wait}");
    }

    #[test]
    fn unlimited_never_waits() {
        let mut t = Throttle::new(None);
        assert!(!t.is_limited());
        assert_eq!(t.take(u64::MAX), Duration::ZERO);
    }
}
