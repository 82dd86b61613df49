//! `usermgmt healthcheck`, the containers' health check, and the health of
//! each service: exit code 0 only on SERVING, 1 otherwise, with the reason.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::proxy::DbProxy;
use crate::support::{TestDb, TestServer, free_port};

/// The server as a whole ("") and each service of the contract, written out
/// here rather than taken from the code under test.
const SERVICES: [&str; 7] = [
    "",
    "usermgmt.v1.AuthService",
    "usermgmt.v1.UserService",
    "usermgmt.v1.RoleService",
    "usermgmt.v1.OrganisationService",
    "usermgmt.v1.AuditService",
    "usermgmt.v1.PlaybackTokenService",
];

/// Runs `usermgmt healthcheck` against `url` for `service`; returns the exit
/// code and stderr.
async fn healthcheck(url: &str, service: &str) -> (Option<i32>, String) {
    let args = [
        "healthcheck",
        "--url",
        url,
        "--service",
        service,
        "--timeout-ms",
        "2000",
    ]
    .map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_usermgmt"))
            .args(args)
            .output()
            .expect("run usermgmt healthcheck")
    })
    .await
    .expect("healthcheck task");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls the health service until every service reports `wanted` (at most
/// 10 s).
async fn until_every_service_is(server: &TestServer, wanted: ServingStatus) {
    let mut health = HealthClient::new(server.channel().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut statuses = Vec::new();
        for service in SERVICES {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|response| response.into_inner().status);
            statuses.push(status.ok());
        }
        if statuses.iter().all(|s| *s == Some(wanted as i32)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every service is {wanted:?}: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_only_while_every_service_is_serving() {
    let db = TestDb::new().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let url = proxy.url(&db.name);
    let server = TestServer::start_on(db, &url, &["--health-interval-ms", "100"]).await;
    let address = format!("http://{}", server.addr);

    for service in SERVICES {
        let (code, stderr) = healthcheck(&address, service).await;
        assert_eq!(code, Some(0), "{service:?} is SERVING: {stderr}");
    }
    let (code, stderr) = healthcheck(&address, "usermgmt.v1.NoSuchService").await;
    assert_eq!(code, Some(1), "an unknown service: {stderr}");
    assert!(stderr.contains("health check failed"), "{stderr}");

    // Without the database, every service is NOT_SERVING, and the check
    // fails for each, saying so.
    proxy.cut();
    until_every_service_is(&server, ServingStatus::NotServing).await;
    for service in SERVICES {
        let (code, stderr) = healthcheck(&address, service).await;
        assert_eq!(code, Some(1), "{service:?} without a database: {stderr}");
        assert!(stderr.contains("is NOT_SERVING"), "{service:?}: {stderr}");
    }
    proxy.restore();
    until_every_service_is(&server, ServingStatus::Serving).await;
    for service in SERVICES {
        let (code, stderr) = healthcheck(&address, service).await;
        assert_eq!(code, Some(0), "{service:?} is SERVING again: {stderr}");
    }

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, stderr) = healthcheck(&nobody, "").await;
    assert_eq!(code, Some(1), "nobody listening: {stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
