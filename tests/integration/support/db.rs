//! One fresh database per test, cloned from a migrated template (as
//! crates.io's test suite does), so tests run in parallel on one server.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";
const TEMPLATE_LOCK: i64 = 0x7465_6d70_6c61_7465;

/// A database that is dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let name = format!("usermgmt_t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect("postgres").await;
        for attempt in 0.. {
            let result = admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await;
            match result {
                Ok(()) => break,
                // Another test is cloning the same template right now.
                Err(error) if attempt < 50 && error.to_string().contains("being accessed") => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot create test database {name}: {error}"),
            }
        }
        let url = format!("{SERVER_URL}/{name}");
        TestDb { name, url }
    }

    /// A plain client for arranging and inspecting rows.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&format!("{SERVER_URL}/postgres"), NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

pub async fn connect(database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&format!("{SERVER_URL}/{database}"), NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run on 127.0.0.1:5432 with trust auth: {e}"));
    tokio::spawn(connection);
    client
}

/// The migrated template of this version of `migrations/`, created once per
/// machine (under an advisory lock, as test binaries run concurrently).
async fn template() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    let name = NAME.get_or_init(template_name).clone();
    let admin = connect("postgres").await;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("look up template")
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
            ))
            .await
            .expect("drop half-built template");
        usermgmt::server::prepare_database(&format!("{SERVER_URL}/{building}"))
            .await
            .expect("migrate the template");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
            ))
            .await
            .expect("publish the template");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template unlock");
    name
}

fn template_name() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = walk(&dir);
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).expect("read migration"));
    }
    let digest = hasher.finalize();
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("usermgmt_template_{short}")
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read migrations dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
