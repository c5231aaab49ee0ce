//! Per-connection send rate limiting: a token bucket, plus a count of
//! consecutive rejections so that a client that keeps hammering after being
//! told to slow down is disconnected (close 1008).

use std::time::Instant;

/// What the limiter decided about one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: answer with an error, keep the connection.
    Reject,
    /// Over the rate for too long: close the connection.
    Disconnect,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last_refill: Instant,
    consecutive_rejections: u32,
    abuse_limit: u32,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate_per_sec`; after
    /// `abuse_limit` rejections in a row the verdict becomes `Disconnect`.
    pub fn new(rate_per_sec: f64, burst: u32, abuse_limit: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate_per_sec,
            burst,
            tokens: burst,
            last_refill: now,
            consecutive_rejections: 0,
            abuse_limit: abuse_limit.max(1),
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        self.last_refill = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.consecutive_rejections = 0;
            return Verdict::Allow;
        }
        self.consecutive_rejections += 1;
        if self.consecutive_rejections >= self.abuse_limit {
            Verdict::Disconnect
        } else {
            Verdict::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20.0, 40, 50, start);
        for _ in 0..40 {
            assert_eq!(bucket.check(start), Verdict::Allow);
        }
        assert_eq!(bucket.check(start), Verdict::Reject);
        // 100 ms later, two tokens (20/s) are back.
        let later = start + Duration::from_millis(100);
        assert_eq!(bucket.check(later), Verdict::Allow);
        assert_eq!(bucket.check(later), Verdict::Allow);
        assert_eq!(bucket.check(later), Verdict::Reject);
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(20.0, 5, 50, start);
        let later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(bucket.check(later), Verdict::Allow);
        }
        assert_eq!(bucket.check(later), Verdict::Reject);
    }

    #[test]
    fn persistent_abuse_disconnects_and_an_allowed_send_forgives() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 1, 3, start);
        assert_eq!(bucket.check(start), Verdict::Allow);
        assert_eq!(bucket.check(start), Verdict::Reject);
        assert_eq!(bucket.check(start), Verdict::Reject);
        let later = start + Duration::from_secs(1);
        assert_eq!(bucket.check(later), Verdict::Allow, "refilled");
        assert_eq!(bucket.check(later), Verdict::Reject);
        assert_eq!(bucket.check(later), Verdict::Reject);
        assert_eq!(bucket.check(later), Verdict::Disconnect);
    }
}
