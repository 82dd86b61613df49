use tonic::Code;
use usermgmt::proto::{self, auth_service_client::AuthServiceClient};

use crate::cache_by_hand::poll_until;
use crate::support::lock::{OrgLock, QUEUE_DEADLINE};
use crate::support::*;

fn login_request(email: &str, password: &str) -> proto::LoginRequest {
    proto::LoginRequest {
        email: email.into(),
        password: password.into(),
        organisation_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_token_that_who_am_i_accepts() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let mut auth = AuthServiceClient::new(channel.clone());

    // The email is matched whatever its case and surrounding space.
    let response = auth
        .login(login_request("  ADMIN@acme.example.com ", ADMIN_PASSWORD))
        .await
        .expect("login")
        .into_inner();
    assert_eq!(response.user_id, org.admin_id.to_string());
    assert_eq!(response.organisation_id, org.id.to_string());
    assert!(response.expires_at.is_some());

    let me = auth
        .who_am_i(authed(proto::WhoAmIRequest {}, &response.access_token))
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.role, proto::Role::NanoAdmin as i32);
    let user = me.user.expect("user");
    assert_eq!(user.email, org.admin_email);
    assert_eq!(user.token_key_fingerprint.len(), 12);
    let organisation = me.organisation.expect("organisation");
    assert_eq!(organisation.name, "Acme");
    assert!(me.permissions.iter().any(|p| p == "users.delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_fail_alike() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);

    let wrong_password = auth
        .login(login_request(&org.admin_email, "not the password"))
        .await;
    let unknown_email = auth
        .login(login_request("nobody@acme.example.com", ADMIN_PASSWORD))
        .await;
    let a = assert_status(wrong_password, Code::Unauthenticated, Some("LOGIN_FAILED"));
    let b = assert_status(unknown_email, Code::Unauthenticated, Some("LOGIN_FAILED"));
    assert_eq!(a.message(), b.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_validates_its_fields() {
    let server = TestServer::start().await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    let status = assert_status(
        auth.login(login_request("not-an-email", "")).await,
        Code::InvalidArgument,
        None,
    );
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["email", "password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_email_in_two_organisations_needs_the_organisation() {
    let server = TestServer::start().await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let email = "shared@example.com";
    insert_user(&server.db, acme.id, email, "nanoUser").await;
    let in_globex = insert_user(&server.db, globex.id, email, "nanoReadOnly").await;
    let mut auth = AuthServiceClient::new(server.channel().await);

    assert_status(
        auth.login(login_request(email, PASSWORD)).await,
        Code::FailedPrecondition,
        Some("ORGANISATION_REQUIRED"),
    );
    let response = auth
        .login(proto::LoginRequest {
            organisation_id: globex.id.to_string(),
            ..login_request(email, PASSWORD)
        })
        .await
        .expect("login with organisation")
        .into_inner();
    assert_eq!(response.user_id, in_globex.to_string());
}

/// "Similar time" without timing: every path runs the password verifier
/// exactly once (the unknown email against a decoy hash, an email of several
/// organisations against its oldest user), so they cost the same argon2id
/// work; the only other work is the same one indexed query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_cost_one_verification_each() {
    use std::sync::Arc;
    use usermgmt::app::sessions::Sessions;
    use usermgmt::auth::passwords::Passwords;
    use usermgmt::auth::ratelimit::{LoginLimiter, LoginLimits};
    use usermgmt::auth::tokens::{AccessTokens, TokenSettings};
    use usermgmt::domain::email::Email;

    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let tokens = AccessTokens::new(
        &[7u8; 32],
        TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: std::time::Duration::from_secs(60),
        },
        1 << 20,
    )
    .expect("tokens");
    let passwords = Passwords::new(1).await.expect("passwords");
    let tokens = Arc::new(tokens);
    let sessions = Sessions::new(
        store(&db),
        tokens,
        passwords.clone(),
        Arc::new(LoginLimiter::new(
            store(&db),
            LoginLimits {
                per_email_and_peer: 0,
                per_peer: 0,
                per_email_per_hour: 0,
                resets_per_peer: 0,
                resets_per_email_per_hour: 0,
            },
        )),
    );
    let email = |text: &str| Email::parse("email", text).expect("email");
    // An email in three organisations costs what an email in one costs.
    let shared = "shared@example.com";
    let mut last_org = None;
    for name in ["Globex", "Initech", "Umbrella"] {
        let other = create_org(&db, name).await;
        insert_user(&db, other.id, shared, "nanoUser").await;
        last_org = Some(other.id);
    }

    for (case, address, password, organisation, outcome) in [
        (
            "wrong password",
            org.admin_email.as_str(),
            "not the password",
            None,
            "LOGIN_FAILED",
        ),
        (
            "unknown email",
            "nobody@acme.example.com",
            ADMIN_PASSWORD,
            None,
            "LOGIN_FAILED",
        ),
        (
            "right password",
            org.admin_email.as_str(),
            ADMIN_PASSWORD,
            None,
            "ok",
        ),
        (
            "three organisations, wrong password",
            shared,
            "not the password",
            None,
            "LOGIN_FAILED",
        ),
        (
            "three organisations, right password",
            shared,
            PASSWORD,
            None,
            "ORGANISATION_REQUIRED",
        ),
        (
            "three organisations, one named",
            shared,
            PASSWORD,
            last_org,
            "ok",
        ),
    ] {
        let before = passwords.verifications();
        let result = sessions
            .login(
                &email(address),
                password,
                organisation,
                &usermgmt::app::sessions::Client::default(),
                None,
            )
            .await;
        assert_eq!(passwords.verifications() - before, 1, "{case}");
        let seen = match &result {
            Ok(_) => "ok",
            Err(usermgmt::domain::DomainError::Unauthenticated(_)) => "LOGIN_FAILED",
            Err(usermgmt::domain::DomainError::FailedPrecondition { reason, .. }) => reason,
            Err(other) => panic!("{case}: {other:?}"),
        };
        assert_eq!(seen, outcome, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_email_and_per_peer() {
    let server =
        TestServer::start_with(&["--login-rate-per-email", "3", "--login-rate-per-peer", "6"])
            .await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    let limited = |result: Result<tonic::Response<proto::LoginResponse>, tonic::Status>,
                   limit: &str| {
        let status = assert_status(result, Code::ResourceExhausted, Some("LOGIN_RATE_LIMITED"));
        let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
        let retry = tonic_types::StatusExt::get_details_retry_info(&status)
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo");
        assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(20));
    };

    // Three guesses for one email, then even the right password waits.
    for _ in 0..3 {
        let guess = auth.login(login_request(&org.admin_email, "a guess")).await;
        assert_status(guess, Code::Unauthenticated, Some("LOGIN_FAILED"));
    }
    limited(
        auth.login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email_and_peer",
    );
    // Other emails from the same address: the peer's six are used up (a
    // refused attempt takes nothing).
    for n in 0..3 {
        let guess = auth
            .login(login_request(
                &format!("user{n}@acme.example.com"),
                "a guess",
            ))
            .await;
        assert_status(guess, Code::Unauthenticated, Some("LOGIN_FAILED"));
    }
    limited(
        auth.login(login_request("user9@acme.example.com", "a guess"))
            .await,
        "peer",
    );
}

/// A wrong password for an existing email used to be answered only after
/// its `login.failed` audit event was written, which an unknown email does
/// not write: 2.5–3.2 ms slower, enough to tell which emails have accounts
/// (the review; scripts/login-timing.sh measures it). The event is written
/// off the answer's path now: the answer comes while the write waits behind
/// the organisation's row lock, and the event follows the lock's release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_answered_without_waiting_for_its_audit_event() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    let db = server.db.client().await;
    let db = &db;
    let failed_logins = move || async move {
        let count: i64 = db
            .query_one(
                "SELECT count(*) FROM audit_events \
                 WHERE organisation_id = $1 AND action = 'login.failed'",
                &[&org.id],
            )
            .await
            .expect("count login.failed")
            .get(0);
        count
    };

    let lock = OrgLock::take(&server.db, org.id).await;
    let answer = tokio::time::timeout(
        QUEUE_DEADLINE,
        auth.login(login_request(&org.admin_email, "not the password")),
    )
    .await
    .expect("a wrong password is answered while its audit write waits for the lock");
    assert_status(answer, Code::Unauthenticated, Some("LOGIN_FAILED"));
    let held = &lock;
    assert!(
        poll_until(
            QUEUE_DEADLINE,
            move || async move { held.waiters().await >= 1 }
        )
        .await,
        "the audit write queues on the organisation's row lock"
    );
    assert_eq!(
        failed_logins().await,
        0,
        "not written while the lock is held"
    );

    lock.commit().await;
    assert!(
        poll_until(QUEUE_DEADLINE, || async move { failed_logins().await == 1 }).await,
        "the login.failed event is written once the lock is released"
    );
}
