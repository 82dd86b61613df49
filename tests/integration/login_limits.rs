//! The login limits are shared by every replica, cover password reset
//! requests, and do not let an attacker elsewhere lock a user out.

use std::net::IpAddr;

use tonic::Code;
use usermgmt::proto::{self, auth_service_client::AuthServiceClient};

use crate::support::*;

fn login_request(email: &str, password: &str) -> proto::LoginRequest {
    proto::LoginRequest {
        email: email.into(),
        password: password.into(),
        organisation_id: String::new(),
    }
}

#[track_caller]
fn limited<T: std::fmt::Debug>(result: Result<T, tonic::Status>, limit: &str) {
    let status = assert_status(result, Code::ResourceExhausted, Some("LOGIN_RATE_LIMITED"));
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
    assert!(tonic_types::StatusExt::get_details_retry_info(&status).is_some());
}

fn address(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_count_against_one_limit() {
    let replicas = TwoReplicas::start_with_env(&[("USERMGMT_LOGIN_RATE_PER_EMAIL", "3")]).await;
    let org = &replicas.org;
    let on_first = AuthServiceClient::new(replicas.on_first.clone());
    let on_second = AuthServiceClient::new(replicas.on_second.clone());
    for mut auth in [on_first.clone(), on_second.clone(), on_first.clone()] {
        assert_status(
            auth.login(login_request(&org.admin_email, "a guess")).await,
            Code::Unauthenticated,
            Some("LOGIN_FAILED"),
        );
    }
    // Three failures in all: the fourth attempt waits on either replica.
    limited(
        on_second
            .clone()
            .login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email_and_peer",
    );
    limited(
        on_first
            .clone()
            .login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email_and_peer",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_elsewhere_do_not_lock_out_a_known_address() {
    let server = TestServer::start_with(&[
        "--login-failures-per-email-per-hour",
        "3",
        "--login-rate-per-email",
        "100",
    ])
    .await;
    let org = create_org(&server.db, "Acme").await;
    // The user signs in from their usual address.
    let home = channel_from(server.addr, address(1)).await;
    Session::login(&home, &org.admin_email, ADMIN_PASSWORD).await;

    // An attacker spreads guesses over addresses until the email's ceiling.
    for last in 2..5 {
        let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(last)).await);
        assert_status(
            attacker
                .login(login_request(&org.admin_email, "a guess"))
                .await,
            Code::Unauthenticated,
            Some("LOGIN_FAILED"),
        );
    }
    let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(5)).await);
    limited(
        attacker
            .login(login_request(&org.admin_email, "a guess"))
            .await,
        "email",
    );
    // The user at home is not locked out.
    Session::login(&home, &org.admin_email, ADMIN_PASSWORD).await;
    // A new address waits like the attacker's (the price of the ceiling).
    let mut new_device = AuthServiceClient::new(channel_from(server.addr, address(6)).await);
    limited(
        new_device
            .login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_count_against_the_same_limits() {
    let server = TestServer::start_with(&["--login-rate-per-peer", "2"]).await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    let request = || proto::RequestPasswordResetRequest {
        email: org.admin_email.clone(),
        organisation_id: String::new(),
    };
    auth.request_password_reset(request()).await.expect("first");
    auth.request_password_reset(request())
        .await
        .expect("second");
    limited(auth.request_password_reset(request()).await, "peer");
    limited(
        auth.login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "peer",
    );
}
