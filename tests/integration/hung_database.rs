//! A database that hangs instead of dying (a stopped process, a frozen
//! machine), played by a proxy that keeps every connection open and passes
//! no byte on: a call fails UNAVAILABLE by its deadline or the store's bound,
//! whichever is sooner, and never hangs; a connection whose query was
//! abandoned is never lent again; a hung first host of a multi-host URL is
//! passed over by calls, the health check and the cache listener.

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::proto;
use usermgmt::store::Store;
use usermgmt::store::pool::{PoolSettings, build_pool};

use crate::support::proxy::DbProxy;
use crate::support::*;

/// How long any one phase may take before the test fails.
const PHASE: Duration = Duration::from_secs(30);

/// Slack on a bound the service promises, for a loaded machine (the CI runs
/// two tests at once on two cores): far below what a missing bound costs (a
/// 5 s `pg_sleep`, a 30 s phase).
const SLACK: Duration = Duration::from_millis(1000);

fn store_on(url: &str, call_timeout: Duration) -> Store {
    Store::new(
        build_pool(
            url,
            &PoolSettings {
                connect_timeout: Duration::from_millis(500),
                call_timeout: Some(call_timeout),
                ..PoolSettings::of_size(1)
            },
        )
        .expect("pool"),
    )
}

/// The backend process id of the connection the store lends next.
async fn next_backend(store: &Store) -> i32 {
    let mut conn = store.conn().await.expect("a connection");
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
        "pg_backend_pid()",
    ))
    .get_result::<i32>(&mut conn)
    .await
    .expect("the backend's pid")
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PHASE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn backend_alive(db: &TestDb, pid: i32) -> bool {
    db.client()
        .await
        .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .expect("pg_stat_activity")
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_query_never_lends_its_connection_again() {
    let db = TestDb::new().await;
    let store = store_on(&db.url, Duration::from_secs(30));
    let first = next_backend(&store).await;
    assert_eq!(
        next_backend(&store).await,
        first,
        "a connection whose work finished is lent again"
    );

    // The call's future is dropped while its query runs on the server.
    let abandoned = tokio::time::timeout(Duration::from_millis(300), async {
        let mut conn = store.conn().await.expect("a connection");
        diesel::sql_query("SELECT pg_sleep(2)")
            .execute(&mut conn)
            .await
    })
    .await;
    assert!(abandoned.is_err(), "the query was still running");

    let next = next_backend(&store).await;
    assert_ne!(
        next, first,
        "the connection of the abandoned query was lent again"
    );
    until("the abandoned backend is gone", async || {
        !backend_alive(&db, first).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_its_deadline_fails_unavailable_and_closes_its_connection() {
    let db = TestDb::new().await;
    let store = store_on(&db.url, Duration::from_millis(400));
    let first = next_backend(&store).await;
    let started = Instant::now();
    let result = async {
        let mut conn = store.conn().await?;
        diesel::sql_query("SELECT pg_sleep(5)")
            .execute(&mut conn)
            .await
            .map_err(usermgmt::store::db_error)
    }
    .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(usermgmt::domain::DomainError::Unavailable(_))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_millis(400) + SLACK, "{elapsed:?}");
    assert_ne!(next_backend(&store).await, first);

    // A sooner deadline of the work itself wins over the store's bound
    // (here 10 s, beyond the slack).
    let patient = store_on(&db.url, Duration::from_secs(10));
    let started = Instant::now();
    let due = tokio::time::Instant::now() + Duration::from_millis(150);
    let result = usermgmt::store::deadline::within(due, async {
        let mut conn = patient.conn().await?;
        diesel::sql_query("SELECT pg_sleep(20)")
            .execute(&mut conn)
            .await
            .map_err(usermgmt::store::db_error)
    })
    .await;
    assert!(
        matches!(result, Err(usermgmt::domain::DomainError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(150) + SLACK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_gets_no_answer_leaves_no_connection_behind() {
    let db = TestDb::new().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let store = store_on(&proxy.url(&db.name), Duration::from_secs(30));
    let first = next_backend(&store).await;
    proxy.freeze();
    let started = Instant::now();
    assert!(store.ping(Duration::from_millis(300)).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(300) + SLACK);
    // Back: the held check reaches the server and is answered; its
    // connection would work again, but it is not lent again.
    proxy.thaw();
    assert_ne!(next_backend(&store).await, first);
    store
        .ping(Duration::from_secs(5))
        .await
        .expect("the database answers");
}

async fn health(channel: &tonic::transport::Channel) -> Option<i32> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|response| response.into_inner().status)
}

/// CreateUser with a deadline of `deadline`; how it ended and when.
async fn create_with_deadline(
    admin: &Session,
    email: &str,
    deadline: Duration,
) -> (Result<proto::User, tonic::Status>, Duration) {
    let mut request = admin.req(proto::CreateUserRequest {
        email: email.into(),
        role: proto::Role::NanoReadOnly as i32,
        password: PASSWORD.into(),
    });
    request.set_timeout(deadline);
    let started = Instant::now();
    let result = admin
        .users()
        .create_user(request)
        .await
        .map(|response| response.into_inner().user.expect("user"));
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_fails_calls_unavailable_before_their_deadline() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let url = proxy.url(&db.name);
    let server = TestServer::start_on(
        db,
        &url,
        &[
            "--db-call-timeout-ms",
            "1500",
            "--db-connect-timeout-ms",
            "2000",
            "--health-interval-ms",
            "100",
        ],
    )
    .await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    admin
        .create_user("before@acme.example.com", proto::Role::NanoReadOnly)
        .await
        .expect("a write before");

    proxy.freeze();
    // A caller with time to spare: the store's bound (1.5 s) ends the call.
    for n in 0..3 {
        let (result, elapsed) =
            create_with_deadline(&admin, &format!("long{n}@acme.example.com"), PHASE).await;
        assert_status(result, Code::Unavailable, None);
        assert!(
            elapsed < Duration::from_millis(1500) + SLACK,
            "call {n} took {elapsed:?}"
        );
    }
    // A hurried caller: its own deadline, less a margin, ends the call (a new
    // connection's handshake alone may take 2 s), and it hears UNAVAILABLE
    // rather than its deadline passing.
    for n in 0..3 {
        let (result, elapsed) = create_with_deadline(
            &admin,
            &format!("short{n}@acme.example.com"),
            Duration::from_millis(800),
        )
        .await;
        assert_status(result, Code::Unavailable, None);
        assert!(
            elapsed < Duration::from_millis(800),
            "call {n}: {elapsed:?}"
        );
    }
    until("health reports NOT_SERVING", async || {
        health(&channel).await == Some(ServingStatus::NotServing as i32)
    })
    .await;

    proxy.thaw();
    until("writes succeed again", async || {
        create_with_deadline(&admin, "after@acme.example.com", Duration::from_secs(5))
            .await
            .0
            .is_ok()
    })
    .await;
    until("health reports SERVING", async || {
        health(&channel).await == Some(ServingStatus::Serving as i32)
    })
    .await;
}

/// A multi-host URL whose first host hangs; the second is the same database
/// reached directly (standing in for the standby that takes over). The
/// sessions the proxy holds are ended on the server, as a promotion leaves
/// the hung primary's sessions behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_first_host_is_passed_over_by_calls_health_and_the_cache_listener() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let inspect = db.client().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let url = format!(
        "postgres://postgres@{},127.0.0.1:5432/{}?target_session_attrs=read-write",
        proxy.addr, db.name
    );
    let call_timeout = Duration::from_millis(1000);
    let connect_timeout = Duration::from_millis(500);
    let server = TestServer::start_on(
        db,
        &url,
        &[
            "--db-call-timeout-ms",
            "1000",
            "--db-connect-timeout-ms",
            "500",
            "--health-interval-ms",
            "100",
        ],
    )
    .await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let user = admin
        .create_user("user@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("a write before");
    let user_session = Session::login(&channel, "user@acme.example.com", PASSWORD).await;
    user_session.who_am_i().await.expect("signed in");

    proxy.freeze();
    let frozen_at = Instant::now();
    let frozen_on_server: f64 = inspect
        .query_one("SELECT extract(epoch FROM now())::float8", &[])
        .await
        .expect("now")
        .get(0);
    let ended: i64 = inspect
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE client_port = ANY($1)",
            &[&proxy.upstream_ports()],
        )
        .await
        .expect("end the proxied sessions")
        .get(0);
    assert!(ended > 0, "the server had sessions through the proxy");

    let mut n = 0;
    let back_after = loop {
        n += 1;
        let (result, elapsed) =
            create_with_deadline(&admin, &format!("w{n}@acme.example.com"), PHASE).await;
        // The bound is per database use, and a write makes two while the
        // cache is off (the per-call check reads the caller, then the write),
        // each waiting at most the call timeout plus a handshake.
        assert!(
            elapsed < (call_timeout + connect_timeout) * 2 + SLACK,
            "call {n} took {elapsed:?}"
        );
        match result {
            Ok(_) => break frozen_at.elapsed(),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(frozen_at.elapsed() < PHASE, "writes never came back");
    };
    println!("writes back {back_after:?} after the first host hung");
    // At worst the first call and a use of the next wait their bound out on
    // connections through the first host before the check of the host marks
    // it hung and drops them.
    assert!(
        back_after < (call_timeout + connect_timeout) * 3 + SLACK * 2,
        "writes came back after {back_after:?}"
    );
    until("health reports SERVING", async || {
        health(&channel).await == Some(ServingStatus::Serving as i32)
    })
    .await;
    // The listener's heartbeats renew its lease (of 1 s) from the second
    // host: the first passes nothing on since the freeze.
    until(
        "the cache listener heartbeats from the second host",
        async || {
            let lease: f64 = inspect
                .query_one(
                    "SELECT coalesce(extract(epoch FROM max(lease_until))::float8, 0) \
                 FROM cache_replicas",
                    &[],
                )
                .await
                .expect("lease")
                .get(0);
            lease > frozen_on_server + 1.5
        },
    )
    .await;

    // A revocation after the switch is refused on the next call.
    let asked = admin.ask_renew(&user.id).await.expect("first step");
    admin
        .confirm_renew(&user.id, &asked.confirmation_token)
        .await
        .expect("renew the tokenKey");
    assert_status(
        user_session.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    proxy.thaw();
}
