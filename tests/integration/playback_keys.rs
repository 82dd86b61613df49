//! Playback signing keys after a rotation: a retired key verifies only what
//! it signed and only until its verify_until, a revoked key nothing at all
//! (on every replica at once), and an organisation bounds the lifetime of
//! its tokens that are not revocable.

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use usermgmt::auth::playback::{PlaybackClaims, sign};
use usermgmt::domain::playback::SigningAlgorithm;
use usermgmt::proto::{
    self, Role, VerifyFailureReason as Reason,
    organisation_service_client::OrganisationServiceClient,
    playback_token_service_client::PlaybackTokenServiceClient,
};
use uuid::Uuid;

use crate::playback::{for_streams, issue, make_secure, signing_keys};
use crate::support::lock::OrgLock;
use crate::support::*;

const DAY: i64 = 24 * 3600;

fn playback(channel: &Channel) -> PlaybackTokenServiceClient<Channel> {
    PlaybackTokenServiceClient::new(channel.clone())
}

async fn verify(channel: &Channel, token: &str) -> proto::VerifyPlaybackTokenResponse {
    playback(channel)
        .verify_playback_token(proto::VerifyPlaybackTokenRequest {
            token: token.into(),
            stream: "live".into(),
            group_id: String::new(),
        })
        .await
        .expect("verify")
        .into_inner()
}

#[track_caller]
fn assert_reason(response: &proto::VerifyPlaybackTokenResponse, reason: Reason) {
    assert_eq!(
        (response.valid, response.reason),
        (reason == Reason::Unspecified, reason as i32),
        "{response:?}"
    );
}

/// Verifies `token` on `channel` until it fails with `reason` (a change made
/// behind the service's back reaches its cache by notification).
async fn until_reason(channel: &Channel, token: &str, reason: Reason) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = verify(channel, token).await;
        if response.reason == reason as i32 {
            assert!(!response.valid && response.claims.is_none(), "{response:?}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {response:?}, expected {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rotate(
    session: &Session,
    revoke_previous: bool,
) -> Result<proto::RotateSigningKeyResponse, tonic::Status> {
    Ok(playback(&session.channel)
        .rotate_signing_key(session.req(proto::RotateSigningKeyRequest {
            revoke_previous,
            ..Default::default()
        }))
        .await?
        .into_inner())
}

fn non_revocable(exp_in: i64) -> proto::IssuePlaybackTokenRequest {
    proto::IssuePlaybackTokenRequest {
        exp: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + exp_in,
            nanos: 0,
        }),
        ..for_streams(&["live"])
    }
}

fn claims_of(token: &str) -> PlaybackClaims {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&json).expect("claims")
}

/// The private half of `kid` as the database holds it: what a leak gives.
async fn leaked_private_key(db: &TestDb, kid: &str) -> Vec<u8> {
    db.client()
        .await
        .query_one(
            "SELECT private_key FROM playback_signing_keys WHERE kid = $1",
            &[&kid],
        )
        .await
        .expect("read the private key")
        .get(0)
}

/// `genuine`'s claims under a new id, living until `exp_in` from now, signed
/// with the private key of `kid`.
fn forge(genuine: &str, kid: &str, private_der: &[u8], exp_in: i64) -> String {
    let mut claims = claims_of(genuine);
    claims.jti = Uuid::new_v4();
    claims.exp = chrono::Utc::now().timestamp() + exp_in;
    sign(&claims, kid, SigningAlgorithm::EdDsa, private_der).expect("sign")
}

/// A secure organisation and its admin, signed in on `channel`.
async fn secure_admin(db: &TestDb, channel: &Channel, name: &str) -> (Org, Session) {
    let org = create_org(db, name).await;
    make_secure(db, org.id).await;
    let admin = Session::login(channel, &org.admin_email, ADMIN_PASSWORD).await;
    (org, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_verifies_only_its_own_tokens_and_only_until_verify_until() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (_, admin) = secure_admin(&server.db, &channel, "Acme").await;
    let old = issue(&admin, non_revocable(3600)).await.expect("issue");
    assert_reason(&verify(&channel, &old.token).await, Reason::Unspecified);
    let rotated = rotate(&admin, false).await.expect("rotate");
    assert_eq!(rotated.retired_kid, old.kid);

    // The retired key still verifies what it signed (and is cached now).
    for _ in 0..3 {
        assert_reason(&verify(&channel, &old.token).await, Reason::Unspecified);
    }
    // A token made with its private half after the rotation, living longer
    // than anything the key signed: refused, claims not shown.
    let private = leaked_private_key(&server.db, &old.kid).await;
    let forged = forge(&old.token, &old.kid, &private, 300 * DAY);
    let response = verify(&channel, &forged).await;
    assert_reason(&response, Reason::BadSignature);
    assert!(response.claims.is_none());

    // Its verify_until passes (moved to the past behind the service's back):
    // the cached key notices, and the key verifies nothing any more.
    server
        .db
        .client()
        .await
        .execute(
            "UPDATE playback_signing_keys SET verify_until = now() - interval '1 second' \
             WHERE kid = $1",
            &[&old.kid],
        )
        .await
        .expect("move verify_until");
    until_reason(&channel, &old.token, Reason::UnknownKid).await;
    assert_reason(&verify(&channel, &forged).await, Reason::UnknownKid);
    assert!(
        signing_keys(&channel)
            .await
            .iter()
            .all(|k| k.kid != old.kid)
    );

    // The current key is untouched.
    let new = issue(&admin, non_revocable(3600)).await.expect("issue");
    assert_eq!(new.kid, rotated.key.expect("key").kid);
    assert_reason(&verify(&channel, &new.token).await, Reason::Unspecified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_previous_key_fails_its_tokens_at_once_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        db,
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    make_secure(db, org.id).await;
    let admin = replicas.admin().await;
    let (_, other_admin) = secure_admin(db, on_first, "Other").await;

    // An older key, retired, still verifying what it signed.
    let oldest = issue(&admin, non_revocable(30 * DAY)).await.expect("issue");
    rotate(&admin, false).await.expect("rotate");
    let old = issue(&admin, non_revocable(30 * DAY)).await.expect("issue");
    assert_ne!(old.kid, oldest.kid);
    let revocable = issue(
        &admin,
        proto::IssuePlaybackTokenRequest {
            revocable: true,
            ..for_streams(&["live"])
        },
    )
    .await
    .expect("issue revocable");
    let others = issue(&other_admin, for_streams(&["live"]))
        .await
        .expect("issue in another organisation");
    let private = leaked_private_key(db, &old.kid).await;
    // Cached on the second replica.
    for _ in 0..3 {
        for token in [&oldest.token, &old.token] {
            assert_reason(&verify(on_second, token).await, Reason::Unspecified);
        }
    }

    let operator_email = "operator@acme.example.com";
    admin
        .create_user(operator_email, Role::NanoUser)
        .await
        .expect("create nanoUser");
    let operator = Session::login(on_first, operator_email, PASSWORD).await;
    assert_status(
        rotate(&operator, true).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );

    let rotated = rotate(&admin, true).await.expect("rotate and revoke");
    assert_eq!(rotated.retired_kid, old.kid);
    // The very next call on the other replica.
    for token in [&old.token, &revocable.token, &oldest.token] {
        let response = verify(on_second, token).await;
        assert_reason(&response, Reason::KeyRevoked);
        assert!(response.claims.is_none());
    }
    let forged = forge(&old.token, &old.kid, &private, DAY);
    assert_reason(&verify(on_second, &forged).await, Reason::KeyRevoked);
    assert_reason(&verify(on_first, &old.token).await, Reason::KeyRevoked);
    assert!(
        signing_keys(on_second)
            .await
            .iter()
            .all(|k| k.kid != old.kid && k.kid != oldest.kid),
        "a revoked key is not published"
    );

    // The new key signs and verifies; another organisation is untouched.
    let new = issue(&admin, for_streams(&["live"])).await.expect("issue");
    assert_eq!(new.kid, rotated.key.expect("key").kid);
    assert_reason(&verify(on_second, &new.token).await, Reason::Unspecified);
    assert_reason(&verify(on_second, &others.token).await, Reason::Unspecified);

    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "playback_key.revoke".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    let mut revoked: Vec<&str> = events.iter().map(|e| e.target_id.as_str()).collect();
    revoked.sort_unstable();
    let mut expected = [old.kid.as_str(), oldest.kid.as_str()];
    expected.sort_unstable();
    assert_eq!(revoked, expected, "{events:?}");
    let admin_actor = format!("user:{}", org.admin_id);
    assert!(events.iter().all(|e| e.actor == admin_actor), "{events:?}");
}

async fn set_ceiling(
    session: &Session,
    ceiling: Option<prost_types::Duration>,
) -> Result<proto::Organisation, tonic::Status> {
    let response = OrganisationServiceClient::new(session.channel.clone())
        .update_organisation(session.req(proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                max_non_revocable_lifetime: ceiling,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["max_non_revocable_lifetime".into()],
            }),
        }))
        .await?;
    Ok(response.into_inner().organisation.expect("organisation"))
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_bounds_the_lifetime_of_tokens_that_are_not_revocable() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (_, admin) = secure_admin(&server.db, &channel, "Acme").await;
    admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create nanoUser");
    let operator = Session::login(&channel, "operator@acme.example.com", PASSWORD).await;
    let org_of = async |session: &Session| {
        OrganisationServiceClient::new(session.channel.clone())
            .get_organisation(session.req(proto::GetOrganisationRequest {}))
            .await
            .expect("get organisation")
            .into_inner()
            .organisation
            .expect("organisation")
    };
    assert_eq!(
        org_of(&admin).await.max_non_revocable_lifetime,
        seconds(365 * DAY),
        "the default is the service's limit"
    );
    issue(&operator, non_revocable(300 * DAY))
        .await
        .expect("300 days under the default");

    // Only who may update the organisation sets it.
    assert_status(
        set_ceiling(&operator, seconds(DAY)).await,
        Code::PermissionDenied,
        Some("PERMISSION_MISSING"),
    );
    let updated = set_ceiling(&admin, seconds(DAY)).await.expect("set");
    assert_eq!(updated.max_non_revocable_lifetime, seconds(DAY));
    assert_eq!(
        org_of(&admin).await.max_non_revocable_lifetime,
        seconds(DAY)
    );

    let status = assert_status(
        issue(&operator, non_revocable(DAY + 120)).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["exp"]);
    assert!(status.message().contains("86400"), "{status:?}");
    assert_status(
        issue(&operator, non_revocable(300 * DAY)).await,
        Code::InvalidArgument,
        None,
    );
    issue(&operator, non_revocable(DAY - 60))
        .await
        .expect("within the ceiling");
    issue(
        &operator,
        proto::IssuePlaybackTokenRequest {
            revocable: true,
            ..non_revocable(DAY - 60)
        },
    )
    .await
    .expect("revocable tokens have their own limit");

    // Extremes are refused, and change nothing.
    for (secs, nanos) in [
        (0, 0),
        (-1, 0),
        (i64::MIN, 0),
        (365 * DAY + 1, 0),
        (i64::MAX, 0),
        (3600, 500),
        (3600, -1),
    ] {
        let status = assert_status(
            set_ceiling(
                &admin,
                Some(prost_types::Duration {
                    seconds: secs,
                    nanos,
                }),
            )
            .await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(
            violated_fields(&status),
            ["organisation.max_non_revocable_lifetime"],
            "{secs}s {nanos}ns"
        );
    }
    assert_eq!(
        org_of(&admin).await.max_non_revocable_lifetime,
        seconds(DAY)
    );

    // Named in the mask but unset: back to the default.
    let reset = set_ceiling(&admin, None).await.expect("reset");
    assert_eq!(reset.max_non_revocable_lifetime, seconds(365 * DAY));
    issue(&operator, non_revocable(300 * DAY))
        .await
        .expect("300 days again");

    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "organisation.update".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.after.contains("max_non_revocable_lifetime=86400s")),
        "{events:?}"
    );
}

/// An issue queued behind a lowering of the ceiling is held to the new
/// ceiling: it is checked under the organisation's lock, not against a copy
/// read before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_queued_behind_a_lowered_ceiling_is_held_to_it() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (org, admin) = secure_admin(&server.db, &channel, "Acme").await;
    issue(&admin, non_revocable(DAY)).await.expect("warm up");

    let lock = OrgLock::take(&server.db, org.id).await;
    let queued = admin.clone();
    let mut call =
        tokio::spawn(async move { issue(&queued, non_revocable(300 * DAY)).await.map(|_| ()) });
    lock.until_queued(&mut call, "IssuePlaybackToken").await;
    lock.tx()
        .execute(
            "UPDATE organisations SET max_non_revocable_lifetime_seconds = 86400 WHERE id = $1",
            &[&org.id],
        )
        .await
        .expect("lower the ceiling");
    lock.commit().await;
    let status = assert_status(call.await.expect("join"), Code::InvalidArgument, None);
    assert_eq!(violated_fields(&status), ["exp"]);
}
