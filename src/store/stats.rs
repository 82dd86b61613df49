//! What the store counts about itself, for the metrics to read: the store
//! reports to nobody.

use std::sync::atomic::{AtomicU64, Ordering};

/// A kind of database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseError {
    PoolTimeout,
    ConnectionLost,
    Conflict,
    Other,
}

impl DatabaseError {
    pub const ALL: [DatabaseError; 4] = [
        DatabaseError::PoolTimeout,
        DatabaseError::ConnectionLost,
        DatabaseError::Conflict,
        DatabaseError::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DatabaseError::PoolTimeout => "pool_timeout",
            DatabaseError::ConnectionLost => "connection_lost",
            DatabaseError::Conflict => "conflict",
            DatabaseError::Other => "other",
        }
    }
}

static DATABASE_ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

pub(crate) fn record_database_error(kind: DatabaseError) {
    DATABASE_ERRORS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// How many failures of `kind` this process has seen.
pub fn database_errors(kind: DatabaseError) -> u64 {
    DATABASE_ERRORS[kind as usize].load(Ordering::Relaxed)
}

/// Why the store closed a pooled connection of its own accord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClosed {
    /// Its borrower outlived the deadline it was lent with: the watchdog
    /// closed it.
    Deadline,
    /// Its query was abandoned (the call's future dropped mid-query).
    Abandoned,
    /// The server closed it, or it was left unusable (a transaction open).
    Broken,
    /// Its host was found hung after it was opened.
    HostHung,
}

impl ConnectionClosed {
    pub const ALL: [ConnectionClosed; 4] = [
        ConnectionClosed::Deadline,
        ConnectionClosed::Abandoned,
        ConnectionClosed::Broken,
        ConnectionClosed::HostHung,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ConnectionClosed::Deadline => "deadline",
            ConnectionClosed::Abandoned => "abandoned",
            ConnectionClosed::Broken => "broken",
            ConnectionClosed::HostHung => "host_hung",
        }
    }
}

static CONNECTIONS_CLOSED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

pub(crate) fn record_connection_closed(reason: ConnectionClosed) {
    CONNECTIONS_CLOSED[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// How many pooled connections this process closed for `reason`.
pub fn connections_closed(reason: ConnectionClosed) -> u64 {
    CONNECTIONS_CLOSED[reason as usize].load(Ordering::Relaxed)
}

/// Why a database host was passed over for the next one (or tried last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPassedOver {
    /// Its handshake (with Diesel's set-up) did not complete within the
    /// per-host deadline.
    HandshakeTimeout,
    /// A check after a call outlived its deadline found it not answering:
    /// its pooled connections are dropped and it is tried last.
    Hung,
}

impl HostPassedOver {
    pub const ALL: [HostPassedOver; 2] = [HostPassedOver::HandshakeTimeout, HostPassedOver::Hung];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HostPassedOver::HandshakeTimeout => "handshake_timeout",
            HostPassedOver::Hung => "hung",
        }
    }
}

static HOSTS_PASSED_OVER: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

pub(crate) fn record_host_passed_over(reason: HostPassedOver) {
    HOSTS_PASSED_OVER[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// How many times this process passed a host over for `reason`.
pub fn hosts_passed_over(reason: HostPassedOver) -> u64 {
    HOSTS_PASSED_OVER[reason as usize].load(Ordering::Relaxed)
}

/// A cache whose work the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    Users,
    Organisations,
    ApiKeys,
    Services,
    PlaybackKeys,
    VerifiedTokens,
    Sessions,
    ApiTokens,
}

impl CacheKind {
    pub const ALL: [CacheKind; 8] = [
        CacheKind::Users,
        CacheKind::Organisations,
        CacheKind::ApiKeys,
        CacheKind::Services,
        CacheKind::PlaybackKeys,
        CacheKind::VerifiedTokens,
        CacheKind::Sessions,
        CacheKind::ApiTokens,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheKind::Users => "users",
            CacheKind::Organisations => "organisations",
            CacheKind::ApiKeys => "api_keys",
            CacheKind::Services => "services",
            CacheKind::PlaybackKeys => "playback_keys",
            CacheKind::VerifiedTokens => "verified_tokens",
            CacheKind::Sessions => "sessions",
            CacheKind::ApiTokens => "api_tokens",
        }
    }
}

/// What one cache has done, as counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to stay within the cache's bound.
    pub evictions: u64,
    /// Entries held after its last insertion or clearing.
    pub entries: u64,
}

const KINDS: usize = CacheKind::ALL.len();
static CACHE_HITS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
static CACHE_MISSES: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
static CACHE_EVICTIONS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
static CACHE_ENTRIES: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Invalidations by notification, by scope: `organisation`, `services`, `all`.
pub const INVALIDATION_SCOPES: [&str; 3] = ["organisation", "services", "all"];
static CACHE_INVALIDATIONS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

pub(crate) fn record_cache_lookup(kind: CacheKind, hit: bool) {
    let counters = if hit { &CACHE_HITS } else { &CACHE_MISSES };
    counters[kind as usize].fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn record_cache_eviction(kind: CacheKind) {
    CACHE_EVICTIONS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn record_cache_entries(kind: CacheKind, entries: usize) {
    let entries = u64::try_from(entries).unwrap_or(u64::MAX);
    CACHE_ENTRIES[kind as usize].store(entries, Ordering::Relaxed);
}

pub(crate) fn record_cache_invalidation(scope: &str) {
    if let Some(i) = INVALIDATION_SCOPES.iter().position(|s| *s == scope) {
        CACHE_INVALIDATIONS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Each kind of cache counts what its bounded map does here.
impl crate::bounded_cache::Tally for CacheKind {
    fn lookup(self, hit: bool) {
        record_cache_lookup(self, hit);
    }

    fn eviction(self) {
        record_cache_eviction(self);
    }

    fn entries(self, entries: usize) {
        record_cache_entries(self, entries);
    }
}

/// What the cache of `kind` has done in this process.
pub fn cache_counts(kind: CacheKind) -> CacheCounts {
    let i = kind as usize;
    CacheCounts {
        hits: CACHE_HITS[i].load(Ordering::Relaxed),
        misses: CACHE_MISSES[i].load(Ordering::Relaxed),
        evictions: CACHE_EVICTIONS[i].load(Ordering::Relaxed),
        entries: CACHE_ENTRIES[i].load(Ordering::Relaxed),
    }
}

/// How many invalidations of each scope of [`INVALIDATION_SCOPES`] arrived.
pub fn cache_invalidations() -> [u64; 3] {
    [0, 1, 2].map(|i| CACHE_INVALIDATIONS[i].load(Ordering::Relaxed))
}
