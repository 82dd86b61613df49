//! Bounded password hashing: a caller gets at most its share of the hashing
//! queue (`--password-hash-queue-per-caller`), the queue is bounded as a
//! whole (`--password-hash-queue`), and a job that does not start in time
//! (`--password-hash-max-wait-ms`) fails. A call refused by them fails
//! RESOURCE_EXHAUSTED, reason PASSWORD_HASHING_BUSY, with a RetryInfo, and
//! has no effect: exactly the calls answered OK created a user, each with
//! its one audit event. Other callers keep their share meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto::{self, Role, user_service_client::UserServiceClient};
use uuid::Uuid;

use crate::support::*;

/// The longest one call may take.
const CALL_BOUND: Duration = Duration::from_secs(30);

/// What a storm of CreateUser calls got.
#[derive(Default)]
struct Storm {
    /// Email → the created user's id.
    created: Vec<(String, String)>,
    refused: Vec<(String, Status)>,
}

/// Fires the CreateUser calls (email, request) together once `start` opens,
/// and sorts the answers.
async fn storm(
    channel: &Channel,
    calls: Vec<(String, Request<proto::CreateUserRequest>)>,
    start: Arc<Barrier>,
) -> Storm {
    let mut tasks = JoinSet::new();
    for (email, request) in calls {
        let mut users = UserServiceClient::new(channel.clone());
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let result = tokio::time::timeout(CALL_BOUND, users.create_user(request))
                .await
                .unwrap_or_else(|_| panic!("CreateUser of {email} took over {CALL_BOUND:?}"));
            (email, result)
        });
    }
    let mut storm = Storm::default();
    let calls = tasks.len();
    while let Some(joined) = tasks.join_next().await {
        let (email, result) = joined.expect("a CreateUser task");
        match result {
            Ok(response) => {
                let user = response.into_inner().user.expect("the created user");
                assert_eq!(user.email, email);
                storm.created.push((email, user.id));
            }
            Err(status) => storm.refused.push((email, status)),
        }
    }
    eprintln!(
        "hasher_bounds: {calls} calls at once, {} created, {} refused",
        storm.created.len(),
        storm.refused.len()
    );
    storm
}

fn create_request(email: &str) -> proto::CreateUserRequest {
    proto::CreateUserRequest {
        email: email.into(),
        role: Role::NanoUser as i32,
        password: PASSWORD.into(),
    }
}

/// Every refusal is the hashing queue's, with its RetryInfo.
#[track_caller]
fn assert_all_busy(refused: &[(String, Status)]) {
    for (email, status) in refused {
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{email}: {status:?}"
        );
        let reason = status.get_details_error_info().map(|info| info.reason);
        assert_eq!(
            reason.as_deref(),
            Some("PASSWORD_HASHING_BUSY"),
            "{email}: {status:?}"
        );
        assert!(
            status.get_details_retry_info().is_some(),
            "{email}: a RetryInfo says when to try again: {status:?}"
        );
    }
}

/// Exactly the users answered OK exist (of those whose email is like
/// `emails_like`), and each has exactly one `user.create` event that was not
/// in `audited_before`.
async fn assert_created_exactly(
    server: &TestServer,
    org: Uuid,
    storm: &Storm,
    emails_like: &str,
    audited_before: &BTreeSet<String>,
) {
    let db = server.db.client().await;
    let rows = db
        .query(
            "SELECT id::text, email FROM users WHERE organisation_id = $1 AND email LIKE $2",
            &[&org, &emails_like],
        )
        .await
        .expect("the storm's users");
    let stored: BTreeSet<(String, String)> = rows
        .iter()
        .map(|row| (row.get::<_, String>(1), row.get::<_, String>(0)))
        .collect();
    let answered: BTreeSet<(String, String)> = storm.created.iter().cloned().collect();
    assert_eq!(
        stored, answered,
        "the users created are exactly those answered OK"
    );
    let events: Vec<String> = db
        .query(
            "SELECT target_id FROM audit_events WHERE organisation_id = $1 AND action = 'user.create'",
            &[&org],
        )
        .await
        .expect("user.create events")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|id| !audited_before.contains(id))
        .collect();
    let mut audited: Vec<&str> = events.iter().map(String::as_str).collect();
    audited.sort_unstable();
    let mut ids: Vec<&str> = storm.created.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(audited, ids, "one user.create event per user created");
}

async fn audited_creations(server: &TestServer, org: Uuid) -> BTreeSet<String> {
    server
        .db
        .client()
        .await
        .query(
            "SELECT target_id FROM audit_events WHERE organisation_id = $1 AND action = 'user.create'",
            &[&org],
        )
        .await
        .expect("user.create events")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_past_its_share_of_the_hashing_queue_is_refused_busy_with_no_effect() {
    const CALLS: usize = 40;
    let server = TestServer::start_with(&[
        "--password-hash-concurrency",
        "1",
        "--password-hash-queue-per-caller",
        "2",
    ])
    .await;
    let channel = server.channel().await;
    let org = create_org(&server.db, "Acme").await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    insert_user(&server.db, org.id, "operator@acme.example.com", "nanoUser").await;
    let audited_before = audited_creations(&server, org.id).await;

    let start = Arc::new(Barrier::new(CALLS + 2));
    // Another user signs in meanwhile, on a connection of its own: an
    // anonymous call, with the peer address's share.
    let login = tokio::spawn({
        let (start, channel) = (start.clone(), server.channel().await);
        async move {
            start.wait().await;
            tokio::time::timeout(
                CALL_BOUND,
                proto::auth_service_client::AuthServiceClient::new(channel).login(
                    proto::LoginRequest {
                        email: "operator@acme.example.com".into(),
                        password: PASSWORD.into(),
                        organisation_id: String::new(),
                    },
                ),
            )
            .await
            .expect("the login is bounded")
        }
    });
    let calls = (0..CALLS)
        .map(|i| {
            let email = format!("storm{i}@acme.example.com");
            let request = admin.req(create_request(&email));
            (email, request)
        })
        .collect();
    let storm = tokio::spawn({
        let (channel, start) = (channel.clone(), start.clone());
        async move { storm(&channel, calls, start).await }
    });
    start.wait().await;
    let storm = storm.await.expect("the storm");
    login
        .await
        .expect("the login task")
        .expect("another user signs in while the admin's share is full");

    assert_all_busy(&storm.refused);
    assert!(
        !storm.refused.is_empty(),
        "{CALLS} calls at once with a share of 2: some are refused"
    );
    assert!(
        storm.created.len() >= 2,
        "the first two calls fit the share: {} created",
        storm.created.len()
    );
    assert_eq!(storm.created.len() + storm.refused.len(), CALLS);
    assert_created_exactly(&server, org.id, &storm, "storm%", &audited_before).await;
    // The refused calls left nothing behind: they succeed when retried
    // one at a time.
    for (email, _) in &storm.refused {
        admin
            .create_user(email, Role::NanoUser)
            .await
            .unwrap_or_else(|status| panic!("retry {email}: {status:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_past_the_whole_queue_is_refused_busy_with_no_effect() {
    const CALLS_EACH: usize = 12;
    let server = TestServer::start_with(&[
        "--password-hash-concurrency",
        "1",
        "--password-hash-queue",
        "2",
        "--password-hash-queue-per-caller",
        "8",
    ])
    .await;
    let channel = server.channel().await;
    let org = create_org(&server.db, "Acme").await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let audited_before = audited_creations(&server, org.id).await;

    // Two callers, the admin and the API key, each within its own share.
    let mut calls = Vec::new();
    for i in 0..CALLS_EACH {
        let email = format!("queue-admin{i}@acme.example.com");
        calls.push((email.clone(), admin.req(create_request(&email))));
        let email = format!("queue-key{i}@acme.example.com");
        let request = with_header(create_request(&email), "x-bintu-apikey", &org.api_key);
        calls.push((email, request));
    }
    let start = Arc::new(Barrier::new(calls.len() + 1));
    let storm = tokio::spawn({
        let (channel, start) = (channel.clone(), start.clone());
        async move { storm(&channel, calls, start).await }
    });
    start.wait().await;
    let storm = storm.await.expect("the storm");

    assert_all_busy(&storm.refused);
    assert!(
        !storm.refused.is_empty(),
        "{} calls at once on a queue of 2: some are refused",
        2 * CALLS_EACH
    );
    assert!(!storm.created.is_empty(), "the first calls fit the queue");
    assert_created_exactly(&server, org.id, &storm, "queue-%", &audited_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hashing_job_not_started_in_time_is_refused_busy_with_no_effect() {
    const CALLS: usize = 20;
    let server = TestServer::start_with(&[
        "--password-hash-concurrency",
        "1",
        "--password-hash-queue-per-caller",
        "64",
        "--password-hash-max-wait-ms",
        "1",
    ])
    .await;
    let channel = server.channel().await;
    let org = create_org(&server.db, "Acme").await;
    // The API key, not a login: a login's own hash could miss the 1 ms too.
    let audited_before = audited_creations(&server, org.id).await;

    let calls = (0..CALLS)
        .map(|i| {
            let email = format!("late{i}@acme.example.com");
            let request = with_header(create_request(&email), "x-bintu-apikey", &org.api_key);
            (email, request)
        })
        .collect();
    let start = Arc::new(Barrier::new(CALLS + 1));
    let storm = tokio::spawn({
        let (channel, start) = (channel.clone(), start.clone());
        async move { storm(&channel, calls, start).await }
    });
    start.wait().await;
    let storm = storm.await.expect("the storm");

    assert_all_busy(&storm.refused);
    // One thread, {CALLS} jobs at once, 1 ms to start: those behind a
    // running hash (milliseconds of argon2id) cannot make it.
    assert!(
        !storm.refused.is_empty(),
        "{CALLS} jobs at once on one hashing thread with 1 ms to start: some are refused"
    );
    assert_created_exactly(&server, org.id, &storm, "late%", &audited_before).await;
}
