//! Password reset by mail, through a real SMTP server (support::smtp), and the
//! invites mailed to their invitees.

use tonic::Code;
use usermgmt::proto::{self, auth_service_client::AuthServiceClient};

use crate::support::smtp::SmtpSink;
use crate::support::*;

const DASHBOARD: &str = "https://dashboard.example.com";

async fn server_with_mail(sink: &SmtpSink) -> TestServer {
    TestServer::start_with(&[
        "--smtp-url",
        &sink.url(),
        "--public-url",
        DASHBOARD,
        "--mail-from",
        "Streaming Cloud <no-reply@example.com>",
    ])
    .await
}

fn reset_request(email: &str) -> proto::RequestPasswordResetRequest {
    proto::RequestPasswordResetRequest {
        email: email.into(),
        organisation_id: String::new(),
    }
}

fn reset(token: &str, password: &str) -> proto::ResetPasswordRequest {
    proto::ResetPasswordRequest {
        reset_token: token.into(),
        new_password: password.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_answers_alike_mails_one_link_and_the_link_works_once() {
    let sink = SmtpSink::start().await;
    let server = server_with_mail(&sink).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let before = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    let unknown = auth
        .request_password_reset(reset_request("nobody@acme.example.com"))
        .await
        .expect("unknown email")
        .into_inner();
    let known = auth
        .request_password_reset(reset_request(&org.admin_email.to_uppercase()))
        .await
        .expect("known email")
        .into_inner();
    assert_eq!(unknown, known, "the same answer");
    sink.wait_for(1).await;
    // Every request done, the unknown email's included.
    wait_until_outbox_empty(&server.db).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "exactly one mail");
    let mail = &mails[0];
    assert_eq!(mail.envelope_to, std::slice::from_ref(&org.admin_email));
    assert!(
        mail.link()
            .starts_with(&format!("{DASHBOARD}/reset-password?token=ump_")),
        "{}",
        mail.link()
    );
    assert!(mail.html_body().contains(mail.token()));
    let token = mail.token().to_owned();

    auth.reset_password(reset(&token, "a reset password 3"))
        .await
        .expect("reset");
    // Every earlier token of the user ends.
    assert_status(
        before.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    assert_status(
        auth.reset_password(reset(&token, "another password 4"))
            .await,
        Code::Unauthenticated,
        Some("RESET_TOKEN_INVALID"),
    );
    assert_status(
        auth.login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: ADMIN_PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await,
        Code::Unauthenticated,
        Some("LOGIN_FAILED"),
    );
    let after = Session::login(&channel, &org.admin_email, "a reset password 3").await;
    let events = after
        .audit_events(proto::ListAuditEventsRequest {
            action: "user.reset_password".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 1);
    for event in &events {
        assert!(!format!("{event:?}").contains(&token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_malformed_reset_tokens_are_refused() {
    let sink = SmtpSink::start().await;
    let server = server_with_mail(&sink).await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    auth.request_password_reset(reset_request(&org.admin_email))
        .await
        .expect("request");
    let token = sink.wait_for(1).await[0].token().to_owned();
    server
        .db
        .client()
        .await
        .execute(
            "UPDATE password_resets SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("expire");
    assert_status(
        auth.reset_password(reset(&token, "a reset password 3"))
            .await,
        Code::Unauthenticated,
        Some("RESET_TOKEN_INVALID"),
    );
    let forged = format!("ump_{}", "A".repeat(43));
    assert_status(
        auth.reset_password(reset(&forged, "a reset password 3"))
            .await,
        Code::Unauthenticated,
        Some("RESET_TOKEN_INVALID"),
    );
    let status = assert_status(
        auth.reset_password(reset(&"x".repeat(129), "short")).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["reset_token", "new_password"]);
    Session::login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_mailed_to_the_invitee() {
    let sink = SmtpSink::start().await;
    let server = server_with_mail(&sink).await;
    let org = create_org(&server.db, "Acme").await;
    let admin = Session::login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;
    let invite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "carol@example.com".into(),
            role: proto::Role::NanoUser as i32,
            ..Default::default()
        }))
        .await
        .expect("invite")
        .into_inner();
    let mail = &sink.wait_for(1).await[0];
    assert_eq!(mail.envelope_to, ["carol@example.com".to_owned()]);
    assert_eq!(mail.envelope_from, "no-reply@example.com");
    assert!(
        mail.from().contains("no-reply@example.com"),
        "{}",
        mail.from()
    );
    assert!(mail.to().contains("carol@example.com"));
    assert!(mail.header("message-id").is_some());
    let types = mail.content_types();
    assert!(
        types.iter().any(|t| t.starts_with("text/plain")),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t.starts_with("text/html")),
        "{types:?}"
    );
    assert!(mail.subject.contains("Acme"), "{}", mail.subject);
    assert_eq!(
        mail.link(),
        format!("{DASHBOARD}/accept-invite?token={}", invite.invite_token)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mail_a_reset_request_still_answers_the_same() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    for email in [org.admin_email.as_str(), "nobody@acme.example.com"] {
        let answer = auth
            .request_password_reset(reset_request(email))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(answer, proto::RequestPasswordResetResponse {});
    }
}
