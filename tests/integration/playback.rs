//! Playback tokens: issued in secure organisations, self-contained, valid
//! until they expire whatever becomes of their issuer, revocable only when
//! issued so, signed with per-organisation keys that rotate.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Code;
use tonic::transport::Channel;
use usermgmt::auth::playback::{PlaybackClaims, generate_key, sign};
use usermgmt::domain::playback::SigningAlgorithm;
use usermgmt::proto::{
    self, Role, VerifyFailureReason as Reason, playback_scope::Scope as PbScope,
    playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target,
};
use uuid::Uuid;

use crate::support::*;

type Client = PlaybackTokenServiceClient<Channel>;

fn client(channel: &Channel) -> Client {
    PlaybackTokenServiceClient::new(channel.clone())
}

pub(crate) async fn make_secure(db: &TestDb, org: Uuid) {
    db.client()
        .await
        .execute(
            "UPDATE organisations SET secure_playback = true WHERE id = $1",
            &[&org],
        )
        .await
        .expect("make the organisation secure");
}

/// A secure organisation with its admin and a nanoUser, signed in.
async fn secure_org(server: &TestServer, name: &str) -> (Org, Session, Session, String) {
    let org = create_org(&server.db, name).await;
    make_secure(&server.db, org.id).await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let email = format!("operator@{}.example.com", name.to_lowercase());
    let user = admin
        .create_user(&email, Role::NanoUser)
        .await
        .expect("create nanoUser");
    let operator = Session::login(&channel, &email, PASSWORD).await;
    (org, admin, operator, user.id)
}

fn streams(names: &[&str]) -> Option<proto::PlaybackScope> {
    Some(proto::PlaybackScope {
        scope: Some(PbScope::Streams(proto::StreamList {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        })),
    })
}

fn group(id: &str) -> Option<proto::PlaybackScope> {
    Some(proto::PlaybackScope {
        scope: Some(PbScope::GroupId(id.into())),
    })
}

fn organisation_wide(on: bool) -> Option<proto::PlaybackScope> {
    Some(proto::PlaybackScope {
        scope: Some(PbScope::OrganisationWide(on)),
    })
}

fn in_secs(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + seconds,
        nanos: 0,
    })
}

pub(crate) fn for_streams(names: &[&str]) -> proto::IssuePlaybackTokenRequest {
    proto::IssuePlaybackTokenRequest {
        scope: streams(names),
        ..Default::default()
    }
}

pub(crate) async fn issue(
    session: &Session,
    request: proto::IssuePlaybackTokenRequest,
) -> Result<proto::IssuePlaybackTokenResponse, tonic::Status> {
    Ok(client(&session.channel)
        .issue_playback_token(session.req(request))
        .await?
        .into_inner())
}

async fn verify_for(
    channel: &Channel,
    token: &str,
    stream: &str,
    group_id: &str,
) -> proto::VerifyPlaybackTokenResponse {
    // No credentials: edge servers call it with the token alone.
    client(channel)
        .verify_playback_token(proto::VerifyPlaybackTokenRequest {
            token: token.into(),
            stream: stream.into(),
            group_id: group_id.into(),
        })
        .await
        .expect("verify")
        .into_inner()
}

async fn verify(
    channel: &Channel,
    token: &str,
    stream: &str,
) -> proto::VerifyPlaybackTokenResponse {
    verify_for(channel, token, stream, "").await
}

#[track_caller]
fn assert_reason(response: &proto::VerifyPlaybackTokenResponse, reason: Reason) {
    assert_eq!(
        (response.valid, response.reason),
        (reason == Reason::Unspecified, reason as i32),
        "{response:?}"
    );
}

async fn revoke(
    session: &Session,
    target: Target,
) -> Result<proto::RevokePlaybackTokenResponse, tonic::Status> {
    Ok(client(&session.channel)
        .revoke_playback_token(session.req(proto::RevokePlaybackTokenRequest {
            target: Some(target),
        }))
        .await?
        .into_inner())
}

async fn rotate(
    session: &Session,
    algorithm: proto::SigningAlgorithm,
) -> Result<proto::RotateSigningKeyResponse, tonic::Status> {
    Ok(client(&session.channel)
        .rotate_signing_key(session.req(proto::RotateSigningKeyRequest {
            algorithm: algorithm as i32,
            ..Default::default()
        }))
        .await?
        .into_inner())
}

pub(crate) async fn signing_keys(channel: &Channel) -> Vec<proto::SigningKey> {
    client(channel)
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("list signing keys")
        .into_inner()
        .keys
}

fn claims_of(token: &str) -> PlaybackClaims {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

fn header_of(token: &str) -> serde_json::Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playback_token_outlives_its_issuers_demotion_renewal_suspension_and_deletion() {
    let server = TestServer::start().await;
    let (_, admin, operator, operator_id) = secure_org(&server, "Acme").await;
    let channel = server.channel().await;
    let issued = issue(
        &operator,
        proto::IssuePlaybackTokenRequest {
            exp: in_secs(4),
            ..for_streams(&["live"])
        },
    )
    .await
    .expect("a nanoUser issues");
    assert_reason(
        &verify(&channel, &issued.token, "live").await,
        Reason::Unspecified,
    );

    admin
        .set_role(&operator_id, Role::NanoReadOnly, "")
        .await
        .expect("demote");
    assert_reason(
        &verify(&channel, &issued.token, "live").await,
        Reason::Unspecified,
    );

    let renew = admin.ask_renew(&operator_id).await.expect("ask renew");
    admin
        .confirm_renew(&operator_id, &renew.confirmation_token)
        .await
        .expect("renew");
    assert!(operator.who_am_i().await.is_err(), "access tokens die");
    assert_reason(
        &verify(&channel, &issued.token, "live").await,
        Reason::Unspecified,
    );

    let suspend = TwoStep::SuspendUser(operator_id.clone());
    let confirmation = admin.ask(&suspend).await.expect("ask suspend");
    admin
        .confirm(&suspend, &confirmation.confirmation_token)
        .await
        .expect("suspend");
    assert_reason(
        &verify(&channel, &issued.token, "live").await,
        Reason::Unspecified,
    );

    let delete = admin.ask_delete(&operator_id).await.expect("ask delete");
    admin
        .confirm_delete(&operator_id, &delete.confirmation_token)
        .await
        .expect("delete");
    let still = verify(&channel, &issued.token, "live").await;
    assert_reason(&still, Reason::Unspecified);
    let claims = still.claims.expect("claims");
    assert_eq!(claims.issued_by, format!("user:{operator_id}"));
    assert_eq!(claims.token_id, issued.token_id);

    // Valid until the server's clock passes `exp`: polled, within a bound
    // from the token's own expiry.
    let expires = issued.expires_at.expect("expires_at").seconds;
    let deadline = std::time::Instant::now()
        + Duration::from_secs((expires - chrono::Utc::now().timestamp()).clamp(0, 60) as u64)
        + Duration::from_secs(10);
    let expired = loop {
        let answer = verify(&channel, &issued.token, "live").await;
        if answer.reason != Reason::Unspecified as i32 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still valid after its exp"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_reason(&expired, Reason::Expired);
    assert!(
        expired.claims.is_some(),
        "an expired token's claims still decode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_decides_which_streams_a_token_plays() {
    let server = TestServer::start().await;
    let (org, _, operator, operator_id) = secure_org(&server, "Acme").await;
    let channel = server.channel().await;

    let request = proto::IssuePlaybackTokenRequest {
        force_disconnect: true,
        restrictions: Some(proto::PlaybackRestrictions {
            domain: "player.example.com".into(),
            ip: "203.0.113.0/24".into(),
            tag: "premium".into(),
            user: "viewer-7".into(),
        }),
        ..for_streams(&["a", "b"])
    };
    let listed = issue(&operator, request).await.expect("issue").token;
    let valid = verify(&channel, &listed, "b").await;
    assert_reason(&valid, Reason::Unspecified);
    let claims = valid.claims.expect("claims");
    assert_eq!(claims.organisation_id, org.id.to_string());
    assert_eq!(
        claims.restrictions.expect("restrictions").ip,
        "203.0.113.0/24"
    );
    assert!(claims.force_disconnect && !claims.revocable);
    assert_eq!(claims.scope, streams(&["a", "b"]));
    assert_eq!(claims.issued_by, format!("user:{operator_id}"));
    assert_reason(&verify(&channel, &listed, "c").await, Reason::WrongStream);
    assert_reason(&verify(&channel, &listed, "").await, Reason::WrongStream);

    let grouped = issue(
        &operator,
        proto::IssuePlaybackTokenRequest {
            scope: group("sports"),
            ..Default::default()
        },
    )
    .await
    .expect("issue")
    .token;
    assert_reason(
        &verify_for(&channel, &grouped, "match", "sports").await,
        Reason::Unspecified,
    );
    assert_reason(
        &verify_for(&channel, &grouped, "", "").await,
        Reason::Unspecified,
    );
    assert_reason(
        &verify_for(&channel, &grouped, "match", "news").await,
        Reason::WrongStream,
    );
    assert_reason(
        &verify_for(&channel, &grouped, "match", "").await,
        Reason::WrongStream,
    );

    let everything = issue(
        &operator,
        proto::IssuePlaybackTokenRequest {
            scope: organisation_wide(true),
            ..Default::default()
        },
    )
    .await
    .expect("issue")
    .token;
    assert_reason(
        &verify(&channel, &everything, "any").await,
        Reason::Unspecified,
    );

    let later = issue(
        &operator,
        proto::IssuePlaybackTokenRequest {
            nbf: in_secs(600),
            ..for_streams(&["a"])
        },
    )
    .await
    .expect("issue")
    .token;
    assert_reason(&verify(&channel, &later, "a").await, Reason::NotYetValid);

    for scope in [None, organisation_wide(false), streams(&[]), group("")] {
        let request = proto::IssuePlaybackTokenRequest {
            scope,
            ..Default::default()
        };
        assert_status(issue(&operator, request).await, Code::InvalidArgument, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_are_limited_and_only_secure_organisations_issue() {
    let server = TestServer::start().await;
    let (_, admin, operator, _) = secure_org(&server, "Acme").await;
    let day = 24 * 3600;
    let request = |exp: i64, revocable: bool| proto::IssuePlaybackTokenRequest {
        exp: in_secs(exp),
        revocable,
        ..for_streams(&["live"])
    };
    let status = assert_status(
        issue(&operator, request(366 * day, false)).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["exp"]);
    assert_status(
        issue(&operator, request(25 * 3600, true)).await,
        Code::InvalidArgument,
        None,
    );
    assert_status(
        issue(&operator, request(-5, false)).await,
        Code::InvalidArgument,
        None,
    );
    issue(&operator, request(365 * day - 60, false))
        .await
        .expect("365 days");
    // An nbf at the very end of time, without exp: refused, not a panic (the
    // server used to add the default lifetime to it and overflow).
    for seconds in [
        8_210_266_876_799,
        i64::MAX / 2,
        366 * day + chrono::Utc::now().timestamp(),
    ] {
        let late = proto::IssuePlaybackTokenRequest {
            nbf: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..for_streams(&["live"])
        };
        let status = assert_status(issue(&operator, late).await, Code::InvalidArgument, None);
        assert_eq!(violated_fields(&status), ["nbf"], "nbf = {seconds}");
    }
    issue(&operator, request(day, false))
        .await
        .expect("the server still serves after them");
    issue(&operator, request(day - 60, true))
        .await
        .expect("24 h revocable");
    let bad_ip = proto::IssuePlaybackTokenRequest {
        restrictions: Some(proto::PlaybackRestrictions {
            ip: "not an ip".into(),
            ..Default::default()
        }),
        ..for_streams(&["live"])
    };
    let status = assert_status(issue(&operator, bad_ip).await, Code::InvalidArgument, None);
    assert_eq!(violated_fields(&status), ["restrictions.ip"]);

    let viewer_email = "viewer@acme.example.com";
    admin
        .create_user(viewer_email, Role::NanoReadOnly)
        .await
        .expect("create viewer");
    let viewer = Session::login(&admin.channel, viewer_email, PASSWORD).await;
    assert_status(
        issue(&viewer, for_streams(&["live"])).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );

    let plain = create_org(&server.db, "Plain").await;
    let plain_admin = Session::login(&admin.channel, &plain.admin_email, ADMIN_PASSWORD).await;
    assert_status(
        issue(&plain_admin, for_streams(&["live"])).await,
        Code::FailedPrecondition,
        Some("NOT_SECURE_ORGANISATION"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_scoped_audited_and_survive_a_restart() {
    let db = TestDb::new().await;
    let first = Replica::start(&db.url).await;
    let org = create_org(&db, "Acme").await;
    make_secure(&db, org.id).await;
    let other = create_org(&db, "Other").await;
    make_secure(&db, other.id).await;
    let channel = channel(first.addr).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let outsider = Session::login(&channel, &other.admin_email, ADMIN_PASSWORD).await;

    let revocable = |exp| proto::IssuePlaybackTokenRequest {
        revocable: true,
        exp: in_secs(exp),
        ..for_streams(&["live"])
    };
    let by_id = issue(&admin, revocable(3600)).await.expect("issue");
    let by_token = issue(&admin, revocable(3600)).await.expect("issue");
    let permanent = issue(&admin, for_streams(&["live"])).await.expect("issue");
    assert_reason(
        &verify(&channel, &by_id.token, "live").await,
        Reason::Unspecified,
    );

    assert_status(
        revoke(&outsider, Target::TokenId(by_id.token_id.clone())).await,
        Code::NotFound,
        None,
    );
    assert_status(
        revoke(&admin, Target::TokenId(permanent.token_id.clone())).await,
        Code::FailedPrecondition,
        Some("NOT_REVOCABLE"),
    );
    assert_status(
        revoke(&admin, Target::TokenId(Uuid::new_v4().to_string())).await,
        Code::NotFound,
        None,
    );
    let revoked = revoke(&admin, Target::TokenId(by_id.token_id.clone()))
        .await
        .expect("revoke by id");
    assert_eq!(revoked.token_id, by_id.token_id);
    let again = revoke(&admin, Target::TokenId(by_id.token_id.clone()))
        .await
        .expect("revoking twice is harmless");
    assert_eq!(again.revoked_at, revoked.revoked_at);
    revoke(&admin, Target::Token(by_token.token.clone()))
        .await
        .expect("revoke by token");
    assert_reason(
        &verify(&channel, &by_id.token, "live").await,
        Reason::Revoked,
    );
    assert_reason(
        &verify(&channel, &by_token.token, "live").await,
        Reason::Revoked,
    );

    let issued_events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "playback_token.issue".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(issued_events.len(), 3);
    let revoked_events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "playback_token.revoke".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        revoked_events.len(),
        2,
        "a second revocation is not an event"
    );
    for event in issued_events.iter().chain(&revoked_events) {
        let text = format!("{event:?}");
        assert!(
            !text.contains(&by_id.token)
                && !text.contains(&by_token.token)
                && !text.contains(&permanent.token)
        );
    }
    assert!(
        issued_events
            .iter()
            .any(|e| e.target_id == by_id.token_id && e.after.contains("streams: live"))
    );

    drop(first);
    let second = Replica::start(&db.url).await;
    let channel = crate::support::channel(second.addr).await;
    assert_reason(
        &verify(&channel, &by_id.token, "live").await,
        Reason::Revoked,
    );
    assert_reason(
        &verify(&channel, &permanent.token, "live").await,
        Reason::Unspecified,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_a_new_key_and_old_tokens_still_verify() {
    let server = TestServer::start().await;
    let (_, admin, operator, _) = secure_org(&server, "Acme").await;
    let (_, other_admin, _, _) = secure_org(&server, "Other").await;
    let channel = server.channel().await;

    let old = issue(&operator, for_streams(&["live"]))
        .await
        .expect("issue");
    let other_before = issue(&other_admin, for_streams(&["live"]))
        .await
        .expect("issue");
    assert_eq!(header_of(&old.token)["kid"], old.kid.as_str());
    assert_eq!(header_of(&old.token)["alg"], "EdDSA");

    assert_status(
        rotate(&operator, proto::SigningAlgorithm::Unspecified).await,
        Code::PermissionDenied,
        None,
    );
    let rotated = rotate(&admin, proto::SigningAlgorithm::Unspecified)
        .await
        .expect("rotate");
    let new_key = rotated.key.expect("key");
    assert_eq!(rotated.retired_kid, old.kid);
    assert_ne!(new_key.kid, old.kid);
    assert_eq!(new_key.alg, "EdDSA");

    let new = issue(&operator, for_streams(&["live"]))
        .await
        .expect("issue");
    assert_eq!(new.kid, new_key.kid);
    assert_eq!(header_of(&new.token)["kid"], new_key.kid.as_str());
    assert_reason(
        &verify(&channel, &old.token, "live").await,
        Reason::Unspecified,
    );
    assert_reason(
        &verify(&channel, &new.token, "live").await,
        Reason::Unspecified,
    );

    // The other organisation still signs with its own key.
    let other_after = issue(&other_admin, for_streams(&["live"]))
        .await
        .expect("issue");
    assert_eq!(other_after.kid, other_before.kid);

    let keys = signing_keys(&channel).await;
    let retired = keys
        .iter()
        .find(|k| k.kid == old.kid)
        .expect("old key still published");
    assert!(retired.retired_at.is_some());
    assert_eq!(
        retired.verify_until.as_ref().map(|t| t.seconds),
        old.expires_at.as_ref().map(|t| t.seconds)
    );
    assert_eq!(keys.len(), 3);

    // An edge server verifies on its own with the published key.
    let published = keys.iter().find(|k| k.kid == new.kid).expect("new key");
    assert_eq!(
        (
            published.kty.as_str(),
            published.crv.as_str(),
            published.r#use.as_str()
        ),
        ("OKP", "Ed25519", "sig")
    );
    let key = jsonwebtoken::DecodingKey::from_ed_components(&published.x).expect("jwk");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(&new.token, &key, &validation)
        .expect("verifies offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_may_rotate_to_rs256() {
    let server = TestServer::start().await;
    let (_, admin, operator, _) = secure_org(&server, "Acme").await;
    let channel = server.channel().await;
    let eddsa = issue(&operator, for_streams(&["live"]))
        .await
        .expect("issue");

    let rotated = rotate(&admin, proto::SigningAlgorithm::Rs256)
        .await
        .expect("rotate");
    let key = rotated.key.expect("key");
    assert_eq!((key.kty.as_str(), key.alg.as_str()), ("RSA", "RS256"));
    let rsa = issue(&operator, for_streams(&["live"]))
        .await
        .expect("issue");
    assert_eq!(header_of(&rsa.token)["alg"], "RS256");
    assert_reason(
        &verify(&channel, &rsa.token, "live").await,
        Reason::Unspecified,
    );
    assert_reason(
        &verify(&channel, &eddsa.token, "live").await,
        Reason::Unspecified,
    );

    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&key.n, &key.e).expect("jwk");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(&rsa.token, &decoding, &validation)
        .expect("verifies offline");

    // Unspecified keeps the current algorithm.
    let again = rotate(&admin, proto::SigningAlgorithm::Unspecified)
        .await
        .expect("rotate");
    assert_eq!(again.key.expect("key").alg, "RS256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_confused_tokens_are_rejected() {
    let server = TestServer::start().await;
    let (_, _, operator, _) = secure_org(&server, "Acme").await;
    let channel = server.channel().await;
    let genuine = issue(&operator, for_streams(&["live"]))
        .await
        .expect("issue");
    let claims = claims_of(&genuine.token);
    let payload = genuine.token.split('.').nth(1).expect("payload").to_owned();

    // Another Ed25519 key, claiming the organisation's kid.
    let stranger = generate_key(SigningAlgorithm::EdDsa).expect("key");
    let forged = sign(
        &claims,
        &genuine.kid,
        SigningAlgorithm::EdDsa,
        &stranger.private_der,
    )
    .expect("sign");
    let response = verify(&channel, &forged, "live").await;
    assert_reason(&response, Reason::BadSignature);
    assert!(response.claims.is_none());

    // alg: none, no signature.
    let none = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        genuine.kid
    ));
    assert_reason(
        &verify(&channel, &format!("{none}.{payload}."), "live").await,
        Reason::BadSignature,
    );

    // HS256 with the published public key as the HMAC secret.
    let published = signing_keys(&channel).await;
    let public = published
        .iter()
        .find(|k| k.kid == genuine.kid)
        .expect("key");
    let secret = URL_SAFE_NO_PAD.decode(&public.x).expect("x");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(genuine.kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret).expect("hmac key"),
    )
    .expect("encode");
    assert_reason(
        &verify(&channel, &confused, "live").await,
        Reason::BadSignature,
    );

    // A tampered payload under a genuine signature.
    let mut widened = claims.clone();
    widened.exp += 3600;
    let widened = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&widened).expect("json"));
    let mut parts: Vec<&str> = genuine.token.split('.').collect();
    parts[1] = &widened;
    assert_reason(
        &verify(&channel, &parts.join("."), "live").await,
        Reason::BadSignature,
    );

    let unknown = sign(
        &claims,
        "pbk_unknown",
        SigningAlgorithm::EdDsa,
        &stranger.private_der,
    )
    .expect("sign");
    assert_reason(
        &verify(&channel, &unknown, "live").await,
        Reason::UnknownKid,
    );
    assert_reason(
        &verify(&channel, "not a token", "live").await,
        Reason::Malformed,
    );
    let huge = format!("{}.{}.x", "a".repeat(9000), payload);
    assert_reason(&verify(&channel, &huge, "live").await, Reason::Malformed);
}
