//! Replicas started together on a database that does not exist yet, as an
//! orchestrator starts them: every one comes up, whatever the interleaving of
//! creating the database and migrating it.

use std::process::Stdio;

use crate::support::db::{SERVER_URL, TestDb};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::Replica;

const REPLICAS: usize = 3;
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_a_missing_database_all_come_up() {
    for round in 0..ROUNDS {
        let name = format!("usermgmt_t_{}", uuid::Uuid::new_v4().simple());
        // Dropped (with the database) at the end of the round.
        let db = TestDb {
            url: format!("{SERVER_URL}/{name}"),
            name,
        };
        let starts = (0..REPLICAS).map(|i| {
            let log = std::env::temp_dir().join(format!("{}-{i}.log", db.name));
            let url = db.url.clone();
            async move {
                let file = std::fs::File::create(&log).expect("create the log");
                let started = Replica::spawn_listening(&url, &[], Stdio::from(file)).await;
                (started, log)
            }
        });
        for (started, log) in futures::future::join_all(starts).await {
            let mut replica = started.unwrap_or_else(|e| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("round {round}: a replica failed to start: {e}\n{text}")
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while !serving(replica.addr).await {
                if let Some(status) = replica.exited() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("round {round}: a replica exited ({status}):\n{text}");
                }
                assert!(Instant::now() < deadline, "round {round}: not SERVING");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = std::fs::remove_file(&log);
        }
    }
}

/// Whether the server at `addr` answers SERVING now.
async fn serving(addr: SocketAddr) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
    else {
        return false;
    };
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| response.into_inner().status);
    status.ok() == Some(ServingStatus::Serving as i32)
}

/// A start-up error says what failed and why, in the database's own words,
/// without the URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_error_names_the_cause_without_the_password() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_usermgmt"))
        .args(["migrate"])
        .env(
            "DATABASE_URL",
            "postgres://nosuchrole:hunter2secret@127.0.0.1:5432/usermgmt_nosuchrole",
        )
        .env("USERMGMT_LOG", "warn")
        .output()
        .expect("run usermgmt migrate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"usermgmt_nosuchrole\" on 127.0.0.1:5432 as nosuchrole")
            && stderr.contains("role \"nosuchrole\" does not exist")
            && stderr.contains("SQLSTATE 28000"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}
