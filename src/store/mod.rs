//! Persistence: the Diesel schema, rows, queries and the connection pool.
//! Every query about users takes the caller's organisation id.

pub mod admin;
pub mod audit;
pub mod invites;
pub mod models;
pub mod organisations;
pub mod playback;
pub mod pool;
pub mod schema;
pub mod secrets;
pub mod services;
pub mod users;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Object;

use crate::domain::DomainError;
pub use pool::PgPool;

/// The service's database, shared by every handler.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

pub type Conn = Object<AsyncPgConnection>;

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection, or UNAVAILABLE once the pool's wait timeout passed.
    pub async fn conn(&self) -> Result<Conn, DomainError> {
        self.pool.get().await.map_err(|error| {
            tracing::warn!(%error, "no database connection");
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

/// Maps a Diesel error to the domain: connection trouble is UNAVAILABLE
/// (retryable), anything else INTERNAL. Details go to the log, not the caller.
pub fn db_error(error: DieselError) -> DomainError {
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
