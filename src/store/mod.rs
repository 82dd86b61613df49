//! Persistence: the Diesel schema, rows, queries and the connection pool.
//! Every query about users takes the caller's organisation id.

pub(crate) mod api_tokens;
pub(crate) mod audit;
pub(crate) mod bench;
pub mod cache;
pub(crate) mod confirmations;
pub(crate) mod connect;
pub mod deadline;
pub mod feed;
pub mod feed_retention;
mod feed_state;
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

use crate::domain::DomainError;
pub use pool::PgPool;

/// The service's database, shared by every handler.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    cache: std::sync::Arc<cache::Cache>,
    keyring: std::sync::Arc<crate::sealing::Keyring>,
}

/// A connection lent by the pool to one piece of work, due back by the
/// work's deadline (see [`deadline`]). It goes back to the pool only when the
/// work finished with it: a connection whose query was abandoned (the
/// deadline passed, or the call's future was dropped mid-query) is closed,
/// never lent again, since its server may still be busy with that query, or
/// may not answer at all.
pub struct Conn {
    object: Option<deadpool::managed::Object<pool::Manager>>,
}

impl Conn {
    fn pg(&self) -> &pool::PgConn {
        self.object
            .as_ref()
            .expect("a lent connection until it is dropped")
    }

    fn pg_mut(&mut self) -> &mut pool::PgConn {
        self.object
            .as_mut()
            .expect("a lent connection until it is dropped")
    }
}

impl std::ops::Deref for Conn {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        self.pg()
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.pg_mut()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(mut object) = self.object.take() else {
            return;
        };
        let reusable = match deadpool::managed::Object::pool(&object) {
            Some(pool) => object.reusable(pool.manager().connector()),
            None => false,
        };
        if reusable {
            object.disarm();
        } else {
            // Out of the pool for good: dropping it closes it.
            drop(deadpool::managed::Object::take(object));
        }
    }
}

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

    /// A pooled connection, due back by the work's deadline or the store's
    /// own bound, whichever is sooner; UNAVAILABLE once the pool's wait
    /// timeout or that deadline passed first.
    pub async fn conn(&self) -> Result<Conn, DomainError> {
        let due = deadline::due(self.pool.manager().call_timeout());
        let mut timeouts = self.pool.timeouts();
        if let Some(due) = due {
            let left = due.saturating_duration_since(tokio::time::Instant::now());
            let sooner =
                |bound: Option<std::time::Duration>| Some(bound.map_or(left, |b| b.min(left)));
            timeouts.wait = sooner(timeouts.wait);
            timeouts.create = sooner(timeouts.create);
            timeouts.recycle = sooner(timeouts.recycle);
        }
        let object = self.pool.timeout_get(&timeouts).await.map_err(|error| {
            tracing::warn!(%error, "no database connection");
            stats::record_database_error(stats::DatabaseError::PoolTimeout);
            DomainError::Unavailable("the database is unavailable, try again".into())
        })?;
        object.arm(due);
        Ok(Conn {
            object: Some(object),
        })
    }

    /// Whether the database answers a trivial query within `within`.
    pub async fn ping(&self, within: std::time::Duration) -> Result<(), DomainError> {
        let due = tokio::time::Instant::now() + within;
        let ping = deadline::within(due, self.ping_now());
        tokio::time::timeout(within, ping)
            .await
            .unwrap_or_else(|_| {
                Err(DomainError::Unavailable(
                    "the database did not answer".into(),
                ))
            })
    }

    async fn ping_now(&self) -> Result<(), DomainError> {
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
        // A server that stopped taking writes: a primary being demoted.
        DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => {
            tracing::warn!(%error, "the database no longer takes writes");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_stopped_taking_writes_is_unavailable() {
        let error = DieselError::DatabaseError(
            DatabaseErrorKind::ReadOnlyTransaction,
            Box::new("cannot execute INSERT in a read-only transaction".to_owned()),
        );
        assert!(matches!(map_db_error(error), DomainError::Unavailable(_)));
    }
}
