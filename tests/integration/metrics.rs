//! Prometheus metrics on their own HTTP port.
//!
//! The registry is process-global: a server inside the test binary would
//! count every other test's calls too. So the server here is a `usermgmt
//! serve` process of its own, and the test asserts what its own calls
//! changed, from /metrics read before and after them.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;
use usermgmt::proto::organisation_service_client::OrganisationServiceClient;

use crate::support::lock::OrgLock;
use crate::support::server::{spawn_serve, wait_until_serving};
use crate::support::{
    ADMIN_PASSWORD, Session, TestDb, assert_status, authed, channel, create_org, free_port,
};

/// A plain HTTP/1.1 GET; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// A `usermgmt serve` process with metrics, killed when dropped.
struct MetricsServer {
    addr: SocketAddr,
    metrics: SocketAddr,
    child: Child,
}

impl MetricsServer {
    /// One pool connection and a short wait for it, so that the test can
    /// exhaust the pool; no per-call cache, so that every call needs it.
    async fn start(db: &TestDb) -> Self {
        Self::start_with(
            db,
            &[
                "--db-pool-size",
                "1",
                "--db-wait-timeout-ms",
                "500",
                "--auth-cache",
                "false",
            ],
        )
        .await
    }

    async fn start_with(db: &TestDb, args: &[&str]) -> Self {
        // The metrics port is chosen free here; were it taken meanwhile, the
        // server would fail to start, never answer for another.
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let (child, addr) = spawn_serve(
            Command::new(env!("CARGO_BIN_EXE_usermgmt"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(["--metrics-listen", &metrics.to_string()])
                .args(args)
                .env("DATABASE_URL", &db.url)
                .env("USERMGMT_LOG", "warn"),
        )
        .await
        .expect("usermgmt serve");
        wait_until_serving(addr).await;
        MetricsServer {
            addr,
            metrics,
            child,
        }
    }

    async fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics").await;
        assert!(status.contains(" 200 "), "{status}");
        body
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series (its full name with labels); 0 when absent.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

const AUTH: &str = r#"service="usermgmt.v1.AuthService""#;
const ORGANISATIONS: &str = r#"service="usermgmt.v1.OrganisationService""#;
const USERS: &str = r#"service="usermgmt.v1.UserService""#;

fn requests(method: &str, code: &str) -> String {
    calls(method, code, AUTH)
}

fn calls(method: &str, code: &str, service: &str) -> String {
    format!(r#"usermgmt_grpc_requests_total{{code="{code}",method="{method}",{service}}}"#)
}

fn durations(method: &str) -> String {
    format!(r#"usermgmt_grpc_request_duration_seconds_count{{method="{method}",{AUTH}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_this_servers_calls_authorization_and_the_pool() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Metrics").await;
    let server = MetricsServer::start(&db).await;
    let channel = channel(server.addr).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let before = server.scrape().await;

    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    auth.who_am_i(authed(proto::WhoAmIRequest {}, &admin.token))
        .await
        .expect("who am i");
    assert_status(
        auth.who_am_i(proto::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MISSING"),
    );
    // The pool's one connection held by a change queued on the
    // organisation's row lock: the next call times out waiting for it.
    let lock = OrgLock::take(&db, org.id).await;
    let mut slow = tokio::spawn({
        let mut organisations = OrganisationServiceClient::new(channel.clone());
        let request = admin.req(proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                name: "Metrics Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        });
        async move { organisations.update_organisation(request).await }
    });
    lock.until_queued(&mut slow, "UpdateOrganisation").await;
    assert_status(
        admin
            .users()
            .list_users(admin.req(proto::ListUsersRequest::default()))
            .await,
        Code::Unavailable,
        None,
    );
    lock.commit().await;
    slow.await.expect("the slow call").expect("it completes");

    let after = server.scrape().await;
    let change = |series: &str| sample(&after, series) - sample(&before, series);
    for (series, by) in [
        (requests("Login", "OK"), 1.0),
        (requests("WhoAmI", "OK"), 1.0),
        (requests("WhoAmI", "UNAUTHENTICATED"), 1.0),
        (calls("ListUsers", "UNAVAILABLE", USERS), 1.0),
        (calls("UpdateOrganisation", "OK", ORGANISATIONS), 1.0),
        (durations("Login"), 1.0),
        (durations("WhoAmI"), 2.0),
        (
            r#"usermgmt_authorization_total{outcome="allowed",reason="anonymous"}"#.into(),
            1.0,
        ),
        // The WhoAmI and the UpdateOrganisation; the ListUsers never got its
        // connection to check the token with.
        (
            r#"usermgmt_authorization_total{outcome="allowed",reason="user"}"#.into(),
            2.0,
        ),
        (
            r#"usermgmt_authorization_total{outcome="denied",reason="CREDENTIALS_MISSING"}"#.into(),
            1.0,
        ),
        (
            r#"usermgmt_database_errors_total{kind="pool_timeout"}"#.into(),
            1.0,
        ),
    ] {
        assert_eq!(
            change(&series),
            by,
            "{series}\nbefore:\n{before}\nafter:\n{after}"
        );
    }
    assert_eq!(sample(&after, "usermgmt_db_pool_connections_max"), 1.0);
    for gauge in [
        "usermgmt_db_pool_connections ",
        "usermgmt_db_pool_connections_idle ",
        "usermgmt_db_pool_connections_in_use ",
        "usermgmt_db_pool_waiting ",
    ] {
        assert!(
            after.contains(gauge),
            "{gauge} missing from /metrics:\n{after}"
        );
    }

    let (status, _) = http_get(server.metrics, "/elsewhere").await;
    assert!(status.contains(" 404 "), "{status}");

    // A change queued on the row lock past its caller's deadline: the
    // watchdog closes its connection, and counts why.
    let before = server.scrape().await;
    let lock = OrgLock::take(&db, org.id).await;
    let mut request = admin.req(proto::UpdateOrganisationRequest {
        organisation: Some(proto::Organisation {
            name: "Metrics Late".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
    });
    request.set_timeout(Duration::from_millis(1500));
    assert_status(
        OrganisationServiceClient::new(channel.clone())
            .update_organisation(request)
            .await,
        Code::Unavailable,
        None,
    );
    lock.commit().await;
    let after = server.scrape().await;
    let change = |series: &str| sample(&after, series) - sample(&before, series);
    for (series, by) in [
        (
            r#"usermgmt_db_connections_closed_total{reason="deadline"}"#,
            1.0,
        ),
        (
            r#"usermgmt_db_connections_closed_total{reason="abandoned"}"#,
            0.0,
        ),
    ] {
        assert_eq!(
            change(series),
            by,
            "{series}\nbefore:\n{before}\nafter:\n{after}"
        );
    }
    // The call saw its connection closed, as a lost one.
    let lost = r#"usermgmt_database_errors_total{kind="connection_lost"}"#;
    assert!(change(lost) >= 1.0, "{lost}\nafter:\n{after}");
}

fn cache_series(family: &str, cache: &str) -> String {
    format!(r#"{family}{{cache="{cache}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_count_their_hits_misses_and_invalidations() {
    let db = TestDb::new().await;
    let org = create_org(&db, "CacheMetrics").await;
    let server = MetricsServer::start_with(&db, &[]).await;
    let channel = channel(server.addr).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let hits = cache_series("usermgmt_cache_hits_total", "users");
    let misses = cache_series("usermgmt_cache_misses_total", "users");
    let token_hits = cache_series("usermgmt_cache_hits_total", "verified_tokens");
    let token_misses = cache_series("usermgmt_cache_misses_total", "verified_tokens");
    let invalidations = r#"usermgmt_cache_invalidations_total{scope="organisation"}"#;
    let mut who_am_i = async || {
        auth.who_am_i(authed(proto::WhoAmIRequest {}, &admin.token))
            .await
            .expect("who am i");
    };

    // Until the replica trusts its cache (its first heartbeat came back),
    // every lookup is a miss; then the user is read once and found after.
    who_am_i().await;
    let first = server.scrape().await;
    assert_eq!(
        sample(&first, &token_misses),
        1.0,
        "the token's first check"
    );
    loop {
        let before = server.scrape().await;
        who_am_i().await;
        if sample(&server.scrape().await, &hits) > sample(&before, &hits) {
            break;
        }
    }
    let before = server.scrape().await;
    for _ in 0..3 {
        who_am_i().await;
    }
    let after = server.scrape().await;
    let change = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        change(&hits) + change(&misses),
        3.0,
        "one user lookup a call"
    );
    assert!(change(&hits) >= 1.0, "the trusted cache answers:\n{after}");
    assert_eq!(change(&token_hits), 3.0, "the token is remembered");
    assert_eq!(change(&token_misses), 0.0);
    assert!(sample(&after, &cache_series("usermgmt_cache_entries", "users")) >= 1.0);

    // A change of the organisation retires its entries on this replica
    // before the call returns: the next lookup misses.
    let other = admin
        .create_user("cache-metrics@example.com", proto::Role::NanoUser)
        .await
        .expect("create user")
        .id;
    let before = server.scrape().await;
    admin
        .users()
        .update_user_role(admin.req(proto::UpdateUserRoleRequest {
            user_id: other,
            role: proto::Role::NanoReadOnly as i32,
            ..Default::default()
        }))
        .await
        .expect("role change");
    let changed = server.scrape().await;
    assert!(
        sample(&changed, invalidations) > sample(&before, invalidations),
        "the change's notification was counted:\n{changed}"
    );
    who_am_i().await;
    let after = server.scrape().await;
    assert_eq!(sample(&after, &misses) - sample(&changed, &misses), 1.0);
    assert_eq!(sample(&after, &hits), sample(&changed, &hits));
}
