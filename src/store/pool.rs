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
    #[error("cannot reach the database server {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("cannot create the database {target}: {cause}")]
    CreateDatabase { target: String, cause: String },
    #[error("migrations failed: {0}")]
    Migrations(String),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
}

/// Serialises the creation of the database by replicas starting together
/// (taken on the maintenance database, where they all meet).
const CREATE_LOCK_KEY: i64 = 0x7573_6572_6372_6561; // "usercrea"

/// Creates the database of `url` when it does not exist yet. Replicas that
/// start together take turns, and one that finds the database made by
/// another in between counts that as success.
pub async fn ensure_database_exists(url: &str) -> Result<(), SetupError> {
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| SetupError::InvalidUrl(e.to_string()))?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Err(SetupError::InvalidUrl("no database name".into()));
    };
    let target = describe_target(&config, &name);
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    maintenance.connect_timeout(Duration::from_secs(5));
    let (client, connection) = maintenance
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| SetupError::Connect {
            target: target.clone(),
            cause: database_cause(&e),
        })?;
    let connection_task = tokio::spawn(connection);
    let created = create_unless_exists(&client, &name).await;
    drop(client);
    let _ = connection_task.await;
    match created {
        Ok(true) => tracing::info!(database = %name, "created the database"),
        Ok(false) => {}
        Err(e) => {
            return Err(SetupError::CreateDatabase {
                target,
                cause: database_cause(&e),
            });
        }
    }
    Ok(())
}

/// Whether this call created the database `name`, under the creation lock
/// (released with the session).
async fn create_unless_exists(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&CREATE_LOCK_KEY])
        .await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&statement).await {
        Ok(()) => Ok(true),
        // Another creator that does not take the lock (an older version, an
        // operator) won: 42P04, or 23505 when both inserted at once.
        Err(e) if is_duplicate_database(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn is_duplicate_database(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        error.code(),
        Some(code) if *code == SqlState::DUPLICATE_DATABASE || *code == SqlState::UNIQUE_VIOLATION
    )
}

/// The database's own message and SQLSTATE, or the client's error with its
/// causes (tokio-postgres shows only "db error" on its own).
fn database_cause(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where the database is, as an error may say it: user, hosts, ports and
/// name, never the password or other parameters.
fn describe_target(config: &tokio_postgres::Config, name: &str) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(host) => host.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config.get_user().unwrap_or("(default user)");
    format!("\"{name}\" on {} as {user}", hosts.join(","))
}

/// Runs the embedded migrations that have not run yet. Safe to run from
/// several replicas at once: they take turns under an advisory lock.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, SetupError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| SetupError::Migrations(format!("cannot connect to the database: {e}")))?;
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
/// instead of holding its connection for ever. Options already in the URL
/// are kept (a second `options=` would replace them). `None` leaves `url` as
/// is.
pub fn with_statement_timeout(url: &str, timeout: Option<Duration>) -> String {
    let Some(timeout) = timeout else {
        return url.to_owned();
    };
    let setting = format!("-c%20statement_timeout%3D{}", timeout.as_millis());
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut parameters: Vec<String> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    match parameters.iter_mut().find(|p| p.starts_with("options=")) {
        Some(options) => {
            options.push_str("%20");
            options.push_str(&setting);
        }
        None => parameters.push(format!("options={setting}")),
    }
    format!("{base}?{}", parameters.join("&"))
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

    #[test]
    fn options_already_in_the_url_are_kept() {
        let url = "postgres://postgres@127.0.0.1:5432/usermgmt?options=-c%20search_path%3Dapp&sslmode=disable";
        let with = with_statement_timeout(url, Some(Duration::from_millis(1500)));
        let config = tokio_postgres::Config::from_str(&with).expect("parses");
        assert_eq!(
            config.get_options(),
            Some("-c search_path=app -c statement_timeout=1500")
        );
        assert_eq!(with.matches("options=").count(), 1);
    }

    #[test]
    fn a_start_up_error_names_the_target_without_the_password() {
        let config = tokio_postgres::Config::from_str(
            "postgres://app:s3cret@db1:5433,db2/usermgmt?options=-c%20x%3Dy",
        )
        .expect("parses");
        let target = describe_target(&config, "usermgmt");
        assert_eq!(target, "\"usermgmt\" on db1:5433,db2:5432 as app");
        assert!(!target.contains("s3cret"));
    }
}
