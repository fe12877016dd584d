//! A token bucket: `burst` requests at once, then `per_sec` a second. One per
//! connection limits what it can make the server fan out.

use std::time::Instant;

/// A token bucket with an explicit clock, so it can be tested without sleeping.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            per_sec,
            burst: burst.max(1),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(self.per_sec))
            .min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sustained rate.
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Burst size.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0), "burst exhausted");
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(t1), "one token after half a second at 2/s");
        assert!(!b.take(t1));
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(t2));
        }
        assert!(!b.take(t2), "refill is capped at the burst");
    }
}
