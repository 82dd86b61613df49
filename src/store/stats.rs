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
