//! Password reset by mail, through a real SMTP server (support::smtp), and the
//! invites mailed to their invitees.

use tonic::Code;
use usermgmt::proto::{
    self, auth_service_client::AuthServiceClient,
    organisation_service_client::OrganisationServiceClient,
};

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
    // The token rides in the fragment, which no browser sends to a server
    // or proxy: it stays out of their logs.
    assert!(
        mail.link()
            .starts_with(&format!("{DASHBOARD}/reset-password#token=ump_")),
        "{}",
        mail.link()
    );
    assert!(!mail.link().contains('?'), "{}", mail.link());
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
        format!("{DASHBOARD}/accept-invite#token={}", invite.invite_token)
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

/// The headers of a message as a real decoder reads them (`mailparse`, not
/// the sink's own): each value unfolded and its encoded words decoded.
fn decoded_headers(raw: &str) -> Vec<(String, String)> {
    let (headers, _) = mailparse::parse_headers(raw.as_bytes()).expect("headers parse");
    headers
        .iter()
        .map(|header| (header.get_key(), header.get_value()))
        .collect()
}

/// The encoded words (`=?…?=`) of the raw, still folded `Subject` header.
fn raw_subject_words(raw: &str) -> Vec<String> {
    let mut lines = raw
        .split("\r\n")
        .skip_while(|line| !line.starts_with("Subject:"));
    let mut value = lines.next().expect("a Subject header").to_owned();
    value.extend(lines.take_while(|line| line.starts_with([' ', '\t'])));
    value
        .split_whitespace()
        .filter(|word| word.starts_with("=?"))
        .map(str::to_owned)
        .collect()
}

/// An organisation may name itself with what looks like an RFC 2047 encoded
/// word. The invitee's mail reader must show exactly that text: the subject
/// decodes to the literal name, never to what the encoded word would say (a
/// line break and a Bcc header here), and no header is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_word_in_the_organisation_name_stays_literal_in_the_subject() {
    let sink = SmtpSink::start().await;
    let server = server_with_mail(&sink).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    let long = format!("=?utf-8?q?{}?= {}", "A=42".repeat(20), "Grüße ".repeat(12));
    let names = [
        "=?utf-8?q?Acme=0D=0ABcc:_victim@evil.example?=",
        "=?UTF-8?B?QWNtZQ0KQmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?=",
        "Bücher =?utf-8?q?=E2=80=AEevil?= Söhne",
        "=?iso-8859-1?q?caf=E9?==?utf-8?b?eA==?=",
        long.trim(),
    ];
    for (n, name) in names.iter().enumerate() {
        organisations
            .update_organisation(admin.req(proto::UpdateOrganisationRequest {
                organisation: Some(proto::Organisation {
                    name: (*name).into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
            }))
            .await
            .expect("rename");
        admin
            .users()
            .create_invite(admin.req(proto::CreateInviteRequest {
                email: format!("carol{n}@example.com"),
                role: proto::Role::NanoUser as i32,
                ..Default::default()
            }))
            .await
            .expect("invite");
        let mails = sink.wait_for(n + 1).await;
        let mail = &mails[n];
        let headers = decoded_headers(&mail.raw);
        let subjects: Vec<&str> = headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("subject"))
            .map(|(_, value)| value.as_str())
            .collect();
        let want = format!("You are invited to join {name}");
        assert_eq!(subjects, [want.as_str()], "{}", mail.raw);
        assert_eq!(mail.subject, want, "the sink's decoder agrees");
        for (key, _) in &headers {
            assert!(
                !key.eq_ignore_ascii_case("bcc") && !key.eq_ignore_ascii_case("cc"),
                "{key}: {}",
                mail.raw
            );
        }
        for word in raw_subject_words(&mail.raw) {
            assert!(
                word.len() <= 75,
                "an encoded word of {} chars: {word}",
                word.len()
            );
        }
        assert_eq!(mail.envelope_to, [format!("carol{n}@example.com")]);
    }
}

/// The machine's host name, as the kernel has it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .expect("the host name")
        .trim()
        .to_owned()
}

/// A mail's Message-ID names the sender's domain and a random id, never the
/// machine the service runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_id_is_random_at_the_senders_domain() {
    let sink = SmtpSink::start().await;
    let server = server_with_mail(&sink).await;
    let org = create_org(&server.db, "Acme").await;
    let mut auth = AuthServiceClient::new(server.channel().await);
    // One after the other: the outbox coalesces requests still pending.
    for sent in 1..=2 {
        auth.request_password_reset(reset_request(&org.admin_email))
            .await
            .expect("request");
        sink.wait_for(sent).await;
    }
    let mails = sink.wait_for(2).await;
    let host = host_name();
    assert!(!host.is_empty());
    let mut ids = Vec::new();
    for mail in &mails {
        let id = mail.header("Message-ID").expect("a Message-ID");
        assert!(!id.contains(&host), "{id} names the host {host}");
        let local = id
            .strip_prefix('<')
            .and_then(|id| id.strip_suffix("@example.com>"))
            .unwrap_or_else(|| panic!("{id} is not <…@example.com>"));
        uuid::Uuid::parse_str(local).unwrap_or_else(|_| panic!("{id}: not a random id"));
        ids.push(id.to_owned());
    }
    assert_ne!(ids[0], ids[1], "each mail its own id");
}
