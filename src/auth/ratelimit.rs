//! Login rate limits, shared by every replica (their state is in
//! PostgreSQL: `store::ratelimit`). Three limits, chosen so that an attacker
//! elsewhere cannot lock a real user out (the lockout-as-denial-of-service of
//! Keycloak#26172, where failures from anywhere lock the account):
//!
//! - **per peer** (IPv6 by its /64): every attempt from one address, whatever
//!   the email; bounds one client's guessing across accounts.
//! - **per email and peer**: failed attempts for one email from one address;
//!   the tight limit on guessing one account, which only that address uses up.
//! - **per email**: failed attempts for one email from every address
//!   together, a looser ceiling against guessing spread over many addresses.
//!   An address that signed in to the email successfully lately is exempt,
//!   so a flood of failures from elsewhere does not lock out the user on
//!   their usual devices.
//!
//! A successful login gives back what it took from the two failure limits.
//! Password reset requests count against the same limits, as attempts.

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest as _, Sha256};

use super::peer::client_key;
use crate::domain::DomainError;
use crate::store::Store;
use crate::store::ratelimit::Bucket;

/// How long a successful login exempts its address from the email's limit.
pub const KNOWN_PEER_FOR: Duration = Duration::from_secs(30 * 86_400);

/// The limits; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed attempts per minute for one email from one address (the burst).
    pub per_email_and_peer: u32,
    /// Attempts per minute from one address (the burst).
    pub per_peer: u32,
    /// Failed attempts per hour for one email from every address not known
    /// to it (the burst).
    pub per_email_per_hour: u32,
}

/// Which limit refused an attempt, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: &'static str,
    pub retry_after: Duration,
}

/// An attempt let through: what to give back if it succeeds.
#[derive(Debug)]
pub struct Attempt {
    refundable: Vec<Bucket>,
    /// The email and address to remember as known, when they are not yet.
    remember: Option<[u8; 32]>,
}

/// Every this many successful logins, a replica deletes the limits' rows
/// that have run out.
const CLEAN_UP_EVERY: u64 = 64;

pub struct LoginLimiter {
    store: Store,
    limits: LoginLimits,
    successes: std::sync::atomic::AtomicU64,
}

impl LoginLimiter {
    pub fn new(store: Store, limits: LoginLimits) -> Self {
        Self {
            store,
            limits,
            successes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes an attempt for `email` from `peer` from every limit, or says
    /// which limit refuses it (as RESOURCE_EXHAUSTED).
    pub async fn admit(&self, email: &str, peer: Option<IpAddr>) -> Result<Attempt, DomainError> {
        let known_key = key(&["known", email, &peer_text(peer)]);
        let peer_known = peer.is_some() && self.store.is_known_peer(&known_key).await?;
        let mut buckets = Vec::with_capacity(3);
        if let Some(peer) = peer {
            let peer = client_key(peer).to_string();
            push(
                &mut buckets,
                "peer",
                key(&["peer", &peer]),
                60,
                self.limits.per_peer,
            );
            push(
                &mut buckets,
                "email_and_peer",
                key(&["email_and_peer", email, &peer]),
                60,
                self.limits.per_email_and_peer,
            );
        }
        if !peer_known {
            push(
                &mut buckets,
                "email",
                key(&["email", email]),
                3600,
                self.limits.per_email_per_hour,
            );
        }
        if let Some((bucket, retry_after)) = self.store.take_login_attempt(&buckets).await? {
            return Err(rate_limited(Limited {
                limit: bucket.name,
                retry_after,
            }));
        }
        buckets.retain(|bucket| bucket.name != "peer");
        Ok(Attempt {
            refundable: buckets,
            remember: (peer.is_some() && !peer_known).then_some(known_key),
        })
    }

    /// The attempt succeeded: gives back what it took from the failure
    /// limits and remembers its address as known to the email.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), DomainError> {
        self.store.refund_login_attempt(&attempt.refundable).await?;
        if let Some(known_key) = attempt.remember {
            let until = Utc::now()
                + chrono::Duration::from_std(KNOWN_PEER_FOR).unwrap_or(chrono::Duration::days(30));
            self.store.remember_peer(&known_key, until).await?;
        }
        let successes = self
            .successes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if successes % CLEAN_UP_EVERY == CLEAN_UP_EVERY - 1 {
            self.store.forget_spent_limits().await?;
        }
        Ok(())
    }
}

/// Adds a limit of `burst` attempts per `window_secs` (none when 0).
fn push(
    buckets: &mut Vec<Bucket>,
    name: &'static str,
    key: [u8; 32],
    window_secs: u64,
    burst: u32,
) {
    if burst == 0 {
        return;
    }
    buckets.push(Bucket {
        name,
        key,
        period: Duration::from_secs(window_secs) / burst,
        burst,
    });
}

fn peer_text(peer: Option<IpAddr>) -> String {
    peer.map(|peer| client_key(peer).to_string())
        .unwrap_or_default()
}

/// The key of a limit: SHA-256 of its parts, so that no email or address is
/// stored in the clear.
fn key(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// RESOURCE_EXHAUSTED with the limit that refused and when to retry.
fn rate_limited(limited: Limited) -> DomainError {
    DomainError::ResourceExhausted {
        reason: "LOGIN_RATE_LIMITED",
        message: format!(
            "too many attempts ({} limit): retry later",
            limited.limit.replace('_', " ")
        ),
        retry_after: limited.retry_after,
        metadata: vec![("limit", limited.limit.to_owned())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let text = |address: &str| peer_text(Some(address.parse().expect("address")));
        assert_eq!(text("2001:db8:1:2::1"), text("2001:db8:1:2:ffff::9"));
        assert_ne!(text("2001:db8:1:2::1"), text("2001:db8:1:3::1"));
        assert_eq!(text("192.0.2.1"), text("::ffff:192.0.2.1"));
    }

    #[test]
    fn keys_do_not_run_parts_together() {
        assert_ne!(key(&["email", "ab", "c"]), key(&["email", "a", "bc"]));
    }

    #[test]
    fn a_limit_of_zero_is_off_and_others_spread_over_their_window() {
        let mut buckets = Vec::new();
        push(&mut buckets, "peer", [0; 32], 60, 0);
        assert!(buckets.is_empty());
        push(&mut buckets, "peer", [0; 32], 60, 3);
        assert_eq!(buckets[0].period, Duration::from_secs(20));
        assert_eq!(buckets[0].burst, 3);
    }
}
