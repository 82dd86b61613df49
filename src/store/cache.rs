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
//! - A read that started before an eviction does not fill the cache (the
//!   epoch guard), so an eviction is never undone by a slow read.
//! - No entry is used longer than the cache's maximum age after the read that
//!   filled it began: the backstop for a change whose trigger did not fire
//!   (disabled by `ALTER TABLE`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::models::PublicKeyRow;
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
/// Past this many users, the cache starts over (bounds the memory).
const MAX_USERS: usize = 50_000;

/// The cache of one replica.
pub struct Cache {
    enabled: bool,
    /// How long after the read that filled it began an entry may be used.
    max_age: Duration,
    replica_id: Uuid,
    origin: Instant,
    /// Nanoseconds since `origin` until which the cache may be used; 0: never.
    trusted_until: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every eviction: a read that began in an older epoch may
    /// have read what was just evicted, so it must not fill the cache.
    epoch: u64,
    users: HashMap<(Uuid, Uuid), Entry<Arc<User>>>,
    organisations: HashMap<Uuid, Entry<Arc<Organisation>>>,
    api_keys: HashMap<Vec<u8>, Entry<Uuid>>,
    /// Registered internal services: key hash → name.
    services: HashMap<Vec<u8>, Entry<String>>,
    /// Playback signing keys by kid, with their retirement and revocation.
    playback_keys: HashMap<String, Entry<Arc<PublicKeyRow>>>,
}

/// A cached value with the instant the read that found it began.
struct Entry<T> {
    value: T,
    read_at: Instant,
}

/// The epoch a read began in and when, when the cache may be filled at all.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Option<(u64, Instant)>);

impl Cache {
    pub fn disabled() -> Self {
        Self::new(false, Duration::ZERO)
    }

    /// A cache whose entries are used at most `max_age` after their read began.
    pub fn enabled(max_age: Duration) -> Self {
        Self::new(true, max_age)
    }

    fn new(enabled: bool, max_age: Duration) -> Self {
        Self {
            enabled,
            max_age,
            replica_id: Uuid::new_v4(),
            origin: Instant::now(),
            trusted_until: AtomicU64::new(0),
            state: Mutex::new(State::default()),
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

    /// The value of `entry` unless it is older than the maximum age.
    fn fresh<T: Clone>(&self, entry: Option<&Entry<T>>) -> Option<T> {
        entry
            .filter(|entry| entry.read_at.elapsed() < self.max_age)
            .map(|entry| entry.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters: at worst an entry is missing.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn clear(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.users.clear();
        state.organisations.clear();
        state.api_keys.clear();
        state.services.clear();
        state.playback_keys.clear();
    }

    /// Forgets the registered services (one was registered or revoked).
    pub fn evict_services(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.services.clear();
    }

    pub fn service(&self, hash: &[u8]) -> Option<String> {
        if !self.trusted() {
            return None;
        }
        self.fresh(self.lock().services.get(hash))
    }

    pub fn put_service(&self, epoch: Epoch, hash: &[u8], name: &str) {
        self.fill(epoch, |state, read_at| {
            let entry = Entry {
                value: name.to_owned(),
                read_at,
            };
            state.services.insert(hash.to_vec(), entry);
        });
    }

    pub fn evict_organisation(&self, organisation_id: Uuid) {
        let mut state = self.lock();
        state.epoch += 1;
        state.users.retain(|(org, _), _| *org != organisation_id);
        state.organisations.remove(&organisation_id);
        state.api_keys.retain(|_, org| org.value != organisation_id);
        state
            .playback_keys
            .retain(|_, key| key.value.organisation_id != organisation_id);
    }

    /// Call before reading what may be cached afterwards.
    pub fn epoch(&self) -> Epoch {
        if self.trusted() {
            Epoch(Some((self.lock().epoch, Instant::now())))
        } else {
            Epoch(None)
        }
    }

    fn fill(&self, epoch: Epoch, fill: impl FnOnce(&mut State, Instant)) {
        let Epoch(Some((epoch, read_at))) = epoch else {
            return;
        };
        let mut state = self.lock();
        if state.epoch == epoch && self.trusted() {
            fill(&mut state, read_at);
        }
    }

    pub fn user(&self, organisation_id: Uuid, user_id: Uuid) -> Option<Arc<User>> {
        if !self.trusted() {
            return None;
        }
        self.fresh(self.lock().users.get(&(organisation_id, user_id)))
    }

    pub fn put_user(&self, epoch: Epoch, user: &Arc<User>) {
        self.fill(epoch, |state, read_at| {
            if state.users.len() >= MAX_USERS {
                state.users.clear();
            }
            let entry = Entry {
                value: Arc::clone(user),
                read_at,
            };
            state.users.insert((user.organisation_id, user.id), entry);
        });
    }

    pub fn organisation(&self, organisation_id: Uuid) -> Option<Arc<Organisation>> {
        if !self.trusted() {
            return None;
        }
        self.fresh(self.lock().organisations.get(&organisation_id))
    }

    pub fn put_organisation(&self, epoch: Epoch, organisation: &Arc<Organisation>) {
        self.fill(epoch, |state, read_at| {
            let entry = Entry {
                value: Arc::clone(organisation),
                read_at,
            };
            state.organisations.insert(organisation.id, entry);
        });
    }

    pub fn api_key(&self, hash: &[u8]) -> Option<Uuid> {
        if !self.trusted() {
            return None;
        }
        self.fresh(self.lock().api_keys.get(hash))
    }

    pub fn put_api_key(&self, epoch: Epoch, hash: &[u8], organisation_id: Uuid) {
        self.fill(epoch, |state, read_at| {
            if state.api_keys.len() >= MAX_USERS {
                state.api_keys.clear();
            }
            let entry = Entry {
                value: organisation_id,
                read_at,
            };
            state.api_keys.insert(hash.to_vec(), entry);
        });
    }

    pub fn playback_key(&self, kid: &str) -> Option<Arc<PublicKeyRow>> {
        if !self.trusted() {
            return None;
        }
        self.fresh(self.lock().playback_keys.get(kid))
    }

    pub fn put_playback_key(&self, epoch: Epoch, key: &Arc<PublicKeyRow>) {
        self.fill(epoch, |state, read_at| {
            if state.playback_keys.len() >= MAX_USERS {
                state.playback_keys.clear();
            }
            let entry = Entry {
                value: Arc::clone(key),
                read_at,
            };
            state.playback_keys.insert(key.kid.clone(), entry);
        });
    }
}

/// Keeps `cache` in step with the database: listens for changes, sends
/// heartbeats, acknowledges probes. Reconnects after any failure; the cache is
/// distrusted and emptied meanwhile. Runs until the task is aborted.
pub async fn maintain(cache: Arc<Cache>, database_url: String) {
    loop {
        match listen(&cache, &database_url).await {
            Ok(()) => tracing::warn!("cache listener ended; the cache is off until it is back"),
            Err(error) => {
                tracing::warn!(%error, "cache listener failed; the cache is off until it is back")
            }
        }
        cache.distrust();
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn listen(
    cache: &Cache,
    database_url: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut config: tokio_postgres::Config = database_url.parse()?;
    config.application_name("usermgmt-cache-listener");
    config.connect_timeout(LEASE);
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if tx.send(notification.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let result = serve_notifications(cache, &client, &mut notifications).await;
    driver.abort();
    result
}

async fn serve_notifications(
    cache: &Cache,
    client: &tokio_postgres::Client,
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listen = format!("LISTEN {CHANNEL}");
    tokio::time::timeout(LEASE, client.batch_execute(&listen)).await??;
    // Whatever was cached before may have missed notifications.
    cache.clear();
    let me = cache.replica_id();
    let mut heartbeats = Heartbeats::new(me);
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let heartbeat = format!(
                    "BEGIN; \
                     INSERT INTO cache_replicas (id, lease_until) VALUES ('{me}', now() + interval '{} milliseconds') \
                     ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until; \
                     SELECT pg_notify('{CHANNEL}', '{}'); COMMIT",
                    LEASE.as_millis(),
                    heartbeats.next(),
                );
                tokio::time::timeout(LEASE, client.batch_execute(&heartbeat)).await??;
            }
            payload = notifications.recv() => {
                let Some(payload) = payload else { return Ok(()) };
                handle(cache, client, &heartbeats, &payload).await?;
            }
        }
    }
}

/// The heartbeats of one listener session. Each session has a nonce of its
/// own: a heartbeat an earlier session sent may still be delivered to this
/// one (its commit came late), and its beat number must not be taken for one
/// of this session's.
struct Heartbeats {
    replica: Uuid,
    session: Uuid,
    beat: u64,
    sent: HashMap<u64, Instant>,
}

impl Heartbeats {
    fn new(replica: Uuid) -> Self {
        Self {
            replica,
            session: Uuid::new_v4(),
            beat: 0,
            sent: HashMap::new(),
        }
    }

    /// The payload of the next heartbeat, sent now.
    fn next(&mut self) -> String {
        self.beat += 1;
        let beat = self.beat;
        self.sent.insert(beat, Instant::now());
        self.sent.retain(|n, _| *n + 20 > beat);
        format!("hb:{}:{}:{beat}", self.replica, self.session)
    }

    /// When this session sent the heartbeat whose payload, after `hb:`, is
    /// `rest`; `None` when it is not one of this session's.
    fn sent_at(&self, rest: &str) -> Option<Instant> {
        let mut parts = rest.splitn(3, ':');
        let replica: Uuid = parts.next()?.parse().ok()?;
        let session: Uuid = parts.next()?.parse().ok()?;
        let beat: u64 = parts.next()?.parse().ok()?;
        if replica != self.replica || session != self.session {
            return None;
        }
        self.sent.get(&beat).copied()
    }
}

async fn handle(
    cache: &Cache,
    client: &tokio_postgres::Client,
    heartbeats: &Heartbeats,
    payload: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let me = heartbeats.replica;
    let (kind, rest) = payload.split_once(':').unwrap_or((payload, ""));
    match kind {
        "org" => match rest.parse() {
            Ok(organisation_id) => cache.evict_organisation(organisation_id),
            Err(_) => cache.clear(),
        },
        "services" => cache.evict_services(),
        "all" => cache.clear(),
        "probe" => {
            if let Ok(probe) = rest.parse::<Uuid>() {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&probe, &me];
                let ack = client.execute(
                    "INSERT INTO cache_acks (probe_id, replica_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &params,
                );
                tokio::time::timeout(LEASE, ack).await??;
            }
        }
        "hb" => {
            if let Some(sent) = heartbeats.sent_at(rest) {
                cache.trust_from(sent);
            }
        }
        _ => cache.clear(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Role;

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
        })
    }

    #[test]
    fn an_untrusted_cache_answers_nothing_and_keeps_nothing() {
        let cache = Cache::enabled(Duration::from_secs(10));
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
        let cache = Cache::enabled(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let u = user(Uuid::now_v7());
        let before_read = cache.epoch();
        cache.evict_organisation(u.organisation_id);
        cache.put_user(before_read, &u);
        assert_eq!(cache.user(u.organisation_id, u.id), None);
    }

    #[test]
    fn eviction_is_per_organisation() {
        let cache = Cache::enabled(Duration::from_secs(10));
        cache.trust_from(Instant::now());
        let (a, b) = (user(Uuid::now_v7()), user(Uuid::now_v7()));
        cache.put_user(cache.epoch(), &a);
        cache.put_user(cache.epoch(), &b);
        cache.put_api_key(cache.epoch(), b"key-a", a.organisation_id);
        cache.evict_organisation(a.organisation_id);
        assert_eq!(cache.user(a.organisation_id, a.id), None);
        assert_eq!(cache.api_key(b"key-a"), None);
        assert_eq!(cache.user(b.organisation_id, b.id), Some(b));
    }

    #[test]
    fn an_entry_older_than_the_maximum_age_is_not_used() {
        let max_age = Duration::from_secs(10);
        let cache = Cache::enabled(max_age);
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
    fn a_late_heartbeat_of_an_earlier_session_is_not_counted() {
        let replica = Uuid::new_v4();
        let mut earlier = Heartbeats::new(replica);
        let late = earlier.next();
        let mut current = Heartbeats::new(replica);
        let own = current.next();
        let rest = |payload: &str| payload.strip_prefix("hb:").map(str::to_owned);
        let (late, own) = (rest(&late).expect("hb"), rest(&own).expect("hb"));
        assert_eq!(current.sent_at(&late), None);
        assert!(current.sent_at(&own).is_some());
        assert_eq!(Heartbeats::new(Uuid::new_v4()).sent_at(&own), None);
    }

    #[test]
    fn playback_keys_are_evicted_with_their_organisation() {
        let cache = Cache::enabled(Duration::from_secs(10));
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
        let cache = Cache::enabled(Duration::from_secs(10));
        cache.trust_from(Instant::now() - TRUST - Duration::from_millis(1));
        assert!(!cache.trusted());
        assert!(!Cache::disabled().trusted());
    }
}
