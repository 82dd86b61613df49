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
//! A password change or reset ends every exemption of the email (the
//! addresses that knew the old password are limited like any other).
//!
//! Password reset requests have limits of their own, per peer and per
//! email, so that a flood of them neither spends a user's login limits
//! (which would lock the user out) nor goes unbounded.

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
    /// Password reset requests per minute from one address (the burst).
    pub resets_per_peer: u32,
    /// Password reset requests per hour for one email from every address
    /// together (the burst).
    pub resets_per_email_per_hour: u32,
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
    remember: Option<KnownPeer>,
}

/// An address known to an email: its key, and the key of the email, by
/// which a password change or reset forgets every address of the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    pub key: [u8; 32],
    pub email_key: [u8; 32],
}

/// What a password change or reset does to the email's known addresses:
/// forgets every one, then (a change) remembers the address that made it,
/// which knows the new password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPassword {
    pub email_key: [u8; 32],
    pub keep: Option<(KnownPeer, chrono::DateTime<Utc>)>,
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
        let known = known_peer(email, peer);
        let peer_known = peer.is_some() && self.store.is_known_peer(&known.key).await?;
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
            return Err(rate_limited(
                LOGIN_RATE_LIMITED,
                Limited {
                    limit: bucket.name,
                    retry_after,
                },
            ));
        }
        buckets.retain(|bucket| bucket.name != "peer");
        Ok(Attempt {
            refundable: buckets,
            remember: (peer.is_some() && !peer_known).then_some(known),
        })
    }

    /// Takes a password reset request for `email` from `peer` from the
    /// resets' own limits, or says which refuses it (as RESOURCE_EXHAUSTED
    /// `PASSWORD_RESET_RATE_LIMITED`). A request takes nothing from the login
    /// limits.
    pub async fn admit_reset(&self, email: &str, peer: Option<IpAddr>) -> Result<(), DomainError> {
        let mut buckets = Vec::with_capacity(2);
        if let Some(peer) = peer {
            let peer = client_key(peer).to_string();
            push(
                &mut buckets,
                "peer",
                key(&["reset_peer", &peer]),
                60,
                self.limits.resets_per_peer,
            );
        }
        push(
            &mut buckets,
            "email",
            key(&["reset_email", email]),
            3600,
            self.limits.resets_per_email_per_hour,
        );
        match self.store.take_login_attempt(&buckets).await? {
            None => Ok(()),
            Some((bucket, retry_after)) => Err(rate_limited(
                PASSWORD_RESET_RATE_LIMITED,
                Limited {
                    limit: bucket.name,
                    retry_after,
                },
            )),
        }
    }

    /// The attempt succeeded: gives back what it took from the failure
    /// limits and remembers its address as known to the email.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), DomainError> {
        self.passed(&attempt).await?;
        if let Some(known) = attempt.remember {
            self.store
                .remember_peer(&known.key, &known.email_key, known_until())
                .await?;
        }
        Ok(())
    }

    /// The attempt proved the password (a password change's current one):
    /// gives back what it took from the failure limits, remembering nothing
    /// (the change itself decides which addresses stay known:
    /// [`Self::new_password`]).
    pub async fn passed(&self, attempt: &Attempt) -> Result<(), DomainError> {
        self.store.refund_login_attempt(&attempt.refundable).await?;
        let successes = self
            .successes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if successes % CLEAN_UP_EVERY == CLEAN_UP_EVERY - 1 {
            self.store.forget_spent_limits().await?;
        }
        Ok(())
    }

    /// What a new password of `email` does to its known addresses, for the
    /// change's transaction (`store::ratelimit::new_password`): every one
    /// is forgotten; `kept` (the address that changed the password, which
    /// knows the new one) is remembered again.
    pub fn new_password(&self, email: &str, kept: Option<IpAddr>) -> NewPassword {
        NewPassword {
            email_key: email_key(email),
            keep: kept.map(|peer| (known_peer(email, Some(peer)), known_until())),
        }
    }
}

/// The key of `email`'s known addresses and of the email itself.
fn known_peer(email: &str, peer: Option<IpAddr>) -> KnownPeer {
    KnownPeer {
        key: key(&["known", email, &peer_text(peer)]),
        email_key: email_key(email),
    }
}

fn email_key(email: &str) -> [u8; 32] {
    key(&["known_email", email])
}

/// Until when an address that signs in now stays known.
fn known_until() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(KNOWN_PEER_FOR).unwrap_or(chrono::Duration::days(30))
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

const LOGIN_RATE_LIMITED: &str = "LOGIN_RATE_LIMITED";
const PASSWORD_RESET_RATE_LIMITED: &str = "PASSWORD_RESET_RATE_LIMITED";

/// RESOURCE_EXHAUSTED with the limit that refused and when to retry.
fn rate_limited(reason: &'static str, limited: Limited) -> DomainError {
    let what = if reason == PASSWORD_RESET_RATE_LIMITED {
        "password reset requests"
    } else {
        "attempts"
    };
    DomainError::ResourceExhausted {
        reason,
        message: format!(
            "too many {what} ({} limit): retry later",
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
    fn resets_and_logins_count_in_separate_buckets_and_known_peers_by_their_email() {
        let peer = peer_text(Some("192.0.2.1".parse().expect("address")));
        assert_ne!(key(&["reset_peer", &peer]), key(&["peer", &peer]));
        assert_ne!(key(&["reset_email", "a@b.c"]), key(&["email", "a@b.c"]));
        let here = known_peer("a@b.c", Some("192.0.2.1".parse().expect("address")));
        let there = known_peer("a@b.c", Some("192.0.2.2".parse().expect("address")));
        assert_ne!(here.key, there.key);
        assert_eq!(here.email_key, there.email_key);
        assert_ne!(here.email_key, known_peer("x@b.c", None).email_key);
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
