//! The login limits are shared by every replica, do not let an attacker
//! elsewhere lock a user out, and forget the addresses that knew an old
//! password; password reset requests have limits of their own.

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

/// `RESOURCE_EXHAUSTED` `PASSWORD_RESET_RATE_LIMITED` by `limit`, with
/// `RetryInfo`.
#[track_caller]
fn resets_limited<T: std::fmt::Debug>(result: Result<T, tonic::Status>, limit: &str) {
    let status = assert_status(
        result,
        Code::ResourceExhausted,
        Some("PASSWORD_RESET_RATE_LIMITED"),
    );
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some(limit));
    assert!(tonic_types::StatusExt::get_details_retry_info(&status).is_some());
}

fn reset_request(email: &str) -> proto::RequestPasswordResetRequest {
    proto::RequestPasswordResetRequest {
        email: email.into(),
        organisation_id: String::new(),
    }
}

/// The review's sequence: six reset requests from three addresses used to
/// spend the email's failed-login ceiling, and the user's right password
/// from a new address then answered `LOGIN_RATE_LIMITED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_do_not_lock_the_user_out() {
    let server = TestServer::start_with(&["--login-failures-per-email-per-hour", "6"]).await;
    let org = create_org(&server.db, "Acme").await;
    for last in 2..5 {
        let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(last)).await);
        for _ in 0..2 {
            attacker
                .request_password_reset(reset_request(&org.admin_email))
                .await
                .expect("a reset request");
        }
    }
    let new_device = channel_from(server.addr, address(9)).await;
    Session::login(&new_device, &org.admin_email, ADMIN_PASSWORD).await;
}

/// Resets have a budget of their own, per address and per email, refused
/// with their own reason; neither family spends the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_have_limits_of_their_own() {
    let server = TestServer::start_with(&[
        "--login-rate-per-peer",
        "2",
        "--password-reset-rate-per-peer",
        "2",
        "--password-resets-per-email-per-hour",
        "5",
    ])
    .await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    auth.request_password_reset(reset_request(&org.admin_email))
        .await
        .expect("first");
    auth.request_password_reset(reset_request(&org.admin_email))
        .await
        .expect("second");
    resets_limited(
        auth.request_password_reset(reset_request(&org.admin_email))
            .await,
        "peer",
    );
    // The address's login budget is whole: two logins.
    for _ in 0..2 {
        auth.login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await
            .expect("a login beside the resets");
    }
    limited(
        auth.login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "peer",
    );
    // An attacker spreading a reset flood over addresses meets the email's
    // reset ceiling: three more from elsewhere make five, the sixth waits.
    for last in 2..5 {
        let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(last)).await);
        attacker
            .request_password_reset(reset_request(&org.admin_email))
            .await
            .expect("within the email's resets");
    }
    let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(5)).await);
    resets_limited(
        attacker
            .request_password_reset(reset_request(&org.admin_email))
            .await,
        "email",
    );
    // Another email's resets are not affected.
    attacker
        .request_password_reset(reset_request("someone.else@acme.example.com"))
        .await
        .expect("another email's reset");
}

async fn change_password(session: &Session, current: &str, new: &str) {
    AuthServiceClient::new(session.channel.clone())
        .change_password(session.req(proto::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
        }))
        .await
        .expect("change the password");
}

/// Spends the email's failed-login ceiling (3 in these tests) from an
/// address nobody signed in from.
async fn spend_the_ceiling(server: &TestServer, email: &str, from: u8) {
    let mut attacker = AuthServiceClient::new(channel_from(server.addr, address(from)).await);
    for _ in 0..3 {
        assert_status(
            attacker.login(login_request(email, "a guess")).await,
            Code::Unauthenticated,
            Some("LOGIN_FAILED"),
        );
    }
    limited(
        attacker.login(login_request(email, "a guess")).await,
        "email",
    );
}

/// An address that signed in with a stolen password is exempt from the
/// email's ceiling; changing the password ends that exemption (the address
/// that changed it keeps its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_exemption_of_addresses_that_knew_the_old_one() {
    let server = TestServer::start_with(&[
        "--login-failures-per-email-per-hour",
        "3",
        "--login-rate-per-email",
        "100",
    ])
    .await;
    let org = create_org(&server.db, "Acme").await;
    let home = channel_from(server.addr, address(1)).await;
    let thief = channel_from(server.addr, address(9)).await;
    let user = Session::login(&home, &org.admin_email, ADMIN_PASSWORD).await;
    Session::login(&thief, &org.admin_email, ADMIN_PASSWORD).await;

    change_password(&user, ADMIN_PASSWORD, "a new password 2").await;
    spend_the_ceiling(&server, &org.admin_email, 2).await;

    // The thief's address is limited like any other now.
    limited(
        AuthServiceClient::new(thief.clone())
            .login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email",
    );
    // The address that changed the password knows the new one.
    Session::login(&home, &org.admin_email, "a new password 2").await;
}

/// A reset ends every exemption of the email; the user's own next sign-in
/// earns one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_the_exemptions_and_a_new_sign_in_earns_one() {
    let server = TestServer::start_with(&[
        "--login-failures-per-email-per-hour",
        "3",
        "--login-rate-per-email",
        "100",
    ])
    .await;
    let org = create_org(&server.db, "Acme").await;
    let home = channel_from(server.addr, address(1)).await;
    let thief = channel_from(server.addr, address(9)).await;
    Session::login(&home, &org.admin_email, ADMIN_PASSWORD).await;
    Session::login(&thief, &org.admin_email, ADMIN_PASSWORD).await;

    let token = reset_token_of(&server.db, &org).await;
    AuthServiceClient::new(home.clone())
        .reset_password(proto::ResetPasswordRequest {
            reset_token: token,
            new_password: "a new password 2".into(),
        })
        .await
        .expect("reset the password");
    // The user signs in again from home, which earns the exemption anew.
    Session::login(&home, &org.admin_email, "a new password 2").await;
    spend_the_ceiling(&server, &org.admin_email, 2).await;

    limited(
        AuthServiceClient::new(thief.clone())
            .login(login_request(&org.admin_email, ADMIN_PASSWORD))
            .await,
        "email",
    );
    Session::login(&home, &org.admin_email, "a new password 2").await;
}
