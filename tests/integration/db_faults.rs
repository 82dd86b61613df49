//! Database faults: an outage under load, played by a proxy that cuts every
//! connection and refuses new ones; and a pool exhausted by a slow query.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient, credential::Kind,
    organisation_service_client::OrganisationServiceClient,
};
use uuid::Uuid;

use crate::support::lock::OrgLock;
use crate::support::proxy::DbProxy;
use crate::support::*;

/// One call of the load: when it started, how long it took, how it ended.
#[derive(Debug, Clone)]
struct Call {
    kind: &'static str,
    started: Instant,
    elapsed: Duration,
    code: Code,
}

/// No call may take longer than this, database or not.
const CALL_BOUND: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct Load {
    channel: Channel,
    admin_token: String,
    victim_token: String,
    service_key: String,
    calls: Arc<Mutex<Vec<Call>>>,
    acknowledged: Arc<Mutex<Vec<Uuid>>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    async fn record<T>(
        &self,
        kind: &'static str,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Option<T> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CALL_BOUND * 2, call).await;
        let elapsed = started.elapsed();
        let (code, value) = match outcome {
            Ok(Ok(value)) => (Code::Ok, Some(value)),
            Ok(Err(status)) => (status.code(), None),
            Err(_) => (Code::DeadlineExceeded, None),
        };
        self.calls.lock().await.push(Call {
            kind,
            started,
            elapsed,
            code,
        });
        value
    }

    async fn run(self, task: usize) {
        let mut auth = AuthServiceClient::new(self.channel.clone());
        let mut users = proto::user_service_client::UserServiceClient::new(self.channel.clone());
        let mut n = 0;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let request = authed(
                proto::CreateUserRequest {
                    email: format!("load{task}-{n}@acme.example.com"),
                    role: Role::NanoReadOnly as i32,
                    password: PASSWORD.into(),
                },
                &self.admin_token,
            );
            if let Some(created) = self.record("CreateUser", users.create_user(request)).await {
                let id = created.into_inner().user.expect("user").id;
                self.acknowledged
                    .lock()
                    .await
                    .push(id.parse().expect("user id"));
            }
            let request = authed(proto::WhoAmIRequest {}, &self.admin_token);
            self.record("WhoAmI", auth.who_am_i(request)).await;
            let request = with_header(
                proto::AuthorizeRequest {
                    credential: Some(proto::Credential {
                        kind: Some(Kind::AccessToken(self.admin_token.clone())),
                    }),
                    permission: "users.read".into(),
                    organisation_id: String::new(),
                },
                "x-usermgmt-service-key",
                &self.service_key,
            );
            if let Some(decision) = self.record("Authorize", auth.authorize(request)).await {
                assert!(decision.into_inner().allowed, "the admin may read users");
            }
            // The revoked token: never OK, whatever the database does.
            let request = authed(proto::WhoAmIRequest {}, &self.victim_token);
            self.record("WhoAmI(revoked)", auth.who_am_i(request)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The moments health was seen in each state.
type HealthLog = Arc<Mutex<Vec<(Instant, ServingStatus)>>>;

/// The server's health interval in this test.
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);

/// The longest the health service may take to follow the database: the
/// interval's wait, then a ping bounded by the longer of the interval and
/// 1 s, and the watcher's own polling period, with a margin.
fn health_bound() -> Duration {
    HEALTH_INTERVAL + HEALTH_INTERVAL.max(Duration::from_secs(1)) + Duration::from_millis(300)
}

/// Polls health every 50 ms into `seen`.
async fn watch_health(channel: Channel, stop: Arc<AtomicBool>, seen: HealthLog) {
    let mut health = HealthClient::new(channel);
    while !stop.load(Ordering::SeqCst) {
        let status = tokio::time::timeout(
            Duration::from_secs(1),
            health.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        let status = match status {
            Ok(Ok(response)) => ServingStatus::try_from(response.into_inner().status)
                .unwrap_or(ServingStatus::Unknown),
            _ => ServingStatus::Unknown,
        };
        seen.lock().await.push((Instant::now(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `done` until it holds; fails after 30 s.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a call of `kind` that started after `after` has ended with `code`
/// (any code when `None`).
async fn ended_since(
    calls: &Mutex<Vec<Call>>,
    kind: &str,
    after: Instant,
    code: Option<Code>,
) -> bool {
    calls
        .lock()
        .await
        .iter()
        .any(|c| c.kind == kind && c.started >= after && code.is_none_or(|code| c.code == code))
}

fn first_seen(
    seen: &[(Instant, ServingStatus)],
    status: ServingStatus,
    after: Instant,
) -> Option<Instant> {
    seen.iter()
        .find(|(at, s)| *at >= after && *s == status)
        .map(|(at, _)| *at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_fails_fast_and_loses_no_acknowledged_write() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("usermgmt=warn")
        .with_test_writer()
        .try_init();
    let db = TestDb::new().await;
    let proxy = DbProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let url = proxy.url(&db.name);
    let interval = HEALTH_INTERVAL.as_millis().to_string();
    let server = TestServer::start_on(db, &url, &["--health-interval-ms", &interval]).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let victim = admin
        .create_user("victim@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create the victim");
    let victim_token = login(&channel, "victim@acme.example.com", PASSWORD).await;
    let load = Load {
        channel: channel.clone(),
        admin_token: admin.token.clone(),
        victim_token: victim_token.clone(),
        service_key: register_service(&server.db, "streams").await,
        calls: Arc::default(),
        acknowledged: Arc::default(),
        stop: Arc::default(),
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|task| tokio::spawn(load.clone().run(task)))
        .collect();
    let health_log = HealthLog::default();
    let health = tokio::spawn(watch_health(
        channel.clone(),
        load.stop.clone(),
        health_log.clone(),
    ));
    let calls = load.calls.clone();
    let succeeded_since = async |after: Instant| {
        for kind in ["CreateUser", "WhoAmI", "Authorize"] {
            if !ended_since(&calls, kind, after, Some(Code::Ok)).await {
                return false;
            }
        }
        true
    };

    // Load until every kind of call succeeded, revoke the victim's token
    // (through the service, as the cache's guarantee is about), cut.
    until("every call succeeds before the outage", async || {
        succeeded_since(started).await
    })
    .await;
    let renew = admin.ask_renew(&victim.id).await.expect("first step");
    admin
        .confirm_renew(&victim.id, &renew.confirmation_token)
        .await
        .expect("revoke the victim's token");
    let revoked = Instant::now();
    proxy.cut();
    let cut = Instant::now();
    // The outage lasts until health said so and calls ran past the cache's
    // trust.
    let past_trust = cut + usermgmt::store::cache::TRUST + Duration::from_millis(100);
    until("the outage is seen", async || {
        let down = first_seen(&health_log.lock().await, ServingStatus::NotServing, cut).is_some();
        down && Instant::now() > past_trust
            && ended_since(&calls, "CreateUser", past_trust, None).await
            && ended_since(&calls, "WhoAmI", past_trust, None).await
    })
    .await;
    // The outage ends, for the assertions, just before the restore.
    let restoring = Instant::now();
    proxy.restore();
    let restored = Instant::now();
    until("health and every call recover", async || {
        let up = first_seen(&health_log.lock().await, ServingStatus::Serving, restored);
        match up {
            Some(up) => succeeded_since(up).await,
            None => false,
        }
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a load task panicked");
    }
    health.await.expect("health task");
    let seen = health_log.lock().await.clone();

    // Health follows the database within its bound each way.
    let down = first_seen(&seen, ServingStatus::NotServing, cut).expect("NOT_SERVING seen");
    assert!(
        down - cut <= health_bound(),
        "NOT_SERVING after {:?}",
        down - cut
    );
    let up = first_seen(&seen, ServingStatus::Serving, restored).expect("SERVING again");
    assert!(
        up - restored <= health_bound(),
        "SERVING after {:?}",
        up - restored
    );

    let calls = load.calls.lock().await.clone();
    // A call that started in the outage but reached the database after the
    // restore may succeed; one that ended before the restore may not.
    let during = |c: &Call| {
        c.started >= cut + Duration::from_millis(100) && c.started + c.elapsed < restoring
    };
    for call in &calls {
        // Never hangs: every call ends within the bound.
        assert!(call.elapsed < CALL_BOUND, "{call:?} took too long");
        // Fails as UNAVAILABLE (retryable), or succeeds.
        if call.kind == "WhoAmI(revoked)" {
            if call.started >= revoked {
                assert!(
                    matches!(call.code, Code::Unauthenticated | Code::Unavailable),
                    "a revoked token: {call:?}"
                );
            }
        } else {
            assert!(
                matches!(call.code, Code::Ok | Code::Unavailable),
                "{call:?}"
            );
        }
        // While the database is down nothing succeeds that needs it. Reads
        // the cache answers (WhoAmI, Authorize) may, until the cache's trust
        // runs out (it is exact: nothing changes while the database is down).
        let cache_may_answer = call.kind != "CreateUser"
            && call.started < cut + usermgmt::store::cache::TRUST + Duration::from_millis(100);
        if during(call) && !cache_may_answer {
            assert_eq!(
                call.code,
                Code::Unavailable,
                "{call:?}: started {:?} after the cut",
                call.started - cut
            );
        }
    }
    // Every acknowledged write is there.
    let acknowledged = load.acknowledged.lock().await.clone();
    let client = server.db.client().await;
    let mut lost = 0;
    for id in &acknowledged {
        let found = client
            .query_opt("SELECT 1 FROM users WHERE id = $1", &[id])
            .await
            .expect("look up");
        if found.is_none() {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_status(
        AuthServiceClient::new(channel)
            .who_am_i(authed(proto::WhoAmIRequest {}, &victim_token))
            .await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let unavailable = calls.iter().filter(|c| c.code == Code::Unavailable).count();
    let slowest = calls.iter().map(|c| c.elapsed).max().unwrap_or_default();
    eprintln!(
        "outage: {} calls, {} UNAVAILABLE, slowest {slowest:?}; NOT_SERVING after {:?}, \
         SERVING {:?} after the restore; {} acknowledged writes, {lost} lost",
        calls.len(),
        unavailable,
        down - cut,
        up - restored,
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_unavailable_after_the_bounded_wait() {
    let server =
        TestServer::start_with(&["--db-pool-size", "1", "--db-wait-timeout-ms", "500"]).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    // A test transaction locks the organisation's row, so that a change of
    // the organisation holds the server's only connection while it waits.
    let locker = OrgLock::take(&server.db, org.id).await;
    let mut slow = tokio::spawn({
        let mut organisations = OrganisationServiceClient::new(channel.clone());
        let request = admin.req(rename_organisation("Acme Renamed"));
        async move { organisations.update_organisation(request).await }
    });
    locker.until_queued(&mut slow, "UpdateOrganisation").await;

    // Other calls wait at most the pool's wait timeout, then UNAVAILABLE.
    for _ in 0..3 {
        let started = Instant::now();
        let result = admin.who_am_i().await;
        let elapsed = started.elapsed();
        let status = assert_status(result, Code::Unavailable, None);
        assert!(
            tonic_types::StatusExt::get_details_retry_info(&status).is_some(),
            "UNAVAILABLE says when to retry"
        );
        assert!(elapsed < Duration::from_secs(2), "waited {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(400), "waited {elapsed:?}");
    }

    // Once the lock goes, the slow change completes and the pool recovers.
    locker.commit().await;
    slow.await
        .expect("the slow call")
        .expect("the change completes");
    admin.who_am_i().await.expect("the pool recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stuck_on_a_lock_is_cancelled_after_the_statement_timeout() {
    let server = TestServer::start_with(&["--db-statement-timeout-ms", "700"]).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let locker = server.db.client().await;
    locker.batch_execute("BEGIN").await.expect("begin");
    locker
        .execute(
            "SELECT 1 FROM organisations WHERE id = $1 FOR UPDATE",
            &[&org.id],
        )
        .await
        .expect("lock");
    let started = Instant::now();
    let result = OrganisationServiceClient::new(channel)
        .update_organisation(admin.req(rename_organisation("Acme Renamed")))
        .await;
    let elapsed = started.elapsed();
    assert_status(result, Code::Unavailable, None);
    assert!(elapsed < Duration::from_secs(3), "waited {elapsed:?}");
    locker.batch_execute("ROLLBACK").await.expect("rollback");
    let name: String = server
        .db
        .client()
        .await
        .query_one("SELECT name FROM organisations WHERE id = $1", &[&org.id])
        .await
        .expect("name")
        .get(0);
    assert_eq!(name, "Acme", "the cancelled change left nothing behind");
    admin.who_am_i().await.expect("the server still serves");
}
