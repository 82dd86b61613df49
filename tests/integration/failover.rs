//! A database failover, as docs/operations.md promises it: a primary and a
//! synchronous standby of the test's own (in a temporary directory, never the
//! machine's cluster), two `usermgmt serve` replicas on the multi-host URL
//! under write and read load; the primary is killed and the standby promoted.
//! No acknowledged write is lost, both replicas serve again, writes succeed
//! again, and a revocation made after the promotion through one replica is
//! refused on the next call on the other.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::proto;

use crate::support::pg::{as_postgres, bootstrap_acme, connect, pg_bin, postgres_dir};
use crate::support::*;

/// How long any one phase may take before the test fails.
const PHASE: Duration = Duration::from_secs(60);

/// A primary and a synchronous standby in a temporary directory, stopped
/// and removed when dropped.
struct Pair {
    dir: PathBuf,
    primary_port: u16,
    standby_port: u16,
}

impl Pair {
    fn data(&self, node: &str) -> String {
        self.dir.join(node).to_string_lossy().into_owned()
    }

    fn start(&self, node: &str) {
        let log = self.dir.join(format!("{node}.log"));
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(node),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
    }

    fn create() -> Pair {
        let dir = postgres_dir("usermgmt-failover");
        let pair = Pair {
            dir,
            primary_port: free_port(),
            standby_port: free_port(),
        };
        let primary = pair.data("primary");
        as_postgres(
            "initdb",
            &[
                "-D",
                &primary,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        append(
            &pair.dir.join("primary/postgresql.conf"),
            &format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 wal_level = replica\nmax_wal_senders = 4\nfsync = off\n\
                 synchronous_standby_names = 'standby'\nsynchronous_commit = on\n",
                pair.primary_port,
                pair.dir.display()
            ),
        );
        pair.start("primary");
        let standby = pair.data("standby");
        as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pair.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                &standby,
                "-R",
                "-X",
                "stream",
            ],
        );
        // postgresql.auto.conf, where `-R` wrote its primary_conninfo, wins
        // over postgresql.conf; a later line wins within it. Once promoted,
        // the standby has no standby of its own to wait for: it must not
        // inherit the primary's synchronous_standby_names, or every commit
        // would wait for ever.
        append(
            &pair.dir.join("standby/postgresql.auto.conf"),
            &format!(
                "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby'\n\
                 synchronous_standby_names = ''\n",
                pair.standby_port, pair.primary_port
            ),
        );
        pair.start("standby");
        pair
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/usermgmt?target_session_attrs=read-write",
            self.primary_port, self.standby_port
        )
    }

    fn node_url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/usermgmt")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for node in ["primary", "standby"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin("pg_ctl"))
                .args(["-D", &self.data(node), "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("append");
}

/// Polls `$condition` every 20 ms until it holds, at most [`PHASE`].
macro_rules! until {
    ($what:expr, $condition:expr) => {{
        let deadline = Instant::now() + PHASE;
        while !$condition {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

async fn serving(addr: std::net::SocketAddr) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_acknowledged_write_and_keeps_revocations_exact() {
    let pair = Pair::create();
    let primary = connect(
        &pair
            .node_url(pair.primary_port)
            .replace("/usermgmt", "/postgres"),
    )
    .await;
    until!(
        "the standby replicates synchronously",
        primary
            .query_opt(
                "SELECT 1 FROM pg_stat_replication \
                 WHERE application_name = 'standby' AND sync_state = 'sync'",
                &[],
            )
            .await
            .is_ok_and(|row| row.is_some())
    );

    let url = pair.url();
    let first = Replica::start(&url).await;
    let second = Replica::start(&url).await;
    let org = bootstrap_acme(
        &url,
        usermgmt::store::pool::PoolSettings {
            wait_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ..usermgmt::store::pool::PoolSettings::of_size(1)
        },
    )
    .await;
    let on_first = channel(first.addr).await;
    let on_second = channel(second.addr).await;
    let admin = Session::login(&on_first, "admin@acme.example.com", ADMIN_PASSWORD).await;
    let reader = Session::login(&on_second, "admin@acme.example.com", ADMIN_PASSWORD).await;

    // Load: creates through the first replica (each acknowledged one is
    // remembered), reads through the second.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = tokio::spawn({
        let (admin, stop, acknowledged) = (admin.clone(), stop.clone(), acknowledged.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let email = format!("load{n}@acme.example.com");
                match admin.create_user(&email, proto::Role::NanoReadOnly).await {
                    Ok(_) => acknowledged.lock().await.push(email),
                    Err(status) => assert_eq!(
                        status.code(),
                        Code::Unavailable,
                        "a write during the failover: {status:?}"
                    ),
                }
            }
        }
    });
    let reads = tokio::spawn({
        let (reader, stop) = (reader.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = reader.who_am_i().await;
            }
        }
    });
    until!(
        "some writes are acknowledged",
        acknowledged.lock().await.len() >= 5
    );

    // The primary dies; the standby is promoted.
    as_postgres(
        "pg_ctl",
        &["-D", &pair.data("primary"), "-m", "immediate", "stop"],
    );
    let before_promotion = acknowledged.lock().await.len();
    as_postgres("pg_ctl", &["-D", &pair.data("standby"), "-w", "promote"]);

    until!(
        "writes succeed again",
        acknowledged.lock().await.len() > before_promotion + 3
    );
    until!(
        "both replicas are SERVING",
        serving(first.addr).await && serving(second.addr).await
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer");
    reads.await.expect("the reader");

    // Every acknowledged write is on the new primary.
    let promoted = connect(&pair.node_url(pair.standby_port)).await;
    let acknowledged = acknowledged.lock().await.clone();
    for email in &acknowledged {
        let found = promoted
            .query_opt(
                "SELECT 1 FROM users WHERE organisation_id = $1 AND email = $2",
                &[&org.organisation_id, email],
            )
            .await
            .expect("query the promoted standby");
        assert!(found.is_some(), "acknowledged {email} was lost");
    }

    // A revocation after the promotion, through the first replica, is refused
    // on the very next call on the second (which answered for the token just
    // before, so its cache holds the user).
    let operator = admin
        .create_user("operator@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("create after the failover");
    let operator_on_second =
        Session::login(&on_second, "operator@acme.example.com", PASSWORD).await;
    operator_on_second
        .who_am_i()
        .await
        .expect("valid on the second replica");
    let confirmation = admin.ask_renew(&operator.id).await.expect("first step");
    admin
        .confirm_renew(&operator.id, &confirmation.confirmation_token)
        .await
        .expect("renew the tokenKey");
    assert_status(
        operator_on_second.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    println!(
        "failover: {} acknowledged writes kept, {} before the promotion",
        acknowledged.len(),
        before_promotion
    );
}
