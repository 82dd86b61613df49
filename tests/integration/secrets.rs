//! No secret reaches the log nor the traces: a `usermgmt serve` process logs
//! at debug level (every crate), as text or JSON, and exports its spans,
//! through a full scenario with refused calls; none of the secrets it saw or
//! issued appears in its stderr or in what the OTLP collector received.

use tonic::Code;
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient, credential::Kind,
    playback_token_service_client::PlaybackTokenServiceClient,
    role_service_client::RoleServiceClient,
};

use crate::otel::Collector;
use crate::playback::make_secure;
use crate::support::smtp::SmtpSink;
use crate::support::*;

const JWT_SECRET: &str = "a configured jwt secret that must never be logged";

/// The scenario, on a server of `db` at `addr` mailing to `sink`: every call
/// that handles a secret, successful and refused. Returns the secrets it saw
/// or sent.
async fn scenario(
    db: &TestDb,
    addr: std::net::SocketAddr,
    sink: &SmtpSink,
) -> Vec<(&'static str, String)> {
    let org = create_org(db, "Acme").await;
    make_secure(db, org.id).await;
    let service_key = register_service(db, "streams").await;
    let channel = channel(addr).await;
    let mut secrets: Vec<(&'static str, String)> = vec![
        ("jwt secret", JWT_SECRET.into()),
        ("admin password", ADMIN_PASSWORD.into()),
        ("user password", PASSWORD.into()),
        ("api key", org.api_key.clone()),
        ("service key", service_key.clone()),
    ];

    // Login, and a failed login with a password typed wrongly.
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    secrets.push(("admin access token", admin.token.clone()));
    let typo = "admin password 2 (a typo)";
    secrets.push(("mistyped password", typo.into()));
    let mut auth = AuthServiceClient::new(channel.clone());
    let failed = auth
        .login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: typo.into(),
            organisation_id: String::new(),
        })
        .await;
    assert_status(failed, Code::Unauthenticated, None);

    // A user with a password, an invite and its acceptance.
    admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let invite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "alice@acme.example.com".into(),
            role: Role::NanoAdmin as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner();
    secrets.push(("invite token", invite.invite_token.clone()));
    let alice_password = "alice's own secret password";
    secrets.push(("invitee password", alice_password.into()));
    let alice = auth
        .accept_invite(proto::AcceptInviteRequest {
            invite_token: invite.invite_token.clone(),
            password: alice_password.into(),
        })
        .await
        .expect("accept")
        .into_inner();
    secrets.push(("invitee access token", alice.access_token.clone()));

    // The API key, directly and through Authorize.
    auth.who_am_i(with_header(
        proto::WhoAmIRequest {},
        "x-bintu-apikey",
        &org.api_key,
    ))
    .await
    .expect("the API key works");
    let decision = auth
        .authorize(with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(Kind::AccessToken(alice.access_token.clone())),
                }),
                permission: "users.read".into(),
                organisation_id: String::new(),
            },
            "x-usermgmt-service-key",
            &service_key,
        ))
        .await
        .expect("authorize")
        .into_inner();
    assert!(decision.allowed);

    // A renewal, double-confirmed; an API key rotation.
    let confirmation = admin.ask_renew(&alice.user_id).await.expect("ask renew");
    secrets.push((
        "renew confirmation",
        confirmation.confirmation_token.clone(),
    ));
    admin
        .confirm_renew(&alice.user_id, &confirmation.confirmation_token)
        .await
        .expect("renew");
    let rotation = admin
        .ask(&TwoStep::RotateApiKey)
        .await
        .expect("ask rotation");
    secrets.push(("rotation confirmation", rotation.confirmation_token.clone()));
    let rotated = admin
        .confirm(&TwoStep::RotateApiKey, &rotation.confirmation_token)
        .await
        .expect("rotate")
        .rotated();
    secrets.push(("rotated api key", rotated.api_key));

    // Playback tokens: issue, verify, revoke.
    let mut playback = PlaybackTokenServiceClient::new(channel.clone());
    let issued = playback
        .issue_playback_token(admin.req(proto::IssuePlaybackTokenRequest {
            revocable: true,
            ..crate::playback::for_streams(&["live"])
        }))
        .await
        .expect("issue")
        .into_inner();
    secrets.push(("playback token", issued.token.clone()));
    playback
        .verify_playback_token(proto::VerifyPlaybackTokenRequest {
            token: issued.token.clone(),
            stream: "live".into(),
            group_id: String::new(),
        })
        .await
        .expect("verify");
    playback
        .revoke_playback_token(admin.req(proto::RevokePlaybackTokenRequest {
            target: Some(proto::revoke_playback_token_request::Target::Token(
                issued.token.clone(),
            )),
        }))
        .await
        .expect("revoke");

    // The error paths: each refused call carries a secret of its own.
    let made_up_key = format!("um_live_{}", "Q".repeat(43));
    secrets.push(("made-up api key", made_up_key.clone()));
    assert_status(
        auth.who_am_i(with_header(
            proto::WhoAmIRequest {},
            "x-bintu-apikey",
            &made_up_key,
        ))
        .await,
        Code::Unauthenticated,
        Some("API_KEY_INVALID"),
    );
    assert_status(
        auth.who_am_i(with_header(
            proto::WhoAmIRequest {},
            "x-bintu-apikey",
            &org.api_key,
        ))
        .await,
        Code::Unauthenticated,
        Some("API_KEY_INVALID"),
    );
    let tampered = format!("{}x", &admin.token[..admin.token.len() - 1]);
    secrets.push(("tampered access token", tampered.clone()));
    assert_status(
        auth.who_am_i(authed(proto::WhoAmIRequest {}, &tampered))
            .await,
        Code::Unauthenticated,
        Some("TOKEN_INVALID"),
    );
    assert_status(
        auth.who_am_i(authed(proto::WhoAmIRequest {}, &alice.access_token))
            .await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let late_password = "a password sent with a used invite";
    secrets.push(("password of a refused invite", late_password.into()));
    assert_status(
        auth.accept_invite(proto::AcceptInviteRequest {
            invite_token: invite.invite_token.clone(),
            password: late_password.into(),
        })
        .await,
        Code::Unauthenticated,
        Some("INVITE_INVALID"),
    );
    let made_up_confirmation = format!("umc_{}", "Z".repeat(43));
    secrets.push(("made-up confirmation", made_up_confirmation.clone()));
    assert_status(
        admin
            .confirm_renew(&alice.user_id, &made_up_confirmation)
            .await,
        Code::FailedPrecondition,
        Some("CONFIRMATION_INVALID"),
    );
    let refused = auth
        .authorize(with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(Kind::ApiKey(org.api_key.clone())),
                }),
                permission: "users.read".into(),
                organisation_id: String::new(),
            },
            "x-usermgmt-service-key",
            &service_key,
        ))
        .await
        .expect("authorize")
        .into_inner();
    assert!(!refused.allowed, "the rotated key is refused");
    let wrong_service_key = format!("ums_{}", "W".repeat(43));
    secrets.push(("made-up service key", wrong_service_key.clone()));
    assert_status(
        auth.authorize(with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(Kind::AccessToken(admin.token.clone())),
                }),
                permission: "users.read".into(),
                organisation_id: String::new(),
            },
            "x-usermgmt-service-key",
            &wrong_service_key,
        ))
        .await,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_INVALID"),
    );
    let forged_playback = format!("{}x", &issued.token[..issued.token.len() - 1]);
    secrets.push(("forged playback token", forged_playback.clone()));
    let verdict = playback
        .verify_playback_token(proto::VerifyPlaybackTokenRequest {
            token: forged_playback,
            stream: "live".into(),
            group_id: String::new(),
        })
        .await;
    assert!(
        !matches!(&verdict, Ok(answer) if answer.get_ref().valid),
        "a forged playback token is not valid: {verdict:?}"
    );

    // Sessions: a refresh token, its successor, the first one presented
    // again (refused: the session ends).
    let signed = auth
        .login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: ADMIN_PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await
        .expect("login")
        .into_inner();
    secrets.push(("refresh token", signed.refresh_token.clone()));
    let refreshed = auth
        .refresh(proto::RefreshRequest {
            refresh_token: signed.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner();
    secrets.push(("refreshed access token", refreshed.access_token));
    secrets.push(("rotated refresh token", refreshed.refresh_token));
    assert_status(
        auth.refresh(proto::RefreshRequest {
            refresh_token: signed.refresh_token,
        })
        .await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_REUSED"),
    );
    // A password reset through the mail, used, then presented again.
    auth.request_password_reset(proto::RequestPasswordResetRequest {
        email: "alice@acme.example.com".into(),
        organisation_id: String::new(),
    })
    .await
    .expect("request a reset");
    let mails = sink.wait_for(2).await;
    let reset_token = mails
        .iter()
        .find(|mail| mail.link().contains("/reset-password#"))
        .expect("the reset mail")
        .token()
        .to_owned();
    secrets.push(("reset token", reset_token.clone()));
    let reset_password = "alice's password after the reset";
    secrets.push(("reset password", reset_password.into()));
    for expected in [None, Some("RESET_TOKEN_INVALID")] {
        let result = auth
            .reset_password(proto::ResetPasswordRequest {
                reset_token: reset_token.clone(),
                new_password: reset_password.into(),
            })
            .await;
        match expected {
            None => {
                result.expect("reset");
            }
            Some(reason) => {
                assert_status(result, Code::Unauthenticated, Some(reason));
            }
        }
    }

    // The last call, so that its span comes after every other.
    RoleServiceClient::new(channel)
        .list_roles(admin.req(proto::ListRolesRequest {}))
        .await
        .expect("list roles");
    secrets
}

/// Fails if any secret, or a JWT's signature, or a password hash, is in
/// `text` (the log or the exported spans, named `what`).
fn assert_no_secret(text: &str, what: &str, secrets: &[(&str, String)]) {
    assert!(
        !text.contains("$argon2"),
        "a password hash is in the {what}"
    );
    for (name, secret) in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the {name} is in the {what}"
        );
        // JWTs: not even their signature.
        if let Some(signature) = secret.rsplit('.').next().filter(|_| secret.contains('.')) {
            assert!(
                !text.contains(signature),
                "the {name}'s signature is in the {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_a_debug_log_of_a_full_scenario() {
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let smtp_url = sink.url();
    let log_path = std::env::temp_dir().join(format!("usermgmt-secrets-{}.log", db.name));
    let replica = Replica::start_logged(
        &db.url,
        &[
            ("USERMGMT_LOG", "debug"),
            ("USERMGMT_JWT_SECRET", JWT_SECRET),
            ("USERMGMT_SMTP_URL", smtp_url.as_str()),
        ],
        &log_path,
    )
    .await;
    let secrets = scenario(&db, replica.addr, &sink).await;
    drop(replica);
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.lines().count() > 20 && log.contains("DEBUG"),
        "the log is at debug level: {} lines",
        log.lines().count()
    );
    assert_no_secret(&log, "log", &secrets);
    eprintln!(
        "secrets: {} checked against {} log lines, none found",
        secrets.len(),
        log.lines().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_a_json_log_nor_in_the_exported_spans() {
    let (collector, endpoint) = Collector::start().await;
    let db = TestDb::new().await;
    let sink = SmtpSink::start().await;
    let smtp_url = sink.url();
    let log_path = std::env::temp_dir().join(format!("usermgmt-secrets-json-{}.log", db.name));
    let replica = Replica::start_logged(
        &db.url,
        &[
            ("USERMGMT_LOG", "debug"),
            ("USERMGMT_LOG_FORMAT", "json"),
            ("USERMGMT_SMTP_URL", smtp_url.as_str()),
            ("USERMGMT_JWT_SECRET", JWT_SECRET),
            ("USERMGMT_OTEL_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &log_path,
    )
    .await;
    let secrets = scenario(&db, replica.addr, &sink).await;
    collector
        .wait_for("/usermgmt.v1.RoleService/ListRoles")
        .await;
    drop(replica);
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let _ = std::fs::remove_file(&log_path);

    let spans = collector.text();
    // The refused calls were exported too, with their events.
    for method in [
        "/usermgmt.v1.AuthService/AcceptInvite",
        "/usermgmt.v1.UserService/RenewTokenKey",
        "/usermgmt.v1.AuthService/Authorize",
    ] {
        assert!(spans.contains(method), "no span of {method}");
    }
    assert!(spans.contains("call refused"), "the refusals' events");
    assert_no_secret(&spans, "exported spans", &secrets);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 20, "a debug log: {} lines", lines.len());
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
    assert_no_secret(&log, "JSON log", &secrets);

    eprintln!(
        "secrets: {} checked against {} JSON log lines and {} bytes of spans, none found",
        secrets.len(),
        lines.len(),
        spans.len()
    );
}
