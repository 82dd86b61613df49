//! No secret reaches the log: a `usermgmt serve` process logs at debug level
//! (every crate) through a full scenario, and none of the secrets it saw or
//! issued appears in its stderr.

use tonic::Code;
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient, credential::Kind,
    playback_token_service_client::PlaybackTokenServiceClient,
    rotate_api_key_response::Outcome as RotateOutcome,
};

use crate::playback::make_secure;
use crate::support::*;

const JWT_SECRET: &str = "a configured jwt secret that must never be logged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_a_debug_log_of_a_full_scenario() {
    let db = TestDb::new().await;
    let log_path = std::env::temp_dir().join(format!("usermgmt-secrets-{}.log", db.name));
    let replica = Replica::start_logged(
        &db.url,
        &[
            ("USERMGMT_LOG", "debug"),
            ("USERMGMT_JWT_SECRET", JWT_SECRET),
        ],
        &log_path,
    )
    .await;
    let org = create_org(&db, "Acme").await;
    make_secure(&db, org.id).await;
    let service_key = register_service(&db, "streams").await;
    let channel = channel(replica.addr).await;
    let mut secrets: Vec<(&str, String)> = vec![
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
    let mut organisations =
        proto::organisation_service_client::OrganisationServiceClient::new(channel.clone());
    let ask = organisations
        .rotate_api_key(admin.req(proto::RotateApiKeyRequest::default()))
        .await
        .expect("ask rotation")
        .into_inner();
    let Some(RotateOutcome::ConfirmationRequired(rotation)) = ask.outcome else {
        panic!("expected a confirmation");
    };
    secrets.push(("rotation confirmation", rotation.confirmation_token.clone()));
    let rotated = organisations
        .rotate_api_key(admin.req(proto::RotateApiKeyRequest {
            confirmation_token: rotation.confirmation_token,
        }))
        .await
        .expect("rotate")
        .into_inner();
    let Some(RotateOutcome::Rotated(rotated)) = rotated.outcome else {
        panic!("expected the new key");
    };
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

    drop(replica);
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.lines().count() > 20 && log.contains("DEBUG"),
        "the log is at debug level: {} lines",
        log.lines().count()
    );
    // Nor what the database keeps instead: password hashes.
    assert!(!log.contains("$argon2"), "a password hash is in the log");
    let mut checked = 0;
    for (name, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "the {name} is in the log");
        // JWTs: not even their signature.
        if let Some(signature) = secret.rsplit('.').next().filter(|_| secret.contains('.')) {
            assert!(
                !log.contains(signature),
                "the {name}'s signature is in the log"
            );
        }
        checked += 1;
    }
    eprintln!(
        "secrets: {checked} checked against {} log lines, none found",
        log.lines().count()
    );
}
