//! Connecting: the database (created when missing), its migrations and the pool.

use std::time::Duration;

use diesel::RunQueryDsl as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use super::connect::{ConnectError, Connector, PgConn, TcpSettings};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serialises migrations of replicas starting at the same time.
const MIGRATION_LOCK_KEY: i64 = 0x7573_6572_6d67_6d74; // "usermgmt"

pub type PgPool = deadpool::managed::Pool<Manager>;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    /// How long a call waits for a free connection before it gets UNAVAILABLE.
    pub wait_timeout: Duration,
    /// How long one host may take to complete a connection's handshake
    /// before the next host is tried.
    pub connect_timeout: Duration,
    /// The longest a connection is lent to one piece of work (a call's
    /// deadline may be sooner): past it, the connection is closed and the
    /// work gets UNAVAILABLE. `None`: only the work's own deadline, if any.
    pub call_timeout: Option<Duration>,
    /// Keepalives and `tcp_user_timeout`, where the URL sets none.
    pub tcp: TcpSettings,
}

impl PoolSettings {
    /// `max_size` connections, with the defaults of `serve` for the rest,
    /// and no bound of the store's own on the work (the command line tools'
    /// settings).
    pub fn of_size(max_size: usize) -> Self {
        Self {
            max_size,
            wait_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            call_timeout: None,
            tcp: TcpSettings::default(),
        }
    }
}

/// The pool's manager: opens connections with its [`Connector`], and takes
/// one back only when its last user finished with it (see
/// [`PgConn::reusable`]).
pub struct Manager {
    connector: Connector,
    call_timeout: Option<Duration>,
}

impl Manager {
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The longest a connection is lent, whatever the work's deadline.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = PgConn;
    type Error = ConnectError;

    async fn create(&self) -> Result<PgConn, ConnectError> {
        self.connector.pooled().await
    }

    async fn recycle(
        &self,
        conn: &mut PgConn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<ConnectError> {
        if conn.reusable(&self.connector) {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message(
                "the connection is broken or its host hung",
            ))
        }
    }
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

impl From<ConnectError> for SetupError {
    fn from(error: ConnectError) -> Self {
        SetupError::InvalidUrl(error.to_string())
    }
}

/// Serialises the creation of the database by replicas starting together
/// (taken on the maintenance database, where they all meet).
const CREATE_LOCK_KEY: i64 = 0x7573_6572_6372_6561; // "usercrea"

/// Creates the database of `connector` when it does not exist yet. Replicas
/// that start together take turns, and one that finds the database made by
/// another in between counts that as success.
pub async fn ensure_database_exists(connector: &Connector) -> Result<(), SetupError> {
    let Some(name) = connector.dbname().map(str::to_owned) else {
        return Err(SetupError::InvalidUrl("no database name".into()));
    };
    let target = connector.describe();
    let maintenance = connector.for_database("postgres");
    let (client, connection, _) =
        maintenance
            .connect(None)
            .await
            .map_err(|e| SetupError::Connect {
                target: target.clone(),
                cause: e.to_string(),
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
                cause: super::connect::cause(&e),
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

/// Runs the embedded migrations that have not run yet. Safe to run from
/// several replicas at once: they take turns under an advisory lock.
pub async fn run_migrations(connector: &Connector) -> Result<Vec<String>, SetupError> {
    let conn = connector
        .pooled()
        .await
        .map_err(|e| SetupError::Migrations(format!("cannot connect to the database: {e}")))?;
    tokio::task::spawn_blocking(move || {
        // Lent with no deadline: migrations take what they take.
        let mut conn = AsyncConnectionWrapper::<PgConn>::from(conn);
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

/// The connector of `url` with the pool's settings.
pub fn connector(url: &str, settings: &PoolSettings) -> Result<Connector, SetupError> {
    Ok(Connector::new(url, settings.connect_timeout, settings.tcp)?)
}

/// Builds the connection pool on `connector`. Connections are opened
/// lazily.
pub fn build_pool_on(connector: Connector, settings: &PoolSettings) -> Result<PgPool, SetupError> {
    // Every host may be tried in turn, each under its deadline.
    let create_timeout = settings
        .connect_timeout
        .saturating_mul(u32::try_from(connector.host_count()).unwrap_or(u32::MAX))
        .saturating_add(Duration::from_millis(100));
    let manager = Manager {
        connector,
        call_timeout: settings.call_timeout,
    };
    PgPool::builder(manager)
        .max_size(settings.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(create_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| SetupError::Pool(e.to_string()))
}

/// Builds the connection pool of `url`. Connections are opened lazily.
pub fn build_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, SetupError> {
    build_pool_on(connector(url, settings)?, settings)
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
    use std::str::FromStr as _;

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
}
