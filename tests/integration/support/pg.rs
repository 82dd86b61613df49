//! PostgreSQL clusters of a test's own: the machine's binaries, run as the
//! `postgres` user (initdb and PostgreSQL refuse root).

use std::path::PathBuf;
use std::process::Command;

/// The PostgreSQL binaries of the machine's (newest) version.
pub fn pg_bin(tool: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL binaries");
    let mut versions: Vec<PathBuf> = versions.flatten().map(|entry| entry.path()).collect();
    versions.sort();
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(tool)
}

/// Runs a PostgreSQL tool as the `postgres` user, and asserts it succeeded.
pub fn as_postgres(tool: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A temporary directory owned by the `postgres` user.
pub fn postgres_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let status = Command::new("chown")
        .args(["postgres:postgres", &dir.to_string_lossy()])
        .status()
        .expect("chown");
    assert!(status.success(), "chown the temporary directory");
    dir
}

/// A client of `url`, its connection driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Bootstraps the organisation "Acme" with `admin@acme.example.com` (password
/// `ADMIN_PASSWORD`) on the cluster of `url`, through the service's own
/// provisioning and a pool of one connection with `settings`' timeouts.
pub async fn bootstrap_acme(
    url: &str,
    settings: usermgmt::store::pool::PoolSettings,
) -> usermgmt::app::provisioning::Bootstrapped {
    let pool = usermgmt::store::pool::build_pool(url, &settings).expect("pool");
    let store = usermgmt::store::Store::new(pool);
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    usermgmt::app::provisioning::bootstrap(
        &store,
        &passwords,
        "Acme",
        "admin@acme.example.com",
        super::ADMIN_PASSWORD,
    )
    .await
    .expect("bootstrap")
}
