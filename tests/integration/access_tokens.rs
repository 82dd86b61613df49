//! Tokens that must not get in, and tokens that must stop working.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::Code;
use usermgmt::proto::{
    self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use uuid::Uuid;

use crate::support::*;

pub(crate) async fn signing_key(db: &TestDb) -> Vec<u8> {
    db.client()
        .await
        .query_one(
            "SELECT value FROM service_secrets WHERE name = 'access_token_hs256_key'",
            &[],
        )
        .await
        .expect("signing key")
        .get(0)
}

/// Claims like the server's, for the admin of `org` with its current
/// tokenKey, of a session opened for it here as a login would.
pub(crate) async fn valid_claims(db: &TestDb, org: &Org) -> serde_json::Value {
    let row = db
        .client()
        .await
        .query_one(
            "INSERT INTO sessions (id, organisation_id, user_id, token_key, expires_at, \
             absolute_expires_at) SELECT $1, organisation_id, id, token_key, \
             now() + interval '1 day', now() + interval '1 day' FROM users WHERE id = $2 \
             RETURNING token_key, id",
            &[&Uuid::now_v7(), &org.admin_id],
        )
        .await
        .expect("a session");
    let (token_key, session_id): (Uuid, Uuid) = (row.get(0), row.get(1));
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "usermgmt", "aud": "usermgmt", "sub": org.admin_id, "org": org.id,
        "iat": now, "nbf": now, "exp": now + 600, "jti": Uuid::new_v4(), "tkey": token_key,
        "sid": session_id,
    })
}

pub(crate) fn sign(claims: &serde_json::Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key).expect("key"),
    )
    .expect("sign")
}

pub(crate) fn without(mut claims: serde_json::Value, field: &str) -> serde_json::Value {
    if let Some(object) = claims.as_object_mut() {
        object.remove(field);
    }
    claims
}

pub(crate) fn with(
    mut claims: serde_json::Value,
    field: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    claims[field] = value;
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_foreign_tokens_are_unauthenticated() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let key = signing_key(&server.db).await;
    let claims = valid_claims(&server.db, &org).await;
    let now = chrono::Utc::now().timestamp();
    let mut users = UserServiceClient::new(server.channel().await);

    // The control: a token forged exactly like the server's is accepted.
    users
        .list_users(authed(
            proto::ListUsersRequest::default(),
            &sign(&claims, &key),
        ))
        .await
        .expect("a well-formed token works");

    let bob = insert_user(&server.db, org.id, "bob@acme.example.com", "nanoUser").await;
    let other_session: Uuid = server
        .db
        .client()
        .await
        .query_one(
            "INSERT INTO sessions (id, organisation_id, user_id, token_key, expires_at, \
             absolute_expires_at) SELECT $1, organisation_id, id, token_key, \
             now() + interval '1 day', now() + interval '1 day' FROM users WHERE id = $2 \
             RETURNING id",
            &[&Uuid::now_v7(), &bob],
        )
        .await
        .expect("bob's session")
        .get(0);
    let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let body = base64_url(&claims.to_string());
    let valid = sign(&claims, &key);
    let (valid_head, _) = valid.rsplit_once('.').expect("three parts");
    let tampered_body = base64_url(&with(claims.clone(), "sub", json!(Uuid::now_v7())).to_string());
    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "garbage".into(), "TOKEN_INVALID"),
        ("alg none", format!("{header}.{body}."), "TOKEN_INVALID"),
        (
            "expired",
            sign(&with(claims.clone(), "exp", json!(now - 5)), &key),
            "TOKEN_EXPIRED",
        ),
        (
            "not yet valid",
            sign(&with(claims.clone(), "nbf", json!(now + 300)), &key),
            "TOKEN_INVALID",
        ),
        (
            "wrong audience",
            sign(&with(claims.clone(), "aud", json!("other")), &key),
            "TOKEN_INVALID",
        ),
        (
            "wrong issuer",
            sign(&with(claims.clone(), "iss", json!("other")), &key),
            "TOKEN_INVALID",
        ),
        (
            "wrong signature",
            sign(&claims, b"another key, at least 32 bytes long!!"),
            "TOKEN_INVALID",
        ),
        (
            "tampered payload",
            format!(
                "{}.{tampered_body}.{}",
                valid_head.split('.').next().unwrap_or(""),
                valid.rsplit('.').next().unwrap_or("")
            ),
            "TOKEN_INVALID",
        ),
        (
            "truncated",
            valid[..valid.len() - 10].to_owned(),
            "TOKEN_INVALID",
        ),
        ("oversized", "a".repeat(5000), "CREDENTIALS_MALFORMED"),
        (
            "unknown tokenKey",
            sign(&with(claims.clone(), "tkey", json!(Uuid::new_v4())), &key),
            "TOKEN_REVOKED",
        ),
        (
            "another organisation",
            sign(&with(claims.clone(), "org", json!(Uuid::now_v7())), &key),
            "TOKEN_REVOKED",
        ),
        (
            "no session",
            sign(&without(claims.clone(), "sid"), &key),
            "TOKEN_INVALID",
        ),
        (
            "unknown session",
            sign(&with(claims.clone(), "sid", json!(Uuid::now_v7())), &key),
            "TOKEN_REVOKED",
        ),
        (
            "another user's session",
            sign(&with(claims.clone(), "sid", json!(other_session)), &key),
            "TOKEN_REVOKED",
        ),
    ];
    for (case, token, reason) in cases {
        let result = users
            .list_users(authed(proto::ListUsersRequest::default(), &token))
            .await;
        let status = result.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        let info = tonic_types::StatusExt::get_details_error_info(&status);
        assert_eq!(info.map(|i| i.reason), Some(reason.to_owned()), "{case}");
    }
}

pub(crate) fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_malformed_credentials_are_unauthenticated() {
    let server = TestServer::start().await;
    let mut users = UserServiceClient::new(server.channel().await);
    let missing = users.list_users(proto::ListUsersRequest::default()).await;
    assert_status(missing, Code::Unauthenticated, Some("CREDENTIALS_MISSING"));
    let basic = users
        .list_users(with_header(
            proto::ListUsersRequest::default(),
            "authorization",
            "Basic abc",
        ))
        .await;
    assert_status(basic, Code::Unauthenticated, Some("CREDENTIALS_MALFORMED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_bintu_token_is_accepted_but_not_beside_a_bearer_token() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut auth = AuthServiceClient::new(channel);
    auth.who_am_i(with_header(
        proto::WhoAmIRequest {},
        "x-bintu-token",
        &token,
    ))
    .await
    .expect("x-bintu-token works");
    let mut both = authed(proto::WhoAmIRequest {}, &token);
    both.metadata_mut()
        .insert("x-bintu-token", token.parse().expect("value"));
    assert_status(
        auth.who_am_i(both).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_AMBIGUOUS"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_token_key_or_role_or_a_deleted_user_takes_effect_on_the_next_call() {
    // This test writes the database behind the service's back, which only
    // an uncached server sees at once (see docs/architecture.md, the cache and its protocol).
    let server = TestServer::start_with(&["--auth-cache", "false"]).await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let db = server.db.client().await;
    let mut users = UserServiceClient::new(channel.clone());
    let list = || proto::ListUsersRequest::default();

    // A new tokenKey: the old token fails at once, a new login works.
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    users
        .list_users(authed(list(), &token))
        .await
        .expect("before");
    db.execute(
        "UPDATE users SET token_key = $1 WHERE id = $2",
        &[&Uuid::new_v4(), &org.admin_id],
    )
    .await
    .expect("renew");
    assert_status(
        users.list_users(authed(list(), &token)).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );

    // The role is read from the database on every call, never from the token.
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    db.execute(
        "UPDATE users SET role = 'nanoReadOnly' WHERE id = $1",
        &[&org.admin_id],
    )
    .await
    .expect("demote");
    let denied = assert_status(
        users.list_users(authed(list(), &token)).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    let info = tonic_types::StatusExt::get_details_error_info(&denied).expect("error info");
    assert_eq!(
        info.metadata.get("permission").map(String::as_str),
        Some("users.read")
    );

    // A deleted user's token fails.
    db.execute("DELETE FROM users WHERE id = $1", &[&org.admin_id])
        .await
        .expect("delete");
    let mut auth = AuthServiceClient::new(channel);
    assert_status(
        auth.who_am_i(authed(proto::WhoAmIRequest {}, &token)).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}
