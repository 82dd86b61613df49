//! Personal API tokens: created once and shown once, presented like an
//! access token, held to their permissions within the user's current role,
//! dead with their user's tokenKey on every replica, listed and revoked by
//! their user or an admin of the organisation only, and their use recorded
//! in batches.

use tonic::Code;
use tonic::transport::Channel;
use usermgmt::proto::{
    self, api_token_service_client::ApiTokenServiceClient, auth_service_client::AuthServiceClient,
    user_service_client::UserServiceClient,
};

use crate::support::*;

fn tokens(channel: &Channel) -> ApiTokenServiceClient<Channel> {
    ApiTokenServiceClient::new(channel.clone())
}

async fn get_user(channel: &Channel, credential: &str, user_id: &str) -> Result<(), tonic::Status> {
    UserServiceClient::new(channel.clone())
        .get_user(authed(
            proto::GetUserRequest {
                user_id: user_id.into(),
            },
            credential,
        ))
        .await
        .map(|_| ())
}

async fn who_am_i(
    channel: &Channel,
    credential: &str,
) -> Result<proto::WhoAmIResponse, tonic::Status> {
    AuthServiceClient::new(channel.clone())
        .who_am_i(authed(proto::WhoAmIRequest {}, credential))
        .await
        .map(tonic::Response::into_inner)
}

async fn list(
    channel: &Channel,
    credential: &str,
    user_id: &str,
) -> Result<Vec<proto::ApiToken>, tonic::Status> {
    tokens(channel)
        .list_api_tokens(authed(
            proto::ListApiTokensRequest {
                user_id: user_id.into(),
                ..Default::default()
            },
            credential,
        ))
        .await
        .map(|response| response.into_inner().api_tokens)
}

async fn revoke(
    channel: &Channel,
    credential: &str,
    id: &str,
) -> Result<proto::ApiToken, tonic::Status> {
    tokens(channel)
        .revoke_api_token(authed(
            proto::RevokeApiTokenRequest {
                api_token_id: id.into(),
            },
            credential,
        ))
        .await
        .map(|response| response.into_inner().api_token.expect("the token"))
}

fn create_request(expires_in_secs: i64, permissions: &[&str]) -> proto::CreateApiTokenRequest {
    proto::CreateApiTokenRequest {
        name: "deploy script".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: now_seconds() + expires_in_secs,
            nanos: 0,
        }),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_shown_once_works_in_both_headers_and_authorize_accepts_it() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let access = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let created = create_api_token(&channel, &access, &[])
        .await
        .expect("create");
    assert!(created.token.starts_with("umt_"), "{}", created.token);
    // 256 random bits, base64url without padding, behind the prefix.
    assert_eq!(created.token.len(), "umt_".len() + 43);
    let resource = created.api_token.expect("the resource");
    assert_eq!(resource.user_id, org.admin_id.to_string());
    assert_eq!(resource.name, "test token");
    assert!(resource.permissions.is_empty(), "the whole role");
    assert!(resource.last_used_at.is_none());

    // Only a hash is stored.
    let stored: Vec<u8> = server
        .db
        .client()
        .await
        .query_one(
            "SELECT token_hash FROM api_tokens WHERE id = $1::text::uuid",
            &[&resource.id],
        )
        .await
        .expect("the row")
        .get(0);
    assert_eq!(stored.len(), 32);
    assert!(
        !String::from_utf8_lossy(&stored).contains(&created.token[4..12]),
        "the secret is not stored"
    );

    let me = org.admin_id.to_string();
    get_user(&channel, &created.token, &me)
        .await
        .expect("as Bearer");
    UserServiceClient::new(channel.clone())
        .get_user(with_header(
            proto::GetUserRequest {
                user_id: me.clone(),
            },
            "x-bintu-token",
            &created.token,
        ))
        .await
        .expect("as x-bintu-token");
    let who = who_am_i(&channel, &created.token).await.expect("whoami");
    assert_eq!(who.role, proto::Role::NanoAdmin as i32);
    assert!(who.permissions.iter().any(|p| p == "users.delete"));

    let service_key = register_service(&server.db, "streams").await;
    let authorize = |credential: &str, permission: &str| {
        with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(proto::credential::Kind::AccessToken(credential.into())),
                }),
                permission: permission.into(),
                organisation_id: org.id.to_string(),
            },
            "x-usermgmt-service-key",
            &service_key,
        )
    };
    let answer = AuthServiceClient::new(channel.clone())
        .authorize(authorize(&created.token, "streams.delete"))
        .await
        .expect("authorize")
        .into_inner();
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.principal.expect("principal").user_id, me);

    // An unknown token of the right shape, and a mangled one.
    let unknown = format!("umt_{}", "A".repeat(43));
    let answer = AuthServiceClient::new(channel.clone())
        .authorize(authorize(&unknown, "streams.read"))
        .await
        .expect("authorize")
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "API_TOKEN_INVALID");
    assert_status(
        get_user(&channel, &unknown, &me).await,
        Code::Unauthenticated,
        Some("API_TOKEN_INVALID"),
    );
    assert_status(
        get_user(&channel, &format!("umt_{}", "A".repeat(200)), &me).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MALFORMED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_only_what_it_was_given_within_the_current_role() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("bob");
    let bob_access = login(&channel, "bob@acme.example.com", PASSWORD).await;

    // Only users.read: reading works, inviting (not in the token) does not,
    // even for an admin's token.
    let reader = create_api_token(&channel, &admin.token, &["users.read"])
        .await
        .expect("create")
        .token;
    get_user(&channel, &reader, &bob.id)
        .await
        .expect("users.read");
    assert_status(
        UserServiceClient::new(channel.clone())
            .create_invite(authed(
                proto::CreateInviteRequest {
                    email: "carol@acme.example.com".into(),
                    role: proto::Role::NanoUser as i32,
                    ttl: None,
                },
                &reader,
            ))
            .await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    let who = who_am_i(&channel, &reader).await.expect("whoami");
    assert_eq!(who.permissions, vec!["users.read".to_owned()]);

    // A nanoUser cannot ask for what the role lacks, nor for nonsense.
    let refused = create_api_token(&channel, &bob_access, &["streams.read", "users.delete"]).await;
    let status = assert_status(refused, Code::InvalidArgument, None);
    assert_eq!(violated_fields(&status), vec!["permissions[1]".to_owned()]);
    let status = assert_status(
        create_api_token(&channel, &bob_access, &["no.such"]).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), vec!["permissions[0]".to_owned()]);

    // Expiry: required, in the future, at most a year.
    for (request, why) in [
        (
            proto::CreateApiTokenRequest {
                expires_at: None,
                ..create_request(60, &[])
            },
            "missing",
        ),
        (create_request(-1, &[]), "past"),
        (create_request(366 * 86_400, &[]), "beyond a year"),
        (
            proto::CreateApiTokenRequest {
                expires_at: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..create_request(60, &[])
            },
            "out of range",
        ),
    ] {
        let status = assert_status(
            tokens(&channel)
                .create_api_token(authed(request, &bob_access))
                .await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(
            violated_fields(&status),
            vec!["expires_at".to_owned()],
            "{why}"
        );
    }
    for name in ["", "   ", &"x".repeat(101)] {
        let status = assert_status(
            tokens(&channel)
                .create_api_token(authed(
                    proto::CreateApiTokenRequest {
                        name: name.to_owned(),
                        ..create_request(60, &[])
                    },
                    &bob_access,
                ))
                .await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), vec!["name".to_owned()]);
    }

    // The whole role of a nanoUser: playback tokens yes, deleting no.
    let bobs = create_api_token(&channel, &bob_access, &[])
        .await
        .expect("create")
        .token;
    assert_status(
        two_step::ask(
            &channel,
            &Caller::Token(bobs.clone()),
            &TwoStep::DeleteUser(org.admin_id.to_string()),
        )
        .await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    get_user(&channel, &bobs, &bob.id)
        .await
        .expect("users.read");

    // A token cannot mint tokens, nor can the API key: both lack a session.
    for credential in [&bobs, &reader] {
        assert_status(
            create_api_token(&channel, credential, &[]).await,
            Code::FailedPrecondition,
            Some("SESSION_REQUIRED"),
        );
    }
    assert_status(
        tokens(&channel)
            .create_api_token(with_header(
                create_request(60, &[]),
                "x-bintu-apikey",
                &org.api_key,
            ))
            .await,
        Code::FailedPrecondition,
        Some("SESSION_REQUIRED"),
    );
}

/// Each change of the user ends the token on the very next call, also on
/// the replica that did not make the change and had the token cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_role_change_suspension_and_deletion_end_tokens_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        db,
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let admin = Session::login(on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("bob");

    type Change = fn(&Session, String) -> futures_change::Boxed;
    let changes: [(&str, Change); 4] = [
        ("renewal", |admin, id| {
            let admin = admin.clone();
            Box::pin(async move {
                let asked = admin.ask_renew(&id).await.expect("ask");
                admin
                    .confirm_renew(&id, &asked.confirmation_token)
                    .await
                    .expect("renew");
            })
        }),
        ("role change", |admin, id| {
            let admin = admin.clone();
            Box::pin(async move {
                admin
                    .set_role(&id, proto::Role::NanoReadOnly, "")
                    .await
                    .expect("demote");
                admin
                    .set_role(&id, proto::Role::NanoUser, "")
                    .await
                    .expect("promote back");
            })
        }),
        ("suspension", |admin, id| {
            let admin = admin.clone();
            Box::pin(async move {
                let suspend = TwoStep::SuspendUser(id.clone());
                let confirmation = admin.ask(&suspend).await.expect("ask");
                admin
                    .confirm(&suspend, &confirmation.confirmation_token)
                    .await
                    .expect("suspend");
                admin
                    .users()
                    .reactivate_user(admin.req(proto::ReactivateUserRequest {
                        user_id: id.clone(),
                        etag: String::new(),
                    }))
                    .await
                    .expect("reactivate");
            })
        }),
        ("deletion", |admin, id| {
            let admin = admin.clone();
            Box::pin(async move {
                let asked = admin.ask_delete(&id).await.expect("ask");
                admin
                    .confirm_delete(&id, &asked.confirmation_token)
                    .await
                    .expect("delete");
            })
        }),
    ];
    for (what, change) in changes {
        let access = login(on_second, "bob@acme.example.com", PASSWORD).await;
        let token = create_api_token(on_second, &access, &["users.read"])
            .await
            .expect("create")
            .token;
        for on in [on_first, on_second] {
            get_user(on, &token, &bob.id).await.expect("warm");
            get_user(on, &token, &bob.id).await.expect("cached");
        }
        change(&admin, bob.id.clone()).await;
        // A deleted user's tokens are deleted with it: unknown from then on.
        let reason = if what == "deletion" {
            "API_TOKEN_INVALID"
        } else {
            "TOKEN_REVOKED"
        };
        for on in [&on_second, &on_first] {
            let status = assert_status(
                get_user(on, &token, &bob.id).await,
                Code::Unauthenticated,
                None,
            );
            let got = tonic_types::StatusExt::get_details_error_info(&status).map(|i| i.reason);
            assert_eq!(got.as_deref(), Some(reason), "{what}");
        }
        if what == "deletion" {
            // Its rows went with the user.
            let count: i64 = db
                .client()
                .await
                .query_one("SELECT count(*) FROM api_tokens", &[])
                .await
                .expect("count")
                .get(0);
            assert_eq!(count, 0, "{what}");
        } else {
            // Reactivated or renewed, the user's old token stays dead.
            assert_status(
                get_user(on_first, &token, &bob.id).await,
                Code::Unauthenticated,
                Some("TOKEN_REVOKED"),
            );
        }
    }
}

mod futures_change {
    pub type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_by_their_user_or_an_admin_of_the_organisation_only() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        db,
        org: acme,
        on_first,
        on_second,
        ..
    } = &replicas;
    let other = create_org(db, "Other").await;
    let admin = Session::login(on_first, &acme.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("bob");
    admin
        .create_user("carol@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("carol");
    let bob_access = login(on_first, "bob@acme.example.com", PASSWORD).await;
    let carol_access = login(on_first, "carol@acme.example.com", PASSWORD).await;
    let outsider = login(on_first, &other.admin_email, ADMIN_PASSWORD).await;
    let first_token = create_api_token(on_first, &bob_access, &[])
        .await
        .expect("create");
    let second_token = create_api_token(on_first, &bob_access, &["users.read"])
        .await
        .expect("create");
    let first_id = first_token.api_token.expect("resource").id;
    let second_id = second_token.api_token.expect("resource").id;

    // Bob's own, in creation order; the admin's view of Bob's is the same.
    let own: Vec<String> = list(on_first, &bob_access, "")
        .await
        .expect("own")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(own, vec![first_id.clone(), second_id.clone()]);
    let by_admin = list(on_first, &admin.token, &bob.id).await.expect("admin");
    assert_eq!(by_admin.len(), 2);
    // A token of the whole role lists its own user's tokens too; one
    // restricted to users.read was not given api_tokens.manage_own.
    assert_eq!(
        list(on_first, &first_token.token, "")
            .await
            .expect("by token")
            .len(),
        2
    );
    assert_status(
        list(on_first, &second_token.token, "").await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    // Carol may not see Bob's; another organisation's admin finds nobody.
    assert_status(
        list(on_first, &carol_access, &bob.id).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    assert_status(
        list(on_first, &outsider, &bob.id).await,
        Code::NotFound,
        None,
    );
    assert_status(
        revoke(on_first, &outsider, &first_id).await,
        Code::NotFound,
        None,
    );
    assert_status(
        revoke(on_first, &carol_access, &first_id).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    // A token restricted to users.read lacks api_tokens.manage for others'.
    let admins_reader = create_api_token(on_first, &admin.token, &["users.read"])
        .await
        .expect("create")
        .token;
    assert_status(
        revoke(on_first, &admins_reader, &first_id).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );

    // Warm both replicas, revoke on one: the other refuses at once.
    for on in [on_first, on_second] {
        get_user(on, &first_token.token, &bob.id)
            .await
            .expect("warm");
        get_user(on, &second_token.token, &bob.id)
            .await
            .expect("warm");
    }
    let revoked = revoke(on_second, &bob_access, &first_id)
        .await
        .expect("own");
    assert_eq!(revoked.id, first_id);
    assert_status(
        get_user(on_first, &first_token.token, &bob.id).await,
        Code::Unauthenticated,
        Some("API_TOKEN_INVALID"),
    );
    revoke(on_first, &admin.token, &second_id)
        .await
        .expect("by the admin");
    assert_status(
        get_user(on_second, &second_token.token, &bob.id).await,
        Code::Unauthenticated,
        Some("API_TOKEN_INVALID"),
    );
    // Revoked is revoked: gone from the list, a second revocation finds nothing.
    assert!(
        list(on_first, &bob_access, "")
            .await
            .expect("own")
            .is_empty()
    );
    assert_status(
        revoke(on_first, &bob_access, &first_id).await,
        Code::NotFound,
        None,
    );
    let malformed = assert_status(
        revoke(on_first, &bob_access, "not-a-uuid").await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&malformed), vec!["api_token_id".to_owned()]);
}

/// A token whose expiry passes while it sits in the cache fails from then
/// on: the cache checks the entry's own expiry, nothing has to evict it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_fails_even_when_cached() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let access = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let created = create_api_token(&channel, &access, &[])
        .await
        .expect("create");
    // Shortened before its first use, so that the cache fills with the
    // short expiry (a later change would evict the entry instead).
    let expires_at_ms: i64 = server
        .db
        .client()
        .await
        .query_one(
            "UPDATE api_tokens SET expires_at = now() + interval '1 second' \
             RETURNING (extract(epoch FROM expires_at) * 1000)::int8",
            &[],
        )
        .await
        .expect("shorten")
        .get(0);
    let me = org.admin_id.to_string();
    get_user(&channel, &created.token, &me).await.expect("warm");
    get_user(&channel, &created.token, &me)
        .await
        .expect("cached");
    // Polled until refused, within a bound from the expiry itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        match get_user(&channel, &created.token, &me).await {
            Err(status) => break status,
            Ok(()) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still accepted long after its expiry"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    assert!(
        chrono::Utc::now().timestamp_millis() >= expires_at_ms,
        "refused before its expiry"
    );
    assert_status(
        Err::<(), _>(refused),
        Code::Unauthenticated,
        Some("API_TOKEN_INVALID"),
    );
    assert!(list(&channel, &access, "").await.expect("list").is_empty());
}

/// Each use does not write; the batch records last_used_at, and the first
/// use is audited once. Creation and revocation are audited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_is_recorded_in_batches_and_first_use_creation_and_revocation_are_audited() {
    let server = TestServer::start_with(&["--api-token-usage-flush-ms", "50"]).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let created = create_api_token(&channel, &admin.token, &["users.read"])
        .await
        .expect("create");
    let id = created.api_token.expect("resource").id;
    let me = org.admin_id.to_string();
    for _ in 0..3 {
        get_user(&channel, &created.token, &me).await.expect("use");
    }
    let first_seen = wait_for_last_use(&channel, &admin.token, &id).await;
    get_user(&channel, &created.token, &me)
        .await
        .expect("use again");
    loop {
        let seen = wait_for_last_use(&channel, &admin.token, &id).await;
        if (seen.seconds, seen.nanos) > (first_seen.seconds, first_seen.nanos) {
            break;
        }
        tokio::task::yield_now().await;
    }
    revoke(&channel, &admin.token, &id).await.expect("revoke");

    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            target_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit");
    let mut actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        vec![
            "api_token.create",
            "api_token.first_use",
            "api_token.revoke"
        ]
    );
    for event in &events {
        assert_eq!(event.actor, format!("user:{me}"));
        assert_eq!(event.target_type, "api_token");
        assert!(
            !event.after.contains(&created.token[4..]),
            "no secret in the audit log"
        );
    }
}

/// Polls the token list until the token shows a use (the flush is
/// periodic); fails after a generous bound rather than hanging.
async fn wait_for_last_use(
    channel: &Channel,
    credential: &str,
    id: &str,
) -> prost_types::Timestamp {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = list(channel, credential, "").await.expect("list");
        let token = listed.iter().find(|t| t.id == id).expect("listed");
        if let Some(at) = token.last_used_at {
            return at;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never recorded"
        );
        tokio::task::yield_now().await;
    }
}

/// A write admitted with a personal API token and already past its commit
/// re-check when the token is revoked by a call that, like it, takes the
/// organisation's lock only shared: the revocation is acknowledged only
/// after the write committed (the write read the token `FOR SHARE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_waits_for_a_write_already_past_its_recheck() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let access = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let created = create_api_token(&channel, &access, &[])
        .await
        .expect("create");
    let token_id = created.api_token.expect("resource").id;
    let end = {
        let (channel, access) = (channel.clone(), access.clone());
        async move { revoke(&channel, &access, &token_id).await }
    };
    let (written, ended) = crate::support::lock::end_while_a_write_waits(
        &server.db,
        &channel,
        org.id,
        &created.token,
        end,
    )
    .await;
    written.expect("the write, admitted before the revocation, commits");
    ended.expect("then the token is revoked");
    assert_status(
        who_am_i(&channel, &created.token).await,
        Code::Unauthenticated,
        Some("API_TOKEN_INVALID"),
    );
}

/// The role a token acts with is its user's current one, never the one it
/// was created under: lowered by hand in the database (no tokenKey renewal,
/// so the token lives on), the token loses what the role lost, including
/// permissions it was created with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_never_does_more_than_its_users_current_role() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    admin
        .create_user("second@acme.example.com", proto::Role::NanoAdmin)
        .await
        .expect("a second admin");
    let whole = create_api_token(&channel, &admin.token, &[])
        .await
        .expect("whole role")
        .token;
    let narrow = create_api_token(&channel, &admin.token, &["users.delete", "streams.read"])
        .await
        .expect("two permissions")
        .token;
    let invite = |credential: &str| {
        let credential = credential.to_owned();
        let channel = channel.clone();
        async move {
            UserServiceClient::new(channel)
                .create_invite(authed(
                    proto::CreateInviteRequest {
                        email: "eve@acme.example.com".into(),
                        role: proto::Role::NanoUser as i32,
                        ttl: None,
                    },
                    &credential,
                ))
                .await
        }
    };
    let first = invite(&whole).await.expect("an admin's token invites");
    UserServiceClient::new(channel.clone())
        .revoke_invite(authed(
            proto::RevokeInviteRequest {
                invite_id: first.into_inner().invite.expect("invite").id,
            },
            &whole,
        ))
        .await
        .expect("revoke the invite");

    server
        .db
        .client()
        .await
        .execute(
            "UPDATE users SET role = 'nanoReadOnly' WHERE id = $1",
            &[&org.admin_id],
        )
        .await
        .expect("demote by hand");
    assert_status(
        invite(&whole).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    // A change by hand reaches the per-call check when its notification
    // does (at most TRUST after the commit; cache_by_hand.rs), not with the
    // UPDATE's answer: wait for it rather than race it.
    let read_only_role = proto::Role::NanoReadOnly as i32;
    let noticed = crate::cache_by_hand::poll_until(crate::cache_by_hand::by_hand_bound(), || {
        let (channel, whole) = (channel.clone(), whole.clone());
        async move {
            who_am_i(&channel, &whole)
                .await
                .is_ok_and(|who| who.role == read_only_role)
        }
    })
    .await;
    assert!(
        noticed,
        "the role lowered by hand reaches the per-call check"
    );
    let who = who_am_i(&channel, &whole).await.expect("still valid");
    assert_eq!(who.role, proto::Role::NanoReadOnly as i32);
    let read_only: Vec<String> = [
        "playerkey.read",
        "token.read_own",
        "streams.read",
        "tags.read",
        "metrics.read",
        "sessions.manage_own",
        "api_tokens.manage_own",
        "users.renew_own_token",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(who.permissions, read_only);
    // Created with users.delete and streams.read: only streams.read is left.
    let who = who_am_i(&channel, &narrow).await.expect("still valid");
    assert_eq!(who.permissions, vec!["streams.read".to_owned()]);
    assert_status(
        two_step::ask(
            &channel,
            &Caller::Token(narrow.clone()),
            &TwoStep::DeleteUser(org.admin_id.to_string()),
        )
        .await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
}

/// PERMISSION_DENIED `PERMISSION_MISSING` naming `permission`.
#[track_caller]
fn missing<T: std::fmt::Debug>(result: Result<T, tonic::Status>, permission: &str) {
    let status = assert_status(result, Code::PermissionDenied, Some("PERMISSION_MISSING"));
    let info = tonic_types::StatusExt::get_details_error_info(&status).expect("info");
    assert_eq!(
        info.metadata.get("permission").map(String::as_str),
        Some(permission)
    );
}

async fn sessions_of(
    channel: &Channel,
    credential: &str,
) -> Result<Vec<proto::Session>, tonic::Status> {
    proto::session_service_client::SessionServiceClient::new(channel.clone())
        .list_sessions(authed(proto::ListSessionsRequest::default(), credential))
        .await
        .map(|response| response.into_inner().sessions)
}

async fn end_session(channel: &Channel, credential: &str, id: &str) -> Result<(), tonic::Status> {
    proto::session_service_client::SessionServiceClient::new(channel.clone())
        .revoke_session(authed(
            proto::RevokeSessionRequest {
                session_id: id.into(),
            },
            credential,
        ))
        .await
        .map(|_| ())
}

/// The review: a token restricted to `streams.read` listed its user's
/// sessions (with their addresses), ended them, revoked a sibling token and
/// renewed the user's tokenKey. One's own credentials need permissions of
/// their own, which every role holds and a restricted token has only when
/// granted at creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_token_touches_its_users_credentials_only_when_granted() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let bob_id = add_user(
        &channel,
        &org,
        "bob@acme.example.com",
        proto::Role::NanoReadOnly,
    )
    .await
    .to_string();
    let bob = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    let sibling = create_api_token(&channel, &bob.access_token, &[])
        .await
        .expect("a sibling token");
    let sibling_id = sibling.api_token.expect("resource").id;
    let narrow = create_api_token(&channel, &bob.access_token, &["streams.read"])
        .await
        .expect("a token for streams.read")
        .token;

    missing(sessions_of(&channel, &narrow).await, "sessions.manage_own");
    missing(
        end_session(&channel, &narrow, &bob.session_id).await,
        "sessions.manage_own",
    );
    missing(list(&channel, &narrow, "").await, "api_tokens.manage_own");
    missing(
        revoke(&channel, &narrow, &sibling_id).await,
        "api_tokens.manage_own",
    );
    let renew = TwoStep::RenewTokenKey(bob_id.clone());
    missing(
        two_step::ask(&channel, &Caller::Token(narrow.clone()), &renew).await,
        "users.renew_own_token",
    );
    // Nothing of Bob's was touched.
    who_am_i(&channel, &bob.access_token)
        .await
        .expect("the session lives");
    who_am_i(&channel, &sibling.token)
        .await
        .expect("the sibling lives");
    // The whole role (a token created with no restriction) and the session
    // itself still may.
    sessions_of(&channel, &sibling.token)
        .await
        .expect("a whole-role token lists its user's sessions");
    list(&channel, &bob.access_token, "")
        .await
        .expect("the session lists its user's tokens");

    // Granted at creation, each is allowed.
    let granted = create_api_token(
        &channel,
        &bob.access_token,
        &[
            "sessions.manage_own",
            "api_tokens.manage_own",
            "users.renew_own_token",
        ],
    )
    .await
    .expect("a token granted the own-credential permissions")
    .token;
    let sessions = sessions_of(&channel, &granted).await.expect("listed");
    assert!(
        sessions.iter().any(|s| s.id == bob.session_id),
        "{sessions:?}"
    );
    assert_eq!(list(&channel, &granted, "").await.expect("listed").len(), 3);
    revoke(&channel, &granted, &sibling_id)
        .await
        .expect("the sibling revoked");
    end_session(&channel, &granted, &bob.session_id)
        .await
        .expect("the session ended");
    assert_status(
        who_am_i(&channel, &bob.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let caller = Caller::Token(granted.clone());
    let asked = two_step::ask(&channel, &caller, &renew)
        .await
        .expect("asked");
    two_step::confirm(&channel, &caller, &renew, &asked.confirmation_token)
        .await
        .expect("renewed");
    assert_status(
        who_am_i(&channel, &granted).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

/// A password change keeps the user's personal API tokens (they are bound to
/// the tokenKey, not the password: docs/security.md says why); a password
/// reset renews the tokenKey and ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_keeps_the_tokens_and_a_reset_ends_them() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let access = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let created = create_api_token(&channel, &access, &[])
        .await
        .expect("create");
    let me = org.admin_id.to_string();
    get_user(&channel, &created.token, &me)
        .await
        .expect("the token works");

    AuthServiceClient::new(channel.clone())
        .change_password(authed(
            proto::ChangePasswordRequest {
                current_password: ADMIN_PASSWORD.into(),
                new_password: "a new password 2".into(),
            },
            &access,
        ))
        .await
        .expect("change the password");
    get_user(&channel, &created.token, &me)
        .await
        .expect("the token outlives a password change");

    let reset = reset_token_of(&server.db, &org).await;
    AuthServiceClient::new(channel.clone())
        .reset_password(proto::ResetPasswordRequest {
            reset_token: reset,
            new_password: "a new password 3".into(),
        })
        .await
        .expect("reset the password");
    assert_status(
        get_user(&channel, &created.token, &me).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}
