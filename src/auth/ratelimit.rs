//! Login rate limits: token buckets per email and per peer address (IPv6 by
//! its /64), in the
//! memory of one replica (so with N replicas behind a balancer an attacker
//! gets up to N times the rate; the limits bound guessing, they do not count
//! exactly). The tables are bounded: when one is full of active buckets, new
//! keys are refused until some refill, rather than evicting a bucket that an
//! attacker could then start afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::peer::client_key;

/// The most keys one table holds (about 100 bytes each).
pub const MAX_KEYS: usize = 100_000;

/// Attempts per minute, also the burst; 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub per_email: u32,
    pub per_peer: u32,
}

/// Which limit refused an attempt, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: &'static str,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct LoginLimiter {
    per_email: Buckets,
    per_peer: Buckets,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            per_email: Buckets::new(limits.per_email, MAX_KEYS),
            per_peer: Buckets::new(limits.per_peer, MAX_KEYS),
        }
    }

    /// Takes one attempt from the peer's bucket, then from the email's.
    pub fn check(&self, email: &str, peer: Option<std::net::IpAddr>) -> Result<(), Limited> {
        let now = Instant::now();
        if let Some(peer) = peer {
            self.per_peer
                .take(&client_key(peer).to_string(), now)
                .map_err(|retry_after| Limited {
                    limit: "peer",
                    retry_after,
                })?;
        }
        self.per_email
            .take(email, now)
            .map_err(|retry_after| Limited {
                limit: "email",
                retry_after,
            })
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key: `per_minute` tokens refill per minute, up to
/// `per_minute`.
#[derive(Debug)]
struct Buckets {
    per_minute: u32,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    fn new(per_minute: u32, max_keys: usize) -> Self {
        Self {
            per_minute,
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn per_second(&self) -> f64 {
        self.capacity() / 60.0
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second()).min(self.capacity())
    }

    /// Takes a token, or says how long until one is there.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        // A poisoned lock only means another call panicked mid-update; the
        // counts stay usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Full buckets are as good as none: drop them.
            let capacity = self.capacity();
            buckets.retain(|_, bucket| self.refilled(bucket, now) < capacity);
            if buckets.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let capacity = self.capacity();
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.per_second()).max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let buckets = Buckets::new(3, 10);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take("a", start), Ok(()));
        }
        let retry = buckets.take("a", start).expect_err("the fourth is refused");
        assert!(retry <= Duration::from_secs(20) && retry > Duration::from_secs(19));
        // Another key has its own bucket.
        assert_eq!(buckets.take("b", start), Ok(()));
        // One token back after 20 s (3 per minute).
        assert_eq!(buckets.take("a", start + Duration::from_secs(20)), Ok(()));
        assert!(buckets.take("a", start + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let buckets = Buckets::new(0, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(buckets.take("a", now), Ok(()));
        }
        assert!(buckets.buckets.lock().expect("lock").is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_sheds_refilled_buckets() {
        let buckets = Buckets::new(1, 2);
        let now = Instant::now();
        assert_eq!(buckets.take("a", now), Ok(()));
        assert_eq!(buckets.take("b", now), Ok(()));
        // Full of active buckets: a new key waits.
        assert!(buckets.take("c", now).is_err());
        assert_eq!(buckets.buckets.lock().expect("lock").len(), 2);
        // A minute later both refilled: they make room.
        let later = now + Duration::from_secs(61);
        assert_eq!(buckets.take("c", later), Ok(()));
        assert!(buckets.buckets.lock().expect("lock").len() <= 2);
    }

    #[test]
    fn ipv6_peers_count_by_their_64() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_email: 0,
            per_peer: 2,
        });
        let peer = |text: &str| Some(text.parse().expect("address"));
        assert_eq!(limiter.check("a@x", peer("2001:db8:1:2::1")), Ok(()));
        assert_eq!(limiter.check("a@x", peer("2001:db8:1:2:ffff::9")), Ok(()));
        // A third address of the same /64 is the same client.
        assert_eq!(
            limiter
                .check("a@x", peer("2001:db8:1:2:abcd::7"))
                .map_err(|l| l.limit),
            Err("peer")
        );
        // The next /64 is another client.
        assert_eq!(limiter.check("a@x", peer("2001:db8:1:3::1")), Ok(()));
        // IPv4 mapped into IPv6 counts as the IPv4 address.
        assert_eq!(limiter.check("a@x", peer("192.0.2.1")), Ok(()));
        assert_eq!(limiter.check("a@x", peer("::ffff:192.0.2.1")), Ok(()));
        assert_eq!(
            limiter.check("a@x", peer("192.0.2.1")).map_err(|l| l.limit),
            Err("peer")
        );
    }

    #[test]
    fn the_peer_limit_comes_first() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_email: 5,
            per_peer: 2,
        });
        let peer = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        assert_eq!(limiter.check("a@x", peer), Ok(()));
        assert_eq!(limiter.check("b@x", peer), Ok(()));
        assert_eq!(limiter.check("c@x", peer).map_err(|l| l.limit), Err("peer"));
        // Without a peer address only the email counts.
        for _ in 0..4 {
            assert_eq!(limiter.check("a@x", None), Ok(()));
        }
        assert_eq!(
            limiter.check("a@x", None).map_err(|l| l.limit),
            Err("email")
        );
    }
}
