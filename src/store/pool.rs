//! Connecting: the database (created when missing), its migrations and the pool.

use std::str::FromStr;
use std::time::Duration;

use diesel::Connection as _;
use diesel::RunQueryDsl as _;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serialises migrations of replicas starting at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x7573_6572_6d67_6d74; // "usermgmt"

pub type PgPool = Pool<AsyncPgConnection>;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a call waits for a free connection before it gets UNAVAILABLE.
    pub wait_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("cannot reach the database server: {0}")]
    Connect(String),
    #[error("cannot create the database: {0}")]
    CreateDatabase(String),
    #[error("migrations failed: {0}")]
    Migrations(String),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
}

/// Creates the database of `url` when it does not exist yet.
pub async fn ensure_database_exists(url: &str) -> Result<(), SetupError> {
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| SetupError::InvalidUrl(e.to_string()))?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Err(SetupError::InvalidUrl("no database name".into()));
    };
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    maintenance.connect_timeout(Duration::from_secs(5));
    let (client, connection) = maintenance
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| SetupError::Connect(e.to_string()))?;
    let connection_task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| SetupError::CreateDatabase(e.to_string()))?
        .is_some();
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match client.batch_execute(&statement).await {
            Ok(()) => tracing::info!(database = %name, "created the database"),
            // Another replica created it in between.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(SetupError::CreateDatabase(e.to_string())),
        }
    }
    drop(client);
    let _ = connection_task.await;
    Ok(())
}

/// Runs the embedded migrations that have not run yet. Safe to run from
/// several replicas at once: they take turns under an advisory lock.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, SetupError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| SetupError::Connect(e.to_string()))?;
        let migration_error = |e: &dyn std::fmt::Display| SetupError::Migrations(e.to_string());
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|e| migration_error(&e))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| migration_error(&e));
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|e| migration_error(&e))?;
        applied
    })
    .await
    .map_err(|e| SetupError::Migrations(e.to_string()))?
}

/// Builds the connection pool. Connections are opened lazily.
pub fn build_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, SetupError> {
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // Fast: no extra `SELECT 1` per checkout; a broken connection is dropped
    // when it is returned, and the health task notices a dead database.
    manager_config.recycling_method = RecyclingMethod::Fast;
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, manager_config);
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| SetupError::Pool(e.to_string()))
}

/// `url` with a server-side `statement_timeout` for every connection, so
/// that a statement stuck on a lock or a slow plan fails (UNAVAILABLE)
/// instead of holding its connection for ever. `None` leaves `url` as is.
pub fn with_statement_timeout(url: &str, timeout: Option<Duration>) -> String {
    match timeout {
        None => url.to_owned(),
        Some(timeout) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{separator}options=-c%20statement_timeout%3D{}",
                timeout.as_millis()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_timeout_is_a_connection_option() {
        let url = "postgres://postgres@127.0.0.1:5432/usermgmt";
        assert_eq!(with_statement_timeout(url, None), url);
        let with = with_statement_timeout(url, Some(Duration::from_millis(1500)));
        assert_eq!(
            with,
            "postgres://postgres@127.0.0.1:5432/usermgmt?options=-c%20statement_timeout%3D1500"
        );
        let config = tokio_postgres::Config::from_str(&with).expect("parses");
        assert_eq!(config.get_options(), Some("-c statement_timeout=1500"));
        let more = with_statement_timeout(
            &format!("{url}?sslmode=disable"),
            Some(Duration::from_secs(2)),
        );
        assert!(more.ends_with("?sslmode=disable&options=-c%20statement_timeout%3D2000"));
    }
}
