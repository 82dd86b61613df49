//! The credential attack suite: every attack of issue 7 in one table. Each
//! must be refused with its code, and leave every row of the database as it
//! was (a dump of all tables before and after each attack).

use std::future::Future;
use std::pin::Pin;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::{Code, Status};
use usermgmt::proto::{self, Role, auth_service_client::AuthServiceClient};

use crate::access_tokens::{base64_url, sign, signing_key, valid_claims, with};
use crate::playback::{for_streams, issue, make_secure, signing_keys};
use crate::support::dump::{assert_same, dump_all};
use crate::support::*;

type Attempt = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// How a refusal identifies itself, besides its code.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// The `ErrorInfo` reason the service attaches.
    Reason(&'static str),
    /// The `ResourceInfo` resource type of a `NOT_FOUND`.
    Resource(&'static str),
    /// A refusal made below the service (HTTP/2, tonic's decoder): no
    /// details, and a message or transport error that says what refused it.
    Below(&'static str),
    /// The server closed the connection without a gRPC answer: the client
    /// saw a transport error, whose code depends on whether it read the
    /// GOAWAY before its write failed, so only that is checked.
    ConnectionClosed,
}

/// One attack: its name, the one code and the one reason that count as
/// refused, and the call.
struct Attack {
    name: &'static str,
    code: Code,
    why: Why,
    attempt: Attempt,
}

fn attack(
    name: &'static str,
    code: Code,
    why: Why,
    attempt: impl Future<Output = Result<(), Status>> + Send + 'static,
) -> Attack {
    Attack {
        name,
        code,
        why,
        attempt: Box::pin(attempt),
    }
}

fn assert_refused(name: &str, status: &Status, code: Code, why: Why) {
    use tonic_types::StatusExt as _;
    if let Why::ConnectionClosed = why {
        let transport = std::error::Error::source(status)
            .is_some_and(|source| source.is::<tonic::transport::Error>());
        assert!(transport, "{name}: {status:?}");
        return;
    }
    assert_eq!(status.code(), code, "{name}: {status:?}");
    let reason = status.get_details_error_info().map(|info| info.reason);
    let resource = status
        .get_details_resource_info()
        .map(|info| info.resource_type);
    match why {
        Why::Reason(expected) => {
            assert_eq!(reason.as_deref(), Some(expected), "{name}: {status:?}");
        }
        Why::Resource(expected) => {
            assert_eq!(resource.as_deref(), Some(expected), "{name}: {status:?}");
        }
        Why::ConnectionClosed => {}
        Why::Below(expected) => {
            assert_eq!((reason, resource), (None, None), "{name}: {status:?}");
            let said = format!("{status:?}");
            assert!(said.contains(expected), "{name}: {status:?}");
        }
    }
}

/// Refusals by tonic's decoder of a message above `--max-request-bytes`.
const TOO_LARGE: Why = Why::Below("message length too large");

/// A mutation that would leave a row behind if the credential were accepted.
fn create_user_with(
    channel: &tonic::transport::Channel,
    header: &'static str,
    value: String,
) -> impl Future<Output = Result<(), Status>> + Send + 'static {
    create_user_as(channel, header, value, "mallory@acme.example.com")
}

fn create_user_as(
    channel: &tonic::transport::Channel,
    header: &'static str,
    value: String,
    email: &'static str,
) -> impl Future<Output = Result<(), Status>> + Send + 'static {
    let channel = channel.clone();
    async move {
        let request = proto::CreateUserRequest {
            email: email.into(),
            role: Role::NanoAdmin as i32,
            password: PASSWORD.into(),
        };
        let mut users = proto::user_service_client::UserServiceClient::new(channel);
        let mut request = tonic::Request::new(request);
        // A value the test cannot send is the test's bug, never a refusal.
        let value = value.parse().expect("a valid header value");
        request.metadata_mut().insert(header, value);
        users.create_user(request).await.map(|_| ())
    }
}

fn with_token(
    channel: &tonic::transport::Channel,
    token: &str,
) -> impl Future<Output = Result<(), Status>> + Send + 'static {
    create_user_with(channel, "authorization", format!("Bearer {token}"))
}

fn sign_with_header(claims: &serde_json::Value, header: Header, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(key).expect("key"),
    )
    .expect("sign")
}

/// What the attacks aim at and are made of, arranged once.
struct Arranged {
    server: TestServer,
    channel: tonic::transport::Channel,
    acme: Org,
    other: Org,
    admin: Session,
    foreign_admin: Session,
    key: Vec<u8>,
    claims: serde_json::Value,
    now: i64,
    public: proto::SigningKey,
    public_raw: Vec<u8>,
    stale: Vec<(String, String)>,
    target: proto::User,
    used: Asked,
    expired: Asked,
    foreign_target: proto::User,
    foreign_confirmation: Asked,
    accept: proto::AcceptInviteRequest,
    rotated: proto::RotatedApiKey,
    valid: String,
    parts: Vec<String>,
    none_header: String,
    tampered_body: String,
    confused: Header,
    attacker_kid: Header,
    unknown_kid: Header,
    attacker_key: &'static [u8],
    huge: String,
    long: String,
}

async fn arrange() -> Arranged {
    // A header limit below the default, so that a token between the two
    // shows that the setting is the one applied.
    let server = TestServer::start_with(&["--max-header-list-bytes", "8192"]).await;
    let channel = server.channel().await;
    let acme = create_org(&server.db, "Acme").await;
    let other = create_org(&server.db, "Other").await;
    make_secure(&server.db, acme.id).await;
    let admin = Session::login(&channel, &acme.admin_email, ADMIN_PASSWORD).await;
    let foreign_admin = Session::login(&channel, &other.admin_email, ADMIN_PASSWORD).await;
    let key = signing_key(&server.db).await;
    let claims = valid_claims(&server.db, &acme).await;
    let now = chrono::Utc::now().timestamp();

    // The playback key, for algorithm confusion: issue a token to create it.
    let playback = issue(&admin, for_streams(&["live"])).await.expect("issue");
    let public = signing_keys(&channel)
        .await
        .into_iter()
        .find(|k| k.kid == playback.kid)
        .expect("the playback key is published");
    let public_raw = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&public.x)
            .expect("x")
    };

    // Users whose tokens go stale: deleted, renewed and re-roled.
    let mut stale = Vec::new();
    for name in ["deleted", "renewed", "demoted"] {
        let email = format!("{name}@acme.example.com");
        let user = admin
            .create_user(&email, Role::NanoAdmin)
            .await
            .expect("create");
        stale.push((user.id.clone(), login(&channel, &email, PASSWORD).await));
    }
    let confirmation = admin.ask_delete(&stale[0].0).await.expect("ask delete");
    admin
        .confirm_delete(&stale[0].0, &confirmation.confirmation_token)
        .await
        .expect("delete");
    let confirmation = admin.ask_renew(&stale[1].0).await.expect("ask renew");
    admin
        .confirm_renew(&stale[1].0, &confirmation.confirmation_token)
        .await
        .expect("renew");
    admin
        .set_role(&stale[2].0, Role::NanoUser, "")
        .await
        .expect("demote");
    let target = admin
        .create_user("target@acme.example.com", Role::NanoUser)
        .await
        .expect("create the target");

    // Confirmations: used, expired and another organisation's.
    let used = admin.ask_renew(&target.id).await.expect("ask");
    admin
        .confirm_renew(&target.id, &used.confirmation_token)
        .await
        .expect("renew");
    let expired = admin.ask_renew(&target.id).await.expect("ask");
    server
        .db
        .client()
        .await
        .execute(
            "UPDATE confirmations SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
            &[],
        )
        .await
        .expect("expire");
    let foreign_target = foreign_admin
        .create_user("victim@other.example.com", Role::NanoUser)
        .await
        .expect("create");
    let foreign_confirmation = foreign_admin
        .ask_renew(&foreign_target.id)
        .await
        .expect("ask");

    // A used invite token.
    let invite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "invitee@acme.example.com".into(),
            role: Role::NanoAdmin as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner();
    let accept = proto::AcceptInviteRequest {
        invite_token: invite.invite_token.clone(),
        password: PASSWORD.into(),
    };
    AuthServiceClient::new(channel.clone())
        .accept_invite(accept.clone())
        .await
        .expect("accept");

    // A rotated API key.
    let rotation = admin
        .ask(&TwoStep::RotateApiKey)
        .await
        .expect("ask rotation");
    let rotated = admin
        .confirm(&TwoStep::RotateApiKey, &rotation.confirmation_token)
        .await
        .expect("rotate")
        .rotated();

    // Forged tokens.
    let valid = sign(&claims, &key);
    let parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let none_header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let tampered_body = base64_url(&with(claims.clone(), "org", json!(other.id)).to_string());
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some(playback.kid.clone());
    let mut attacker_kid = Header::new(Algorithm::HS256);
    attacker_kid.kid = Some("https://attacker.example.com/key.json".into());
    let mut unknown_kid = Header::new(Algorithm::HS256);
    unknown_kid.kid = Some("no-such-key".into());
    let attacker_key = b"the attacker's own key, 32 bytes or more";

    let huge = "a".repeat(1024 * 1024);
    let long = "a".repeat(12 * 1024);
    Arranged {
        server,
        channel,
        acme,
        other,
        admin,
        foreign_admin,
        key,
        claims,
        now,
        public,
        public_raw,
        stale,
        target,
        used,
        expired,
        foreign_target,
        foreign_confirmation,
        accept,
        rotated,
        valid,
        parts,
        none_header,
        tampered_body,
        confused,
        attacker_kid,
        unknown_kid,
        attacker_key,
        huge,
        long,
    }
}

/// Forged and tampered tokens.
fn forged_tokens(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        channel,
        key,
        claims,
        now,
        public,
        public_raw,
        valid,
        parts,
        none_header,
        tampered_body,
        confused,
        attacker_kid,
        unknown_kid,
        attacker_key,
        ..
    } = s;
    let c = channel;
    vec![
        attack(
            "alg none",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, &format!("{none_header}.{}.", parts[1])),
        ),
        attack(
            "HS256 signed with the playback public key (raw)",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, &sign_with_header(claims, confused.clone(), public_raw)),
        ),
        attack(
            "HS256 signed with the playback public key (as published)",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign_with_header(claims, confused.clone(), public.x.as_bytes()),
            ),
        ),
        attack(
            "kid of an attacker's key",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign_with_header(claims, attacker_kid.clone(), attacker_key),
            ),
        ),
        attack(
            "kid of an unknown key",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign_with_header(claims, unknown_kid.clone(), attacker_key),
            ),
        ),
        attack(
            "expired",
            Code::Unauthenticated,
            Why::Reason("TOKEN_EXPIRED"),
            with_token(c, &sign(&with(claims.clone(), "exp", json!(now - 5)), key)),
        ),
        attack(
            "nbf in the future",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign(&with(claims.clone(), "nbf", json!(now + 300)), key),
            ),
        ),
        attack(
            "wrong iss",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign(&with(claims.clone(), "iss", json!("attacker")), key),
            ),
        ),
        attack(
            "wrong aud",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(
                c,
                &sign(&with(claims.clone(), "aud", json!("attacker")), key),
            ),
        ),
        attack(
            "tampered payload, old signature",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, &format!("{}.{tampered_body}.{}", parts[0], parts[2])),
        ),
        attack(
            "truncated",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, &valid[..valid.len() / 2]),
        ),
        attack(
            "signature cut off",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, &format!("{}.{}.", parts[0], parts[1])),
        ),
        attack(
            "base64 garbage",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, "eyJhbGciOi.Zm9vYmFy.!!!!-_-_===="),
        ),
        attack(
            "not base64 at all",
            Code::Unauthenticated,
            Why::Reason("TOKEN_INVALID"),
            with_token(c, "...."),
        ),
    ]
}

/// Credentials too large for a header.
fn oversized_headers(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        channel,
        huge,
        long,
        ..
    } = s;
    let c = channel;
    vec![
        attack(
            "1 MiB token in a header",
            Code::Unknown,
            Why::ConnectionClosed,
            with_token(c, huge),
        ),
        attack(
            "12 KiB token in a header (above --max-header-list-bytes 8192)",
            Code::Unknown,
            Why::Below("mapped from HTTP status code 431"),
            with_token(c, long),
        ),
        attack(
            "6 KiB token (refused before any crypto)",
            Code::Unauthenticated,
            Why::Reason("CREDENTIALS_MALFORMED"),
            with_token(c, &"a".repeat(6 * 1024)),
        ),
    ]
}

/// Credentials that were good once: of a deleted, renewed or re-roled user, a rotated or made-up API key, a used invite.
fn stale_credentials(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        channel,
        acme,
        stale,
        accept,
        ..
    } = s;
    let c = channel;
    vec![
        attack(
            "deleted user's token",
            Code::Unauthenticated,
            Why::Reason("TOKEN_REVOKED"),
            with_token(c, &stale[0].1),
        ),
        attack(
            "token from before a renew",
            Code::Unauthenticated,
            Why::Reason("TOKEN_REVOKED"),
            with_token(c, &stale[1].1),
        ),
        attack(
            "token from before a role change",
            Code::Unauthenticated,
            Why::Reason("TOKEN_REVOKED"),
            with_token(c, &stale[2].1),
        ),
        attack(
            "rotated API key",
            Code::Unauthenticated,
            Why::Reason("API_KEY_INVALID"),
            create_user_with(c, "x-bintu-apikey", acme.api_key.clone()),
        ),
        attack(
            "made-up API key",
            Code::Unauthenticated,
            Why::Reason("API_KEY_INVALID"),
            create_user_with(c, "x-bintu-apikey", format!("um_live_{}", "A".repeat(43))),
        ),
        attack(
            "used invite token",
            Code::Unauthenticated,
            Why::Reason("INVITE_INVALID"),
            {
                let mut auth = AuthServiceClient::new(channel.clone());
                let accept = accept.clone();
                async move { auth.accept_invite(accept).await.map(|_| ()) }
            },
        ),
    ]
}

/// Request bodies above the limit.
fn oversized_bodies(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        channel,
        admin,
        huge,
        ..
    } = s;
    vec![
        attack("1 MiB request body", Code::ResourceExhausted, TOO_LARGE, {
            let mut auth = AuthServiceClient::new(channel.clone());
            let request = proto::AcceptInviteRequest {
                invite_token: huge.clone(),
                password: huge.clone(),
            };
            async move { auth.accept_invite(request).await.map(|_| ()) }
        }),
        attack(
            "1 MiB request body with a valid token",
            Code::ResourceExhausted,
            TOO_LARGE,
            {
                let users = admin.users();
                let request = admin.req(proto::CreateUserRequest {
                    email: huge.clone(),
                    role: Role::NanoAdmin as i32,
                    password: PASSWORD.into(),
                });
                async move {
                    let mut users = users;
                    users.create_user(request).await.map(|_| ())
                }
            },
        ),
    ]
}

/// Valid credentials of organisation B, aimed at organisation A.
fn other_organisation(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        channel,
        other,
        foreign_admin,
        target,
        ..
    } = s;
    vec![
        attack(
            "B's valid token on A's user (delete)",
            Code::NotFound,
            Why::Resource("user"),
            {
                let b = foreign_admin.clone();
                let id = target.id.clone();
                async move { b.ask_delete(&id).await.map(|_| ()) }
            },
        ),
        attack(
            "B's valid token on A's user (role)",
            Code::NotFound,
            Why::Resource("user"),
            {
                let b = foreign_admin.clone();
                let id = target.id.clone();
                async move { b.set_role(&id, Role::NanoAdmin, "").await.map(|_| ()) }
            },
        ),
        attack(
            "B's API key on A's user",
            Code::NotFound,
            Why::Resource("user"),
            {
                let mut users = proto::user_service_client::UserServiceClient::new(channel.clone());
                let request = with_header(
                    proto::DeleteUserRequest {
                        user_id: target.id.clone(),
                        confirmation_token: String::new(),
                    },
                    "x-bintu-apikey",
                    &other.api_key,
                );
                async move { users.delete_user(request).await.map(|_| ()) }
            },
        ),
    ]
}

/// Confirmations (the caller is authenticated: the confirmation is refused as a precondition, with its reason).
fn confirmations(s: &Arranged) -> Vec<Attack> {
    let Arranged {
        admin,
        target,
        used,
        expired,
        foreign_target,
        foreign_confirmation,
        ..
    } = s;
    vec![
        attack(
            "used confirmation token",
            Code::FailedPrecondition,
            Why::Reason("CONFIRMATION_USED"),
            {
                let a = admin.clone();
                let (id, token) = (target.id.clone(), used.confirmation_token.clone());
                async move { a.confirm_renew(&id, &token).await.map(|_| ()) }
            },
        ),
        attack(
            "expired confirmation token",
            Code::FailedPrecondition,
            Why::Reason("CONFIRMATION_EXPIRED"),
            {
                let a = admin.clone();
                let (id, token) = (target.id.clone(), expired.confirmation_token.clone());
                async move { a.confirm_renew(&id, &token).await.map(|_| ()) }
            },
        ),
        attack(
            "another organisation's confirmation token",
            Code::FailedPrecondition,
            Why::Reason("CONFIRMATION_MISMATCH"),
            {
                let a = admin.clone();
                let (id, token) = (
                    target.id.clone(),
                    foreign_confirmation.confirmation_token.clone(),
                );
                async move { a.confirm_renew(&id, &token).await.map(|_| ()) }
            },
        ),
        attack(
            "another organisation's confirmation token on its own user",
            Code::FailedPrecondition,
            Why::Reason("CONFIRMATION_MISMATCH"),
            {
                let a = admin.clone();
                let (id, token) = (
                    foreign_target.id.clone(),
                    foreign_confirmation.confirmation_token.clone(),
                );
                async move { a.confirm_renew(&id, &token).await.map(|_| ()) }
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_attack_is_refused_and_changes_nothing() {
    let s = arrange().await;
    let attacks: Vec<Attack> = [
        forged_tokens(&s),
        oversized_headers(&s),
        stale_credentials(&s),
        oversized_bodies(&s),
        other_organisation(&s),
        confirmations(&s),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Arranged {
        server,
        channel,
        admin,
        valid,
        rotated,
        ..
    } = &s;
    let c = channel;

    // The baselines: the un-tampered token and the current API key, sent
    // the way the attacks send theirs, are accepted; so each refusal below
    // is the tampering's, not the test's.
    create_user_as(
        c,
        "authorization",
        format!("Bearer {valid}"),
        "baseline-token@acme.example.com",
    )
    .await
    .expect("the un-tampered token is accepted");
    create_user_as(
        c,
        "x-bintu-apikey",
        rotated.api_key.clone(),
        "baseline-key@acme.example.com",
    )
    .await
    .expect("the current API key is accepted");

    let before = dump_all(&server.db).await;
    let tried = attacks.len();
    for Attack {
        name,
        code,
        why,
        attempt,
    } in attacks
    {
        let status = attempt.await.expect_err(name);
        eprintln!("{name}: {:?} {why:?}", status.code());
        assert_refused(name, &status, code, why);
        assert_same(&before, &dump_all(&server.db).await, name);
    }
    eprintln!("attacks tried: {tried}, all refused, no row changed");
    // The server is unharmed, and the admin's own token still works.
    admin.who_am_i().await.expect("the server still serves");
}
