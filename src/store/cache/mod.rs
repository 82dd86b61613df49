//! The replica-local cache of what the per-call check reads (users,
//! organisations, API keys) and of the keys that verify playback tokens, and
//! the protocol that keeps it from ever
//! allowing a revoked credential.
//!
//! - Every change of a user, an organisation or a playback signing key
//!   notifies every replica (a trigger, channel `usermgmt_cache`, payload
//!   `org:<id>`, both ids when a row moves; `services` for registered
//!   services; `all` after a `TRUNCATE`); a replica evicts the entries
//!   concerned when the notification arrives.
//! - A replica trusts its cache only for [`TRUST`] after sending a heartbeat
//!   notification that has come back to it. PostgreSQL delivers the
//!   notifications of one listener in commit order, so by then every change
//!   committed before the heartbeat has been evicted. A replica that loses its
//!   listener, or falls behind, stops trusting its cache within [`TRUST`].
//! - A writer, after its commit, sends a probe and waits until every replica
//!   with a live lease has acknowledged it (so has evicted), or until every
//!   lease it could wait for has run out ([`MAX_SETTLE`]): when the writer's
//!   call returns, no replica serves the old state.
//! - What a read that started before an eviction puts in the cache is never
//!   used (the epoch guard: entries carry the eviction sequence number their
//!   read began at, see [`Stamps`]), so an eviction is never undone by a
//!   slow read.
//! - No entry is used longer than the cache's maximum age after the read that
//!   filled it began: the backstop for a change whose trigger did not fire
//!   (disabled by `ALTER TABLE`).
//!
//! Here: the maps and their entries. The epoch guard is in `stamps.rs`, the
//! listener (notifications, heartbeats, the lease, acknowledgements) in
//! `listener.rs`, the writer's half (probe, wait for acknowledgements) in
//! `settle.rs`.

mod listener;
mod settle;
mod stamps;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub use listener::maintain;
pub use stamps::Epoch;
use stamps::Stamps;

use super::models::PublicKeyRow;
use super::stats::{self, CacheKind};
use crate::bounded_cache::{CountedCache, ENTRY_OVERHEAD};
use crate::domain::user::{Organisation, User};

pub const CHANNEL: &str = "usermgmt_cache";
/// How often a replica sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// How long a replica trusts its cache after sending a heartbeat that came back.
pub const TRUST: Duration = Duration::from_millis(800);
/// The lease a heartbeat writes: longer than [`TRUST`], so that a writer that
/// finds a lease run out knows the replica has stopped trusting its cache.
pub const LEASE: Duration = Duration::from_secs(1);
/// The longest a writer waits for acknowledgements.
pub const MAX_SETTLE: Duration = Duration::from_millis(1250);
/// A writer counts a replica that has not acknowledged as gone only when its
/// lease ended longer ago than this. Leases are on the database's clock, trust
/// on each replica's monotonic clock: a lease that ended only just (the
/// database's clock stepped forward, the replica was suspended) may belong
/// to a replica that still trusts its cache, so the writer waits out its own
/// deadline for it, which is on the writer's monotonic clock.
pub const GONE_AFTER: Duration = MAX_SETTLE.saturating_add(Duration::from_secs(5));
/// How much memory the cache may hold, and for how long an entry is used.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// How long after the read that filled it began an entry may be used.
    pub max_age: Duration,
    /// The estimated bytes of every entry together: three eighths for
    /// users, five sixteenths for sessions, a sixteenth for each other kind.
    pub max_bytes: u64,
}

/// The cache of one replica. Lookups take no lock of the cache's own: each
/// map is a sharded concurrent cache (quick_cache) bounded by weight, and an
/// eviction by notification only advances a stamp, so that a lookup refuses
/// every entry filled by a read that began before it.
pub struct Cache {
    enabled: bool,
    max_age: Duration,
    replica_id: Uuid,
    origin: Instant,
    /// Nanoseconds since `origin` until which the cache may be used; 0: never.
    trusted_until: AtomicU64,
    stamps: Stamps,
    users: Map<(Uuid, Uuid), Arc<User>>,
    /// Live sessions by id, as the per-call check needs them.
    sessions: Map<Uuid, SessionCheck>,
    /// Unrevoked personal API tokens by the SHA-256 of their secret.
    api_tokens: Map<[u8; 32], ApiTokenCheck>,
    organisations: Map<Uuid, Arc<Organisation>>,
    api_keys: Map<[u8; 32], Uuid>,
    /// Registered internal services: key hash → name.
    services: Map<[u8; 32], Arc<str>>,
    /// Playback signing keys by kid, with their retirement and revocation.
    playback_keys: Map<Arc<str>, Arc<PublicKeyRow>>,
}

/// The bytes of users: three eighths of the cache.
fn users_share(max_bytes: u64) -> u64 {
    max_bytes / 8 * 3
}

/// The bytes of sessions: five sixteenths of the cache.
fn sessions_share(max_bytes: u64) -> u64 {
    max_bytes / 16 * 5
}

/// A cached value with the stamp and instant of the read that found it.
#[derive(Clone)]
struct Slot<T> {
    value: T,
    stamp: u64,
    read_at: Instant,
    /// The estimated bytes this entry holds, key and bookkeeping included.
    weight: u32,
}

/// Each entry weighs what it estimates for itself.
#[derive(Clone, Copy)]
struct SlotWeight;

impl<K, T> quick_cache::Weighter<K, Slot<T>> for SlotWeight {
    fn weight(&self, _key: &K, slot: &Slot<T>) -> u64 {
        u64::from(slot.weight)
    }
}

/// What the maps expect their typical entries to hold on the heap, to size
/// their tables (the bounds are in bytes whatever the entries hold).
const TYPICAL_EMAIL_BYTES: usize = 32;
const TYPICAL_ORGANISATION_HEAP_BYTES: usize = 96;
const TYPICAL_PLAYBACK_KEY_HEAP_BYTES: usize = 96;

/// One kind of the replica cache's entries.
struct Map<K, T>(CountedCache<K, Slot<T>, SlotWeight, CacheKind>);

impl<K, T> Map<K, T>
where
    K: Eq + std::hash::Hash + Clone,
    T: Clone,
{
    fn new(kind: CacheKind, max_bytes: u64, typical_weight: u32) -> Self {
        Self(CountedCache::new(
            kind,
            max_bytes,
            u64::from(typical_weight),
            SlotWeight,
        ))
    }

    /// The entry for `key` when the cache is `trusted` and `valid` holds for
    /// the entry (retired or too old ones are removed); counts a hit or a miss.
    fn get<Q>(&self, trusted: bool, key: &Q, valid: impl Fn(&Slot<T>) -> bool) -> Option<T>
    where
        Q: std::hash::Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        if !trusted {
            self.0.miss();
            return None;
        }
        self.0.get(key, valid).map(|slot| slot.value)
    }

    fn insert(&self, key: K, slot: Slot<T>) {
        self.0.insert(key, slot);
    }

    fn clear(&self) {
        self.0.clear();
    }
}

impl Cache {
    pub fn disabled() -> Self {
        Self::new(
            false,
            CacheLimits {
                max_age: Duration::ZERO,
                max_bytes: 0,
            },
        )
    }

    /// A cache within `limits`.
    pub fn enabled(limits: CacheLimits) -> Self {
        Self::new(true, limits)
    }

    fn new(enabled: bool, limits: CacheLimits) -> Self {
        let users_bytes = users_share(limits.max_bytes);
        let other_bytes = limits.max_bytes / 16;
        Self {
            enabled,
            max_age: limits.max_age,
            replica_id: Uuid::new_v4(),
            origin: Instant::now(),
            trusted_until: AtomicU64::new(0),
            stamps: Stamps::new(),
            users: Map::new(
                CacheKind::Users,
                users_bytes,
                weight_of::<(Uuid, Uuid), User>(TYPICAL_EMAIL_BYTES),
            ),
            sessions: Map::new(
                CacheKind::Sessions,
                sessions_share(limits.max_bytes),
                session_weight(),
            ),
            api_tokens: Map::new(CacheKind::ApiTokens, other_bytes, api_token_weight()),
            organisations: Map::new(
                CacheKind::Organisations,
                other_bytes,
                weight_of::<Uuid, Organisation>(TYPICAL_ORGANISATION_HEAP_BYTES),
            ),
            api_keys: Map::new(
                CacheKind::ApiKeys,
                other_bytes,
                weight_of::<[u8; 32], ()>(0),
            ),
            services: Map::new(
                CacheKind::Services,
                other_bytes,
                weight_of::<[u8; 32], Arc<str>>(16),
            ),
            playback_keys: Map::new(
                CacheKind::PlaybackKeys,
                other_bytes,
                weight_of::<Arc<str>, PublicKeyRow>(TYPICAL_PLAYBACK_KEY_HEAP_BYTES),
            ),
        }
    }

    pub fn replica_id(&self) -> Uuid {
        self.replica_id
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn trusted(&self) -> bool {
        self.enabled && self.now_nanos() < self.trusted_until.load(Ordering::Acquire)
    }

    /// Trusts the cache until `TRUST` after `sent`, the time the heartbeat
    /// that just came back was sent.
    fn trust_from(&self, sent: Instant) {
        let until = (sent + TRUST).saturating_duration_since(self.origin);
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.trusted_until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Stops trusting and forgets everything (the listener was lost).
    fn distrust(&self) {
        self.trusted_until.store(0, Ordering::Release);
        self.clear();
    }

    /// Whether `slot` is young enough to be used.
    fn fresh<T>(&self, slot: &Slot<T>) -> bool {
        slot.read_at.elapsed() < self.max_age
    }

    pub fn clear(&self) {
        self.stamps.retire_all();
        stats::record_cache_invalidation("all");
        self.users.clear();
        self.sessions.clear();
        self.api_tokens.clear();
        self.organisations.clear();
        self.api_keys.clear();
        self.services.clear();
        self.playback_keys.clear();
    }

    /// Forgets the registered services (one was registered or revoked).
    pub fn evict_services(&self) {
        self.stamps.retire_services();
        stats::record_cache_invalidation("services");
    }

    pub fn service(&self, hash: &[u8]) -> Option<String> {
        let hash: [u8; 32] = hash.try_into().ok()?;
        self.services
            .get(self.trusted(), &hash, |slot| {
                self.fresh(slot) && self.stamps.service_entry_valid(slot.stamp)
            })
            .map(|name| name.to_string())
    }

    pub fn put_service(&self, epoch: Epoch, hash: &[u8], name: &str) {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return;
        };
        self.fill(epoch, |stamp, read_at| {
            let weight = weight_of::<[u8; 32], Arc<str>>(name.len());
            self.services
                .insert(hash, slot(Arc::from(name), stamp, read_at, weight));
        });
    }

    pub fn evict_organisation(&self, organisation_id: Uuid) {
        self.stamps.retire_organisation(organisation_id);
        stats::record_cache_invalidation("organisation");
    }

    /// Call before reading what may be cached afterwards.
    pub fn epoch(&self) -> Epoch {
        if self.trusted() {
            Epoch(Some((self.stamps.current(), Instant::now())))
        } else {
            Epoch(None)
        }
    }

    fn fill(&self, epoch: Epoch, fill: impl FnOnce(u64, Instant)) {
        let Epoch(Some((stamp, read_at))) = epoch else {
            return;
        };
        if self.trusted() {
            fill(stamp, read_at);
        }
    }

    pub fn user(&self, organisation_id: Uuid, user_id: Uuid) -> Option<Arc<User>> {
        self.users
            .get(self.trusted(), &(organisation_id, user_id), |slot| {
                self.fresh(slot)
                    && self
                        .stamps
                        .organisation_entry_valid(slot.stamp, organisation_id)
            })
    }

    pub fn put_user(&self, epoch: Epoch, user: &Arc<User>) {
        self.fill(epoch, |stamp, read_at| {
            let weight = weight_of::<(Uuid, Uuid), User>(user.email.len());
            let key = (user.organisation_id, user.id);
            self.users
                .insert(key, slot(Arc::clone(user), stamp, read_at, weight));
        });
    }

    /// A live session, while it is live: an entry whose session has expired
    /// is not used (it is read again, in case it was refreshed).
    pub fn session(&self, organisation_id: Uuid, session_id: Uuid) -> Option<SessionCheck> {
        let now = chrono::Utc::now();
        self.sessions.get(self.trusted(), &session_id, |slot| {
            slot.value.organisation_id == organisation_id
                && slot.value.expires_at > now
                && self.fresh(slot)
                && self
                    .stamps
                    .organisation_entry_valid(slot.stamp, organisation_id)
        })
    }

    pub fn put_session(&self, epoch: Epoch, session_id: Uuid, check: SessionCheck) {
        self.fill(epoch, |stamp, read_at| {
            self.sessions
                .insert(session_id, slot(check, stamp, read_at, session_weight()));
        });
    }

    /// An unrevoked API token by its hash, while it is unexpired.
    pub fn api_token(&self, hash: &[u8]) -> Option<ApiTokenCheck> {
        let hash: [u8; 32] = hash.try_into().ok()?;
        let now = chrono::Utc::now();
        self.api_tokens.get(self.trusted(), &hash, |slot| {
            slot.value.expires_at > now
                && self.fresh(slot)
                && self
                    .stamps
                    .organisation_entry_valid(slot.stamp, slot.value.organisation_id)
        })
    }

    pub fn put_api_token(&self, epoch: Epoch, hash: &[u8], check: ApiTokenCheck) {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return;
        };
        self.fill(epoch, |stamp, read_at| {
            self.api_tokens
                .insert(hash, slot(check, stamp, read_at, api_token_weight()));
        });
    }

    pub fn organisation(&self, organisation_id: Uuid) -> Option<Arc<Organisation>> {
        self.organisations
            .get(self.trusted(), &organisation_id, |slot| {
                self.fresh(slot)
                    && self
                        .stamps
                        .organisation_entry_valid(slot.stamp, organisation_id)
            })
    }

    pub fn put_organisation(&self, epoch: Epoch, organisation: &Arc<Organisation>) {
        self.fill(epoch, |stamp, read_at| {
            let heap = organisation.name.len()
                + organisation.role_counts.len()
                    * std::mem::size_of::<(crate::domain::Role, i64)>()
                + organisation
                    .api_key_fingerprint
                    .as_ref()
                    .map_or(0, String::len);
            let weight = weight_of::<Uuid, Organisation>(heap);
            self.organisations.insert(
                organisation.id,
                slot(Arc::clone(organisation), stamp, read_at, weight),
            );
        });
    }

    pub fn api_key(&self, hash: &[u8]) -> Option<Uuid> {
        let hash: [u8; 32] = hash.try_into().ok()?;
        self.api_keys.get(self.trusted(), &hash, |slot| {
            self.fresh(slot) && self.stamps.organisation_entry_valid(slot.stamp, slot.value)
        })
    }

    pub fn put_api_key(&self, epoch: Epoch, hash: &[u8], organisation_id: Uuid) {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return;
        };
        self.fill(epoch, |stamp, read_at| {
            let weight = weight_of::<[u8; 32], ()>(0);
            self.api_keys
                .insert(hash, slot(organisation_id, stamp, read_at, weight));
        });
    }

    pub fn playback_key(&self, kid: &str) -> Option<Arc<PublicKeyRow>> {
        self.playback_keys.get(self.trusted(), kid, |slot| {
            self.fresh(slot)
                && self
                    .stamps
                    .organisation_entry_valid(slot.stamp, slot.value.organisation_id)
        })
    }

    pub fn put_playback_key(&self, epoch: Epoch, key: &Arc<PublicKeyRow>) {
        self.fill(epoch, |stamp, read_at| {
            let heap = 2 * key.kid.len() + key.alg.len() + key.public_key.len();
            let weight = weight_of::<Arc<str>, PublicKeyRow>(heap);
            self.playback_keys.insert(
                Arc::from(key.kid.as_str()),
                slot(Arc::clone(key), stamp, read_at, weight),
            );
        });
    }
}

impl super::Store {
    /// A read of what the cache holds, the one way every cached read goes:
    /// the entry `cached` finds when the cache may answer; else `read` from
    /// the database, whose answer fills the cache through `fill`, stamped
    /// with the epoch taken before the read began (so a read that straddles
    /// an eviction fills nothing that is used).
    pub(crate) async fn read_through<T>(
        &self,
        cached: impl FnOnce(&Cache) -> Option<T>,
        read: impl AsyncFnOnce() -> Result<Option<T>, crate::domain::DomainError>,
        fill: impl FnOnce(&Cache, Epoch, &T),
    ) -> Result<Option<T>, crate::domain::DomainError> {
        if let Some(found) = cached(&self.cache) {
            return Ok(Some(found));
        }
        let epoch = self.cache.epoch();
        let found = read().await?;
        if let Some(found) = &found {
            fill(&self.cache, epoch, found);
        }
        Ok(found)
    }
}

/// What the per-call check needs of a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCheck {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub token_key: Uuid,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What the per-call check needs of an unrevoked personal API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTokenCheck {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub token_key: Uuid,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Empty: the whole role.
    pub permissions: crate::domain::permission::PermissionSet,
}

fn api_token_weight() -> u32 {
    let bytes = 32 + std::mem::size_of::<Slot<ApiTokenCheck>>() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn session_weight() -> u32 {
    let bytes =
        std::mem::size_of::<Uuid>() + std::mem::size_of::<Slot<SessionCheck>>() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn slot<T>(value: T, stamp: u64, read_at: Instant, weight: u32) -> Slot<T> {
    Slot {
        value,
        stamp,
        read_at,
        weight,
    }
}

/// The estimated bytes of an entry whose key is a `K` and whose value a
/// shared `V` holding `heap` more bytes of its own.
fn weight_of<K, V>(heap: usize) -> u32 {
    let bytes = std::mem::size_of::<K>()
        + std::mem::size_of::<Slot<Arc<V>>>()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<V>()
        + heap
        + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Role;

    fn cache(max_age: Duration) -> Cache {
        Cache::enabled(CacheLimits {
            max_age,
            max_bytes: 1 << 20,
        })
    }

    fn user(org: Uuid) -> Arc<User> {
        Arc::new(User {
            id: Uuid::now_v7(),
            organisation_id: org,
            email: "a@example.com".into(),
            role: Role::NanoUser,
            token_key: Uuid::new_v4(),
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            last_login_at: None,
            state: crate::domain::user::UserState::Active,
        })
    }

    #[test]
    fn an_untrusted_cache_answers_nothing_and_keeps_nothing() {
        let cache = cache(Duration::from_secs(10));
        let u = user(Uuid::now_v7());
        cache.put_user(cache.epoch(), &u);
        assert_eq!(cache.user(u.organisation_id, u.id), None);
        cache.trust_from(Instant::now());
        cache.put_user(cache.epoch(), &u);
        assert_eq!(cache.user(u.organisation_id, u.id), Some(u.clone()));
        cache.distrust();
        assert_eq!(cache.user(u.organisation_id, u.id), None);
    }

    #[test]
    fn a_read_that_straddles_an_eviction_does_not_fill_the_cache() {
        let cache = cache(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let u = user(Uuid::now_v7());
        let before_read = cache.epoch();
        cache.evict_organisation(u.organisation_id);
        cache.put_user(before_read, &u);
        assert_eq!(cache.user(u.organisation_id, u.id), None);
    }

    #[test]
    fn a_retired_entry_found_by_a_lookup_is_removed() {
        let cache = cache(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let u = user(Uuid::now_v7());
        cache.put_user(cache.epoch(), &u);
        assert_eq!(cache.users.0.len(), 1);
        cache.evict_organisation(u.organisation_id);
        assert_eq!(cache.users.0.len(), 1, "eviction only advances a stamp");
        assert_eq!(cache.user(u.organisation_id, u.id), None);
        assert_eq!(cache.users.0.len(), 0, "the lookup removed it");
    }

    #[test]
    fn eviction_is_per_organisation() {
        let cache = cache(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let a = user(Uuid::now_v7());
        let b = user(organisation_on_another_stripe(a.organisation_id));
        cache.put_user(cache.epoch(), &a);
        cache.put_user(cache.epoch(), &b);
        cache.put_api_key(cache.epoch(), b"key-a", a.organisation_id);
        cache.evict_organisation(a.organisation_id);
        assert_eq!(cache.user(a.organisation_id, a.id), None);
        assert_eq!(cache.api_key(b"key-a"), None);
        assert_eq!(cache.user(b.organisation_id, b.id), Some(b));
    }

    fn organisation_on_another_stripe(other: Uuid) -> Uuid {
        let stripe = |id: Uuid| id.as_u64_pair().1 % stamps::STRIPES as u64;
        loop {
            let id = Uuid::now_v7();
            if stripe(id) != stripe(other) {
                return id;
            }
        }
    }

    #[test]
    fn a_full_cache_stays_within_its_bytes_and_keeps_the_users_in_use() {
        let cache = cache(Duration::from_secs(60));
        cache.trust_from(Instant::now());
        let org = Uuid::now_v7();
        let hot = user(org);
        cache.put_user(cache.epoch(), &hot);
        let per_user = u64::from(weight_of::<(Uuid, Uuid), User>(hot.email.len()));
        let fits = users_share(1 << 20) / per_user;
        for _ in 0..fits * 3 {
            cache.put_user(cache.epoch(), &user(org));
            assert_eq!(cache.user(org, hot.id), Some(hot.clone()));
        }
        let held = cache.users.0.weight();
        assert!(
            held <= users_share(1 << 20) + per_user * 64,
            "{held} bytes held"
        );
        assert!(
            cache.users.0.len() as u64 >= fits * 9 / 10,
            "no clear-all: the cache stays full"
        );
    }

    #[test]
    fn an_entry_older_than_the_maximum_age_is_not_used() {
        let max_age = Duration::from_secs(10);
        let cache = cache(max_age);
        cache.trust_from(Instant::now());
        let u = user(Uuid::now_v7());
        let Epoch(Some((epoch, _))) = cache.epoch() else {
            panic!("a trusted cache has an epoch");
        };
        let read_long_ago = Epoch(Some((epoch, Instant::now() - max_age)));
        cache.put_user(read_long_ago, &u);
        cache.put_api_key(read_long_ago, b"key", u.organisation_id);
        assert_eq!(cache.user(u.organisation_id, u.id), None);
        assert_eq!(cache.api_key(b"key"), None);
        cache.put_user(cache.epoch(), &u);
        assert_eq!(cache.user(u.organisation_id, u.id), Some(u));
    }

    #[test]
    fn playback_keys_are_evicted_with_their_organisation() {
        let cache = cache(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let org = Uuid::now_v7();
        let key = Arc::new(PublicKeyRow {
            kid: "pbk_1".into(),
            organisation_id: org,
            alg: "EdDSA".into(),
            public_key: vec![0; 32],
            created_at: Utc::now(),
            retired_at: None,
            verify_until: None,
            revoked_at: None,
        });
        cache.put_playback_key(cache.epoch(), &key);
        assert!(cache.playback_key("pbk_1").is_some());
        cache.evict_organisation(Uuid::now_v7());
        assert!(cache.playback_key("pbk_1").is_some());
        cache.evict_organisation(org);
        assert!(cache.playback_key("pbk_1").is_none());
    }

    #[test]
    fn trust_runs_out() {
        let cache = cache(Duration::from_secs(10));
        cache.trust_from(Instant::now() - TRUST - Duration::from_millis(1));
        assert!(!cache.trusted());
        assert!(!Cache::disabled().trusted());
    }
}
