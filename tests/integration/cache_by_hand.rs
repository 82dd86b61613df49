//! Two `usermgmt serve` processes on one database, the cache on: changes made
//! in the database by hand reach both caches, and the cache protocol holds at
//! its edges (a lease that looks ended, a stopped replica, late
//! acknowledgements).

use std::time::{Duration, Instant};

use tonic::Code;
use usermgmt::proto::{self, Role, auth_service_client::AuthServiceClient, credential::Kind};
use usermgmt::store::cache::{HEARTBEAT, LEASE, MAX_SETTLE, TRUST};
use uuid::Uuid;

use crate::support::*;

const BOB: &str = "bob@acme.example.com";

/// How long a change made by hand, its triggers firing, may take to reach
/// every replica: each has evicted, or stopped trusting its cache, within
/// TRUST of the commit; MAX_SETTLE more is slack for a loaded machine. Below
/// the cache's default maximum age, so the backstop cannot pass these tests.
pub(crate) fn by_hand_bound() -> Duration {
    TRUST + MAX_SETTLE
}

/// Calls `call` until it fails or `bound` has passed; its last answer.
async fn until_refused<T, F, Fut>(bound: Duration, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let start = Instant::now();
    loop {
        let result = call().await;
        if result.is_err() || start.elapsed() > bound {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `condition` became true within `bound`.
pub(crate) async fn poll_until<F, Fut>(bound: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if start.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn replica_ids(db: &tokio_postgres::Client) -> Vec<Uuid> {
    db.query("SELECT id FROM cache_replicas", &[])
        .await
        .expect("replicas")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Two replicas, an organisation, its admin signed in on the first, and bob
/// (nanoUser) signed in on each, with bob cached on both.
struct Setup {
    // Replicas before the database: they stop first.
    _first: Replica,
    second: Replica,
    db: TestDb,
    second_id: Uuid,
    org: Org,
    admin: Session,
    bob_id: String,
    bob: [Session; 2],
}

impl Setup {
    async fn start(env: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let client = db.client().await;
        let registered = |n: usize| {
            let client = &client;
            move || async move { replica_ids(client).await.len() == n }
        };
        // One at a time, to tell the second's lease from the first's.
        let first = Replica::start_with_env(&db.url, env).await;
        assert!(poll_until(LEASE * 5, registered(1)).await, "first lease");
        let first_id = replica_ids(&client).await[0];
        let second = Replica::start_with_env(&db.url, env).await;
        assert!(poll_until(LEASE * 5, registered(2)).await, "second lease");
        let second_id = *replica_ids(&client)
            .await
            .iter()
            .find(|id| **id != first_id)
            .expect("the second replica's lease");

        let org = create_org(&db, "Acme").await;
        let on_first = channel(first.addr).await;
        let on_second = channel(second.addr).await;
        let admin = Session::login(&on_first, &org.admin_email, ADMIN_PASSWORD).await;
        let bob_id = admin
            .create_user(BOB, Role::NanoUser)
            .await
            .expect("create bob")
            .id;
        let bob = [
            Session::login(&on_first, BOB, PASSWORD).await,
            Session::login(&on_second, BOB, PASSWORD).await,
        ];
        for session in &bob {
            for _ in 0..3 {
                session.who_am_i().await.expect("bob is valid");
            }
        }
        Setup {
            _first: first,
            second,
            db,
            second_id,
            org,
            admin,
            bob_id,
            bob,
        }
    }

    async fn sql(&self, sql: &str) {
        self.db.client().await.batch_execute(sql).await.expect(sql);
    }

    /// Asserts that bob's token is refused, TOKEN_REVOKED, on both replicas
    /// within `bound`.
    async fn bob_refused_within(&self, bound: Duration) {
        for session in &self.bob {
            let answer = until_refused(bound, || session.who_am_i()).await;
            assert_status(answer, Code::Unauthenticated, Some("TOKEN_REVOKED"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_of_users_reaches_every_replica() {
    let setup = Setup::start(&[]).await;
    setup.sql("TRUNCATE users CASCADE").await;
    setup.bob_refused_within(by_hand_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_of_service_credentials_reaches_every_replica() {
    let setup = Setup::start(&[]).await;
    let service_key = register_service(&setup.db, "streams").await;
    let authorize = |session: &Session| {
        let request = proto::AuthorizeRequest {
            credential: Some(proto::Credential {
                kind: Some(Kind::AccessToken(session.token.clone())),
            }),
            permission: "users.read".into(),
            organisation_id: String::new(),
        };
        let mut auth = AuthServiceClient::new(session.channel.clone());
        let request = with_header(request, "x-usermgmt-service-key", &service_key);
        async move { auth.authorize(request).await }
    };
    for session in &setup.bob {
        for _ in 0..3 {
            let answer = authorize(session).await.expect("a registered service");
            assert!(answer.into_inner().allowed);
        }
    }
    setup.sql("TRUNCATE service_credentials").await;
    for session in &setup.bob {
        let answer = until_refused(by_hand_bound(), || authorize(session)).await;
        assert_status(
            answer,
            Code::Unauthenticated,
            Some("SERVICE_CREDENTIALS_INVALID"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moved_to_another_organisation_no_longer_acts_in_the_old_one() {
    let setup = Setup::start(&[]).await;
    let other = create_org(&setup.db, "Beta").await;
    setup
        .db
        .client()
        .await
        .execute(
            "UPDATE users SET organisation_id = $1 WHERE email = $2",
            &[&other.id, &BOB],
        )
        .await
        .expect("move bob");
    setup.bob_refused_within(by_hand_bound()).await;
    // The organisation bob left still works for its admin.
    setup.admin.who_am_i().await.expect("the admin stays");
    assert_ne!(setup.org.id, other.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_under_replication_role_replica_still_reaches_every_replica() {
    let setup = Setup::start(&[]).await;
    setup
        .sql(&format!(
            "SET session_replication_role = replica; \
             UPDATE users SET token_key = gen_random_uuid() WHERE email = '{BOB}'"
        ))
        .await;
    setup.bob_refused_within(by_hand_bound()).await;
}

/// The backstop: with the triggers disabled nothing notifies the replicas,
/// and a change is seen once the entries reach the maximum age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_triggers_disabled_a_change_is_seen_within_the_maximum_age() {
    let max_age = Duration::from_millis(300);
    let millis = max_age.as_millis().to_string();
    let setup = Setup::start(&[("USERMGMT_AUTH_CACHE_MAX_AGE_MS", &millis)]).await;
    setup
        .sql(&format!(
            "ALTER TABLE users DISABLE TRIGGER ALL; \
             UPDATE users SET token_key = gen_random_uuid() WHERE email = '{BOB}'"
        ))
        .await;
    setup.bob_refused_within(max_age + MAX_SETTLE).await;
}

/// A lease on the database's clock that ended only just may belong to a
/// replica that still trusts its cache (measured on its own clock): the
/// writer waits its own deadline out for it rather than count it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_lease_looks_ended_is_waited_for_while_it_may_still_trust() {
    let setup = Setup::start(&[]).await;
    let confirmation = setup.admin.ask_renew(&setup.bob_id).await.expect("ask");
    // The second replica's next heartbeat writes a lease that has already
    // ended, as if the database's clock had stepped forward, and comes back
    // (the replica trusts its cache from it); the one after stalls, so that
    // the replica hears of no change meanwhile.
    setup
        .sql(&format!(
            "CREATE FUNCTION test_step_clock() RETURNS trigger AS $$ \
             BEGIN \
                 IF NEW.id = '{}' THEN \
                     IF OLD.lease_until < now() THEN PERFORM pg_sleep(60); END IF; \
                     NEW.lease_until := now() - interval '100 milliseconds'; \
                 END IF; \
                 RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER test_step_clock BEFORE UPDATE ON cache_replicas \
                 FOR EACH ROW EXECUTE FUNCTION test_step_clock()",
            setup.second_id
        ))
        .await;
    let db = &setup.db.client().await;
    let stalled = move || async move {
        count(
            db,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .await
            > 0
    };
    assert!(
        poll_until(HEARTBEAT * 10, stalled).await,
        "the second replica's heartbeat stalls"
    );

    setup
        .admin
        .confirm_renew(&setup.bob_id, &confirmation.confirmation_token)
        .await
        .expect("renew through the first replica");
    assert_status(
        setup.bob[1].who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

/// A replica that stops answering (here: SIGSTOP, its lease made to look
/// live for an hour) costs a write at most the longest settle; the
/// acknowledgement it sends once resumed, after the writer gave up, does not
/// stay in `cache_acks`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_costs_a_write_the_longest_settle_and_its_late_ack_is_cleaned_up() {
    let setup = Setup::start(&[]).await;
    let db = &setup.db.client().await;
    // The settle, and twice as much again for the call's own work.
    let bound = MAX_SETTLE * 3;
    let late_ack = &format!(
        "SELECT count(*) FROM cache_acks WHERE replica_id = '{}'",
        setup.second_id
    );
    let mut role = Role::NanoUser;
    let mut acknowledged_late = false;
    for _ in 0..3 {
        role = if role == Role::NanoUser {
            Role::NanoReadOnly
        } else {
            Role::NanoUser
        };
        setup.second.signal("STOP");
        db.execute(
            "UPDATE cache_replicas SET lease_until = now() + interval '1 hour' WHERE id = $1",
            &[&setup.second_id],
        )
        .await
        .expect("a lease that looks live");
        let start = Instant::now();
        let write =
            tokio::time::timeout(bound * 4, setup.admin.set_role(&setup.bob_id, role, "")).await;
        let took = start.elapsed();
        setup.second.signal("CONT");
        write
            .expect("the write returns despite the stopped replica")
            .expect("set the role");
        assert!(
            took <= bound,
            "the write took {took:?}, more than {bound:?}"
        );
        // Resumed, the replica acknowledges the probe it was sent, too late.
        if poll_until(by_hand_bound(), move || async move {
            count(db, late_ack).await > 0
        })
        .await
        {
            acknowledged_late = true;
            break;
        }
    }
    assert!(acknowledged_late, "the resumed replica acknowledged late");

    let settle_ms = MAX_SETTLE.as_millis();
    let recent = &format!(
        "SELECT count(*) FROM cache_acks WHERE created_at > now() - interval '{settle_ms} milliseconds'"
    );
    assert!(
        poll_until(MAX_SETTLE * 4, move || async move {
            count(db, recent).await == 0
        })
        .await,
        "the late acknowledgement grows older than the longest settle"
    );
    let other_role = if role == Role::NanoUser {
        Role::NanoReadOnly
    } else {
        Role::NanoUser
    };
    setup
        .admin
        .set_role(&setup.bob_id, other_role, "")
        .await
        .expect("the next write");
    assert_eq!(count(db, "SELECT count(*) FROM cache_acks").await, 0);
}
