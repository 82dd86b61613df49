//! Persistence: the Diesel schema, rows, queries and the connection pool.
//! Every query about users takes the caller's organisation id.

pub(crate) mod api_tokens;
pub(crate) mod audit;
pub(crate) mod bench;
pub mod cache;
pub(crate) mod confirmations;
pub(crate) mod invites;
pub(crate) mod models;
pub(crate) mod organisations;
pub(crate) mod outbox;
pub(crate) mod playback;
pub mod pool;
pub(crate) mod ratelimit;
pub(crate) mod resets;
pub(crate) mod schema;
pub(crate) mod secrets;
pub(crate) mod services;
pub(crate) mod sessions;
pub(crate) mod stats;
pub(crate) mod text;
pub(crate) mod users;
pub(crate) mod write;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Object;

use crate::domain::DomainError;
pub use pool::PgPool;

/// The service's database, shared by every handler.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    cache: std::sync::Arc<cache::Cache>,
    keyring: std::sync::Arc<crate::sealing::Keyring>,
}

pub type Conn = Object<AsyncPgConnection>;

pub use write::Tx;

impl Store {
    /// A store without a cache: every read goes to the database.
    pub fn new(pool: PgPool) -> Self {
        Self::with_cache(pool, std::sync::Arc::new(cache::Cache::disabled()))
    }

    /// A store whose reads for the per-call check go through `cache` (kept
    /// in step by [`cache::maintain`]).
    pub fn with_cache(pool: PgPool, cache: std::sync::Arc<cache::Cache>) -> Self {
        Self {
            pool,
            cache,
            keyring: std::sync::Arc::default(),
        }
    }

    /// This store, sealing the secrets it writes and opening those it reads
    /// with `keyring` (without one: stored plain).
    pub fn with_keyring(self, keyring: crate::sealing::Keyring) -> Self {
        Self {
            keyring: std::sync::Arc::new(keyring),
            ..self
        }
    }

    /// The key-encryption keys of the secrets at rest.
    pub fn keyring(&self) -> &crate::sealing::Keyring {
        &self.keyring
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection, or UNAVAILABLE once the pool's wait timeout passed.
    pub async fn conn(&self) -> Result<Conn, DomainError> {
        self.pool.get().await.map_err(|error| {
            tracing::warn!(%error, "no database connection");
            stats::record_database_error(stats::DatabaseError::PoolTimeout);
            DomainError::Unavailable("the database is unavailable, try again".into())
        })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), DomainError> {
        use diesel_async::RunQueryDsl as _;
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// `duration` as a PostgreSQL interval (microseconds).
fn interval(duration: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    diesel::pg::data_types::PgInterval::from_microseconds(micros)
}

/// Maps a Diesel error to the domain: connection trouble is UNAVAILABLE
/// (retryable), anything else INTERNAL. Details go to the log, not the caller.
pub fn db_error(error: DieselError) -> DomainError {
    let mapped = map_db_error(error);
    stats::record_database_error(match &mapped {
        DomainError::Unavailable(_) => stats::DatabaseError::ConnectionLost,
        DomainError::Aborted(_) => stats::DatabaseError::Conflict,
        _ => stats::DatabaseError::Other,
    });
    mapped
}

fn map_db_error(error: DieselError) -> DomainError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            tracing::warn!(%error, "database connection lost");
            DomainError::Unavailable("the database is unavailable, try again".into())
        }
        // No SQLSTATE: the client could not talk to the server (I/O error,
        // connection closed), as when the database goes away mid-call.
        DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
            tracing::warn!(%error, "database connection lost");
            DomainError::Unavailable("the database is unavailable, try again".into())
        }
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            DomainError::Aborted("a concurrent change conflicted with this one, try again".into())
        }
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
            if looks_like_connection_loss(info.message()) =>
        {
            tracing::warn!(%error, "database connection lost");
            DomainError::Unavailable("the database is unavailable, try again".into())
        }
        _ => DomainError::Internal(format!("database: {error}")),
    }
}

fn looks_like_connection_loss(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "connection",
        "closed",
        "terminating",
        "shutting down",
        "timed out",
        "statement timeout",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Whether `error` is a violation of a unique constraint.
pub fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

impl From<DieselError> for DomainError {
    fn from(error: DieselError) -> Self {
        db_error(error)
    }
}
