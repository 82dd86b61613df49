//! The change feed's store side, checked in the database: every write RPC of
//! the contract and every operator command that changes data advances its
//! organisation's sequence by exactly one, its audit events carrying each
//! target's state after the change (or a tombstone) and the user it belongs
//! to; ListAuditEvents pages the same events by sequence; the retention
//! window drops old states and advances `pruned_through`; no stored state
//! holds a secret.

use std::collections::BTreeSet;

use serde_json::Value;
use tonic::Code;
use usermgmt::proto::{
    self, Role, api_token_service_client::ApiTokenServiceClient,
    auth_service_client::AuthServiceClient, organisation_service_client::OrganisationServiceClient,
    playback_token_service_client::PlaybackTokenServiceClient,
    session_service_client::SessionServiceClient,
};
use uuid::Uuid;

use crate::support::*;

/// One target of a change, as its audit event holds it.
#[derive(Debug, Clone)]
struct Target {
    action: String,
    target_type: String,
    target_id: String,
    actor: String,
    state: Option<Value>,
    owner: Option<Uuid>,
    expires: bool,
}

impl Target {
    /// (action, type, id, whether it has a state): what a change is checked
    /// against.
    fn shape(&self) -> (String, String, String, bool) {
        (
            self.action.clone(),
            self.target_type.clone(),
            self.target_id.clone(),
            self.state.is_some(),
        )
    }

    /// A field of the state.
    fn field(&self, name: &str) -> &Value {
        self.state
            .as_ref()
            .and_then(|state| state.get("state"))
            .and_then(|state| state.get(name))
            .unwrap_or(&Value::Null)
    }
}

/// What a change is expected to hold, in order: (action, type, id, state?).
fn expect(targets: &[(&str, &str, &str, bool)]) -> Vec<(String, String, String, bool)> {
    targets
        .iter()
        .map(|(action, kind, id, state)| ((*action).into(), (*kind).into(), (*id).into(), *state))
        .collect()
}

/// The feed of one organisation, read straight from the database.
struct Feed {
    client: tokio_postgres::Client,
    organisation_id: Uuid,
}

impl Feed {
    async fn of(db: &TestDb, organisation_id: Uuid) -> Self {
        Feed {
            client: db.client().await,
            organisation_id,
        }
    }

    /// The organisation's last sequence (0: none yet).
    async fn head(&self) -> i64 {
        self.client
            .query_one(
                "SELECT coalesce((SELECT head FROM change_heads WHERE organisation_id = $1), 0)",
                &[&self.organisation_id],
            )
            .await
            .expect("head")
            .get(0)
    }

    /// The targets of the change `sequence`, in the order they were recorded.
    async fn targets(&self, sequence: i64) -> Vec<Target> {
        self.client
            .query(
                "SELECT action, target_type, target_id, actor, state::text, owner_id, \
                        expires_at IS NOT NULL \
                 FROM audit_events WHERE organisation_id = $1 AND sequence = $2 ORDER BY id",
                &[&self.organisation_id, &sequence],
            )
            .await
            .expect("targets")
            .into_iter()
            .map(|row| Target {
                action: row.get(0),
                target_type: row.get(1),
                target_id: row.get(2),
                actor: row.get(3),
                state: row
                    .get::<_, Option<String>>(4)
                    .map(|text| serde_json::from_str(&text).expect("a state is JSON")),
                owner: row.get(5),
                expires: row.get(6),
            })
            .collect()
    }

    /// The one change committed since the head was `before`: the head moved
    /// by exactly one, and the change has targets.
    async fn next(&self, before: i64, what: &str) -> Vec<Target> {
        let head = self.head().await;
        assert_eq!(head, before + 1, "{what}: one change, one sequence number");
        let targets = self.targets(head).await;
        assert!(!targets.is_empty(), "{what}: a change without targets");
        let later: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM audit_events WHERE organisation_id = $1 AND sequence > $2",
                &[&self.organisation_id, &head],
            )
            .await
            .expect("later")
            .get(0);
        assert_eq!(later, 0, "{what}: events after the head");
        targets
    }

    /// Asserts that nothing was committed since the head was `before`.
    async fn unchanged(&self, before: i64, what: &str) {
        assert_eq!(self.head().await, before, "{what} took a sequence number");
    }
}

/// Checks a change's targets against what it must hold.
#[track_caller]
fn assert_targets(targets: &[Target], expected: &[(&str, &str, &str, bool)], what: &str) {
    let shapes: Vec<_> = targets.iter().map(Target::shape).collect();
    assert_eq!(shapes, expect(expected), "{what}: {targets:#?}");
}

/// The RPCs that change nothing: the reads of the commit re-check's list,
/// which also holds the one write that records no change
/// (RequestPasswordReset: the feed must not tell whether an account exists;
/// checked below to take no sequence number).
use crate::commit_recheck::READS as NOT_CHANGES;

fn users(
    session: &Session,
) -> proto::user_service_client::UserServiceClient<tonic::transport::Channel> {
    session.users()
}

async fn refresh(channel: &tonic::transport::Channel, token: &str) -> proto::RefreshResponse {
    AuthServiceClient::new(channel.clone())
        .refresh(proto::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .expect("refresh")
        .into_inner()
}

fn playback(
    channel: &tonic::transport::Channel,
) -> PlaybackTokenServiceClient<tonic::transport::Channel> {
    PlaybackTokenServiceClient::new(channel.clone())
}

async fn rotate_signing_key(
    admin: &Session,
    revoke_previous: bool,
) -> proto::RotateSigningKeyResponse {
    playback(&admin.channel)
        .rotate_signing_key(admin.req(proto::RotateSigningKeyRequest {
            algorithm: proto::SigningAlgorithm::Eddsa as i32,
            revoke_previous,
        }))
        .await
        .expect("rotate")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rpc_is_one_change_with_each_targets_state_after_it() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let feed = Feed::of(&server.db, org.id).await;
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let admin_id = org.admin_id.to_string();

    // The bootstrap was the organisation's first change.
    let bootstrap = feed.targets(1).await;
    assert_targets(
        &bootstrap,
        &[
            (
                "organisation.create",
                "organisation",
                &org.id.to_string(),
                true,
            ),
            ("user.create", "user", &admin_id, true),
        ],
        "bootstrap",
    );
    assert!(bootstrap.iter().all(|t| t.actor == "operator"));
    assert_eq!(bootstrap[1].owner, Some(org.admin_id));

    // Login: the user (its last sign-in) and the session it opened.
    let before = feed.head().await;
    let signed_in = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let login = feed.next(before, "Login").await;
    assert_targets(
        &login,
        &[
            ("login.succeeded", "user", &admin_id, true),
            ("session.open", "session", &signed_in.session_id, true),
        ],
        "Login",
    );
    assert!(!login[0].field("last_login_at").is_null());
    assert_eq!(login[1].owner, Some(org.admin_id));
    assert!(login[1].expires, "a session expires on its own");
    assert!(login[1].field("token_key").is_null(), "no tokenKey stored");
    covered.insert("AuthService/Login");
    let admin = Session {
        channel: channel.clone(),
        token: signed_in.access_token.clone(),
    };

    // Refresh: the session's end slid.
    let before = feed.head().await;
    let refreshed = refresh(&channel, &signed_in.refresh_token).await;
    let change = feed.next(before, "Refresh").await;
    assert_targets(
        &change,
        &[("session.refresh", "session", &signed_in.session_id, true)],
        "Refresh",
    );
    assert!(!change[0].field("last_refreshed_at").is_null());
    covered.insert("AuthService/Refresh");
    let admin = Session {
        token: refreshed.access_token,
        ..admin
    };

    // CreateUser (and the write's answer names its change).
    let before = feed.head().await;
    let created = users(&admin)
        .create_user(admin.req(proto::CreateUserRequest {
            email: "bob@acme.example.com".into(),
            role: Role::NanoUser as i32,
            password: PASSWORD.into(),
        }))
        .await
        .expect("create bob");
    let receipt = created
        .metadata()
        .get("x-usermgmt-change-sequence")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bob = created.into_inner().user.expect("bob");
    let change = feed.next(before, "CreateUser").await;
    assert_targets(
        &change,
        &[
            ("user.create", "user", &bob.id, true),
            (
                "organisation.members",
                "organisation",
                &org.id.to_string(),
                true,
            ),
        ],
        "CreateUser",
    );
    assert_eq!(
        change[1].field("role_counts")[1],
        serde_json::json!(["NanoUser", 1])
    );
    assert_eq!(receipt, Some((before + 1).to_string()));
    assert_eq!(change[0].field("role"), "NanoUser");
    assert_eq!(
        change[0].field("token_key_fingerprint"),
        &Value::String(bob.token_key_fingerprint.clone())
    );
    covered.insert("UserService/CreateUser");
    let bob_id: Uuid = bob.id.parse().expect("id");

    // Bob signs in twice, and makes a personal API token.
    let bob_first = sign_in(&channel, &bob.email, PASSWORD).await;
    let bob_second = sign_in(&channel, &bob.email, PASSWORD).await;
    let bob_session = Session {
        channel: channel.clone(),
        token: bob_second.access_token.clone(),
    };
    let before = feed.head().await;
    let token = create_api_token(&channel, &bob_session.token, &[])
        .await
        .expect("token");
    let token_id = token.api_token.expect("token").id;
    let change = feed.next(before, "CreateApiToken").await;
    assert_targets(
        &change,
        &[("api_token.create", "api_token", &token_id, true)],
        "CreateApiToken",
    );
    assert_eq!(change[0].owner, Some(bob_id));
    assert!(change[0].expires);
    covered.insert("ApiTokenService/CreateApiToken");

    // ChangePassword from the second session: the first one ends with it.
    let before = feed.head().await;
    AuthServiceClient::new(channel.clone())
        .change_password(bob_session.req(proto::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "bob's new password".into(),
        }))
        .await
        .expect("change password");
    let change = feed.next(before, "ChangePassword").await;
    assert_targets(
        &change,
        &[
            ("user.change_password", "user", &bob.id, true),
            ("session.end", "session", &bob_first.session_id, false),
        ],
        "ChangePassword",
    );
    assert_eq!(change[1].owner, Some(bob_id), "a tombstone names its owner");
    covered.insert("AuthService/ChangePassword");

    // RevokeSession, by an admin.
    let bob_third = sign_in(&channel, &bob.email, "bob's new password").await;
    let before = feed.head().await;
    SessionServiceClient::new(channel.clone())
        .revoke_session(admin.req(proto::RevokeSessionRequest {
            session_id: bob_third.session_id.clone(),
        }))
        .await
        .expect("revoke session");
    let change = feed.next(before, "RevokeSession").await;
    assert_targets(
        &change,
        &[("session.revoke", "session", &bob_third.session_id, false)],
        "RevokeSession",
    );
    assert_eq!(change[0].owner, Some(bob_id));
    covered.insert("SessionService/RevokeSession");

    // Logout.
    let bob_fourth = sign_in(&channel, &bob.email, "bob's new password").await;
    let before = feed.head().await;
    AuthServiceClient::new(channel.clone())
        .logout(authed(proto::LogoutRequest {}, &bob_fourth.access_token))
        .await
        .expect("logout");
    let change = feed.next(before, "Logout").await;
    assert_targets(
        &change,
        &[("session.logout", "session", &bob_fourth.session_id, false)],
        "Logout",
    );
    covered.insert("AuthService/Logout");

    // RevokeApiToken, by an admin.
    let doomed = create_api_token(&channel, &bob_session.token, &[])
        .await
        .expect("token")
        .api_token
        .expect("token")
        .id;
    let before = feed.head().await;
    ApiTokenServiceClient::new(channel.clone())
        .revoke_api_token(admin.req(proto::RevokeApiTokenRequest {
            api_token_id: doomed.clone(),
        }))
        .await
        .expect("revoke token");
    let change = feed.next(before, "RevokeApiToken").await;
    assert_targets(
        &change,
        &[("api_token.revoke", "api_token", &doomed, false)],
        "RevokeApiToken",
    );
    assert_eq!(change[0].owner, Some(bob_id));
    covered.insert("ApiTokenService/RevokeApiToken");

    // CreateInvite, RevokeInvite.
    let invite = |email: &str| proto::CreateInviteRequest {
        email: email.into(),
        role: Role::NanoUser as i32,
        ttl: None,
    };
    let before = feed.head().await;
    let revoked = users(&admin)
        .create_invite(admin.req(invite("dave@acme.example.com")))
        .await
        .expect("invite")
        .into_inner()
        .invite
        .expect("invite");
    let change = feed.next(before, "CreateInvite").await;
    assert_targets(
        &change,
        &[("invite.create", "invite", &revoked.id, true)],
        "CreateInvite",
    );
    assert!(change[0].expires, "an invite expires on its own");
    covered.insert("UserService/CreateInvite");
    let before = feed.head().await;
    users(&admin)
        .revoke_invite(admin.req(proto::RevokeInviteRequest {
            invite_id: revoked.id.clone(),
        }))
        .await
        .expect("revoke invite");
    let change = feed.next(before, "RevokeInvite").await;
    assert_targets(
        &change,
        &[("invite.revoke", "invite", &revoked.id, false)],
        "RevokeInvite",
    );
    covered.insert("UserService/RevokeInvite");

    // AcceptInvite: the invite is gone, a user and a session are there.
    let accepted = users(&admin)
        .create_invite(admin.req(invite("carol@acme.example.com")))
        .await
        .expect("invite")
        .into_inner();
    let accepted_id = accepted.invite.expect("invite").id;
    let before = feed.head().await;
    let carol = AuthServiceClient::new(channel.clone())
        .accept_invite(proto::AcceptInviteRequest {
            invite_token: accepted.invite_token,
            password: PASSWORD.into(),
        })
        .await
        .expect("accept")
        .into_inner();
    let change = feed.next(before, "AcceptInvite").await;
    assert_targets(
        &change,
        &[
            ("invite.accept", "invite", &accepted_id, false),
            ("user.create", "user", &carol.user_id, true),
            (
                "organisation.members",
                "organisation",
                &org.id.to_string(),
                true,
            ),
            ("session.open", "session", &carol.session_id, true),
        ],
        "AcceptInvite",
    );
    assert!(
        change
            .iter()
            .all(|t| t.actor == format!("user:{}", carol.user_id))
    );
    covered.insert("AuthService/AcceptInvite");

    // UpdateUserRole: a new tokenKey ends Bob's live session and his token.
    let before = feed.head().await;
    admin
        .set_role(&bob.id, Role::NanoReadOnly, "")
        .await
        .expect("demote bob");
    let change = feed.next(before, "UpdateUserRole").await;
    assert_targets(
        &change,
        &[
            ("user.update_role", "user", &bob.id, true),
            (
                "organisation.members",
                "organisation",
                &org.id.to_string(),
                true,
            ),
            ("session.end", "session", &bob_second.session_id, false),
            ("api_token.end", "api_token", &token_id, false),
        ],
        "UpdateUserRole",
    );
    assert_eq!(change[0].field("role"), "NanoReadOnly");
    assert_ne!(
        change[0].field("token_key_fingerprint"),
        &Value::String(bob.token_key_fingerprint.clone()),
        "the new tokenKey's fingerprint"
    );
    covered.insert("UserService/UpdateUserRole");

    // RenewTokenKey: the first step changes nothing; the second ends
    // Carol's session.
    let before = feed.head().await;
    let renew = TwoStep::RenewTokenKey(carol.user_id.clone());
    let asked = admin.ask(&renew).await.expect("ask");
    feed.unchanged(before, "a first step").await;
    admin
        .confirm(&renew, &asked.confirmation_token)
        .await
        .expect("renew");
    let change = feed.next(before, "RenewTokenKey").await;
    assert_targets(
        &change,
        &[
            ("user.renew_token_key", "user", &carol.user_id, true),
            ("session.end", "session", &carol.session_id, false),
        ],
        "RenewTokenKey",
    );
    covered.insert("UserService/RenewTokenKey");

    // SuspendUser, ReactivateUser.
    let suspend = TwoStep::SuspendUser(carol.user_id.clone());
    let asked = admin.ask(&suspend).await.expect("ask");
    let before = feed.head().await;
    admin
        .confirm(&suspend, &asked.confirmation_token)
        .await
        .expect("suspend");
    let change = feed.next(before, "SuspendUser").await;
    assert_targets(
        &change,
        &[("user.suspend", "user", &carol.user_id, true)],
        "SuspendUser",
    );
    assert_eq!(change[0].field("state"), "Suspended");
    covered.insert("UserService/SuspendUser");
    let before = feed.head().await;
    users(&admin)
        .reactivate_user(admin.req(proto::ReactivateUserRequest {
            user_id: carol.user_id.clone(),
            etag: String::new(),
        }))
        .await
        .expect("reactivate");
    let change = feed.next(before, "ReactivateUser").await;
    assert_targets(
        &change,
        &[("user.reactivate", "user", &carol.user_id, true)],
        "ReactivateUser",
    );
    assert_eq!(change[0].field("state"), "Active");
    covered.insert("UserService/ReactivateUser");

    // DeleteUser: a tombstone that still names whose it was.
    let delete = TwoStep::DeleteUser(carol.user_id.clone());
    let asked = admin.ask(&delete).await.expect("ask");
    let before = feed.head().await;
    admin
        .confirm(&delete, &asked.confirmation_token)
        .await
        .expect("delete");
    let change = feed.next(before, "DeleteUser").await;
    assert_targets(
        &change,
        &[
            ("user.delete", "user", &carol.user_id, false),
            (
                "organisation.members",
                "organisation",
                &org.id.to_string(),
                true,
            ),
        ],
        "DeleteUser",
    );
    assert_eq!(
        change[0].owner.map(|id| id.to_string()),
        Some(carol.user_id)
    );
    covered.insert("UserService/DeleteUser");

    // UpdateOrganisation (and secure playback, for what follows).
    let before = feed.head().await;
    let mut update = rename_organisation("Acme Streaming");
    if let Some(organisation) = update.organisation.as_mut() {
        organisation.secure_playback = true;
    }
    if let Some(mask) = update.update_mask.as_mut() {
        mask.paths.push("secure_playback".into());
    }
    OrganisationServiceClient::new(channel.clone())
        .update_organisation(admin.req(update))
        .await
        .expect("update organisation");
    let change = feed.next(before, "UpdateOrganisation").await;
    assert_targets(
        &change,
        &[(
            "organisation.update",
            "organisation",
            &org.id.to_string(),
            true,
        )],
        "UpdateOrganisation",
    );
    assert_eq!(change[0].field("name"), "Acme Streaming");
    assert_eq!(change[0].field("secure_playback"), true);
    covered.insert("OrganisationService/UpdateOrganisation");

    // RotateApiKey.
    let asked = admin.ask(&TwoStep::RotateApiKey).await.expect("ask");
    let before = feed.head().await;
    let rotated = admin
        .confirm(&TwoStep::RotateApiKey, &asked.confirmation_token)
        .await
        .expect("rotate")
        .rotated();
    let change = feed.next(before, "RotateApiKey").await;
    assert_targets(
        &change,
        &[(
            "organisation.rotate_api_key",
            "organisation",
            &org.id.to_string(),
            true,
        )],
        "RotateApiKey",
    );
    assert_eq!(
        change[0].field("api_key_fingerprint"),
        &Value::String(rotated.api_key_fingerprint.clone())
    );
    covered.insert("OrganisationService/RotateApiKey");

    // IssuePlaybackToken: the organisation's first key, and the token.
    let before = feed.head().await;
    let issued = playback(&channel)
        .issue_playback_token(admin.req(proto::IssuePlaybackTokenRequest {
            scope: Some(proto::PlaybackScope {
                scope: Some(proto::playback_scope::Scope::OrganisationWide(true)),
            }),
            revocable: true,
            ..Default::default()
        }))
        .await
        .expect("issue")
        .into_inner();
    let change = feed.next(before, "IssuePlaybackToken").await;
    assert_targets(
        &change,
        &[
            ("playback_key.create", "playback_key", &issued.kid, true),
            (
                "playback_token.issue",
                "playback_token",
                &issued.token_id,
                true,
            ),
        ],
        "IssuePlaybackToken",
    );
    assert!(change[1].expires);
    assert!(change[1].field("revoked_at").is_null());
    covered.insert("PlaybackTokenService/IssuePlaybackToken");

    // RevokePlaybackToken: the token stays, revoked, until it expires.
    let before = feed.head().await;
    playback(&channel)
        .revoke_playback_token(admin.req(proto::RevokePlaybackTokenRequest {
            target: Some(proto::revoke_playback_token_request::Target::TokenId(
                issued.token_id.clone(),
            )),
        }))
        .await
        .expect("revoke playback token");
    let change = feed.next(before, "RevokePlaybackToken").await;
    assert_targets(
        &change,
        &[(
            "playback_token.revoke",
            "playback_token",
            &issued.token_id,
            true,
        )],
        "RevokePlaybackToken",
    );
    assert!(!change[0].field("revoked_at").is_null());
    covered.insert("PlaybackTokenService/RevokePlaybackToken");

    // RotateSigningKey: the old key retires (and still verifies), then is
    // revoked by a rotation that revokes the previous keys.
    let before = feed.head().await;
    let second = rotate_signing_key(&admin, false).await;
    let second_kid = second.key.expect("key").kid;
    let change = feed.next(before, "RotateSigningKey").await;
    assert_targets(
        &change,
        &[
            ("playback_key.retire", "playback_key", &issued.kid, true),
            ("playback_key.rotate", "playback_key", &second_kid, true),
        ],
        "RotateSigningKey",
    );
    assert!(!change[0].field("retired_at").is_null());
    assert!(
        change[0].expires,
        "a retired key verifies until verify_until"
    );
    let before = feed.head().await;
    let third = rotate_signing_key(&admin, true).await;
    let third_kid = third.key.expect("key").kid;
    let change = feed.next(before, "RotateSigningKey revoking").await;
    let shapes: BTreeSet<_> = change.iter().map(Target::shape).collect();
    let wanted: BTreeSet<_> = expect(&[
        ("playback_key.revoke", "playback_key", &issued.kid, false),
        ("playback_key.revoke", "playback_key", &second_kid, false),
        ("playback_key.rotate", "playback_key", &third_kid, true),
    ])
    .into_iter()
    .collect();
    assert_eq!(shapes, wanted, "{change:#?}");
    covered.insert("PlaybackTokenService/RotateSigningKey");

    // ResetPassword: the admin's sessions end with the new tokenKey.
    let reset = reset_token_of(&server.db, &org).await;
    let before = feed.head().await;
    AuthServiceClient::new(channel.clone())
        .reset_password(proto::ResetPasswordRequest {
            reset_token: reset,
            new_password: "admin password 2".into(),
        })
        .await
        .expect("reset");
    let change = feed.next(before, "ResetPassword").await;
    assert_targets(
        &change,
        &[
            ("user.reset_password", "user", &admin_id, true),
            ("session.end", "session", &signed_in.session_id, false),
        ],
        "ResetPassword",
    );
    covered.insert("AuthService/ResetPassword");

    // The two writes that are no change: a failed sign-in (audited off the
    // answer's path: waited for) and a reset request.
    let before = feed.head().await;
    let failed = AuthServiceClient::new(channel.clone())
        .login(proto::LoginRequest {
            email: bob.email.clone(),
            password: "not bob's password".into(),
            organisation_id: String::new(),
        })
        .await;
    assert_status(failed, Code::Unauthenticated, Some("LOGIN_FAILED"));
    let client = server.db.client().await;
    loop {
        let recorded: i64 = client
            .query_one(
                "SELECT count(*) FROM audit_events WHERE action = 'login.failed' \
                 AND sequence IS NULL AND state IS NULL",
                &[],
            )
            .await
            .expect("failed login")
            .get(0);
        if recorded == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    AuthServiceClient::new(channel.clone())
        .request_password_reset(proto::RequestPasswordResetRequest {
            email: bob.email.clone(),
            organisation_id: String::new(),
        })
        .await
        .expect("reset request");
    feed.unchanged(before, "a failed sign-in or a reset request")
        .await;

    // Every write RPC of the contract was one change above.
    let rpcs = usermgmt::proto::rpc_paths().expect("the contract's descriptors decode");
    for rpc in rpcs.iter().map(|p| p.trim_start_matches("/usermgmt.v1.")) {
        assert!(
            NOT_CHANGES.contains(&rpc) || covered.contains(rpc),
            "{rpc} writes, and has no case here"
        );
    }

    // No stored state holds a secret.
    let secrets = [
        org.api_key.clone(),
        rotated.api_key.clone(),
        signed_in.refresh_token.clone(),
        signed_in.access_token.clone(),
        issued.token.clone(),
        "$argon2".to_owned(),
        "umi_".to_owned(),
        "umr_".to_owned(),
        "umt_".to_owned(),
        "private_key".to_owned(),
        "token_hash".to_owned(),
        "\"token_key\"".to_owned(),
    ];
    let token_keys: Vec<String> = client
        .query(
            "SELECT token_key::text FROM users UNION SELECT token_key::text FROM sessions \
             UNION SELECT token_key::text FROM api_tokens",
            &[],
        )
        .await
        .expect("token keys")
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let states: Vec<String> = client
        .query(
            "SELECT state::text FROM audit_events WHERE state IS NOT NULL",
            &[],
        )
        .await
        .expect("states")
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    assert!(states.len() > 20);
    for state in &states {
        for secret in secrets.iter().chain(&token_keys) {
            assert!(!state.contains(secret.as_str()), "{secret} in {state}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_page_by_sequence_oldest_first() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let feed = Feed::of(&server.db, org.id).await;
    for n in 0..4 {
        admin
            .create_user(&format!("u{n}@acme.example.com"), Role::NanoUser)
            .await
            .expect("create");
    }
    let invite = users(&admin)
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "x@acme.example.com".into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner();
    AuthServiceClient::new(channel.clone())
        .accept_invite(proto::AcceptInviteRequest {
            invite_token: invite.invite_token,
            password: PASSWORD.into(),
        })
        .await
        .expect("accept");
    // A failed sign-in: an event of no change, never in this order.
    let failed = AuthServiceClient::new(channel.clone())
        .login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: "wrong password".into(),
            organisation_id: String::new(),
        })
        .await;
    assert_status(failed, Code::Unauthenticated, Some("LOGIN_FAILED"));
    let head = feed.head().await;
    // Bootstrap, admin's login, 4 users, an invite, its acceptance.
    assert_eq!(head, 8);

    let expected: Vec<(i64, String)> = feed
        .client
        .query(
            "SELECT sequence, id::text FROM audit_events \
             WHERE organisation_id = $1 AND sequence > 1 ORDER BY sequence, id",
            &[&org.id],
        )
        .await
        .expect("events")
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // Pages of 3 cut through changes of several events.
    let mut audit = proto::audit_service_client::AuditServiceClient::new(channel.clone());
    let mut request = proto::ListAuditEventsRequest {
        page_size: 3,
        after_sequence: 1,
        ..Default::default()
    };
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let page = audit
            .list_audit_events(admin.req(request.clone()))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(pages < 50, "the pages never end: {listed:?}");
        assert!(page.events.len() <= 3);
        listed.extend(page.events.into_iter().map(|e| (e.sequence, e.id)));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(listed, expected, "oldest first by (sequence, id)");
    assert!(pages >= 4);

    // Only the last change, with a filter.
    let last = audit
        .list_audit_events(admin.req(proto::ListAuditEventsRequest {
            after_sequence: head - 1,
            action: "session.open".into(),
            ..Default::default()
        }))
        .await
        .expect("last")
        .into_inner()
        .events;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].sequence, head);

    // A token of one order is not one of the other; a negative sequence is
    // refused.
    let newest_first = audit
        .list_audit_events(admin.req(proto::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .expect("newest first")
        .into_inner();
    assert_eq!(newest_first.events[0].action, "login.failed");
    let mixed = audit
        .list_audit_events(admin.req(proto::ListAuditEventsRequest {
            page_size: 1,
            after_sequence: 1,
            page_token: newest_first.next_page_token,
            ..Default::default()
        }))
        .await;
    assert_eq!(
        violated_fields(&assert_status(mixed, Code::InvalidArgument, None)),
        ["page_token"]
    );
    let negative = audit
        .list_audit_events(admin.req(proto::ListAuditEventsRequest {
            after_sequence: -1,
            ..Default::default()
        }))
        .await;
    assert_eq!(
        violated_fields(&assert_status(negative, Code::InvalidArgument, None)),
        ["after_sequence"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_advance_each_organisations_sequence() {
    let db = TestDb::new().await;
    let acme = create_org(&db, "Acme").await;
    let store = store(&db);
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    let feed = Feed::of(&db, acme.id).await;
    assert_eq!(feed.head().await, 1, "the bootstrap");

    // Seeding: one change of Acme with every user it added, and a new
    // organisation whose bootstrap and users are its own changes.
    usermgmt::app::provisioning::seed_users(&store, &passwords, acme.id, 7, 2)
        .await
        .expect("seed");
    let seeded = feed.next(1, "seeding").await;
    assert_eq!(seeded.len(), 5, "{seeded:#?}");
    let members = seeded.last().expect("the role counts");
    assert_eq!(members.action, "organisation.members");
    assert_eq!(
        members.field("role_counts")[1],
        serde_json::json!(["NanoUser", 2])
    );
    assert!(seeded[..4].iter().all(|t| t.action == "user.create"
        && t.actor == "operator"
        && t.state.is_some()
        && t.owner.map(|o| o.to_string()) == Some(t.target_id.clone())));
    let other: Uuid = feed
        .client
        .query_one("SELECT id FROM organisations WHERE id <> $1", &[&acme.id])
        .await
        .expect("the seeded organisation")
        .get(0);
    let other_feed = Feed::of(&db, other).await;
    assert_eq!(other_feed.head().await, 2, "bootstrap, then its users");
    // 7 users, 2 organisations: 3 here, one its first nanoAdmin; and the
    // role counts.
    assert_eq!(
        other_feed.targets(2).await.len(),
        3,
        "7 users, 2 organisations: 2 new here"
    );

    // bench-tokens' sessions: one change per organisation.
    let before = feed.head().await;
    let opened = store
        .open_bench_sessions(Some(acme.id), 3)
        .await
        .expect("bench sessions");
    let change = feed.next(before, "bench sessions").await;
    assert_eq!(change.len(), 3);
    for (target, session) in change.iter().zip(&opened) {
        assert_eq!(target.action, "session.open");
        assert_eq!(target.target_id, session.session_id.to_string());
        assert_eq!(target.owner, Some(session.user_id));
        assert!(target.state.is_some());
    }

    // Services: the deployment's feed, under the nil organisation id.
    let deployment = Feed::of(&db, Uuid::nil()).await;
    let before = deployment.head().await;
    let key = register_service(&db, "edge-1").await;
    let change = deployment.next(before, "service register").await;
    assert_eq!(change.len(), 1);
    assert_eq!(
        (change[0].action.as_str(), change[0].target_type.as_str()),
        ("service.register", "service")
    );
    assert_eq!(change[0].field("name"), "edge-1");
    let stored = change[0]
        .state
        .as_ref()
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(
        !stored.contains(&key) && !stored.contains("secret"),
        "{stored}"
    );
    store.revoke_service("edge-1").await.expect("revoke");
    let revoked = deployment.next(before + 1, "service revoke").await;
    assert_eq!(revoked[0].action, "service.revoke");
    assert_eq!(revoked[0].target_id, change[0].target_id);
    assert!(revoked[0].state.is_none(), "a tombstone");
    assert_eq!(feed.head().await, before_acme(&feed, 3).await);

    // Key rewrap: each re-sealed signing key is a change of its
    // organisation.
    let (kid, organisation) = {
        let key = usermgmt::auth::playback::generate_key(
            usermgmt::domain::playback::SigningAlgorithm::EdDsa,
        )
        .expect("key");
        let kid = format!("k-{}", Uuid::new_v4().simple());
        feed.client
            .execute(
                "INSERT INTO playback_signing_keys (kid, organisation_id, alg, private_key, public_key) \
                 VALUES ($1, $2, 'EdDSA', $3, $4)",
                &[&kid, &other, &key.private_der, &key.public_key],
            )
            .await
            .expect("a plain key, as before sealing");
        (kid, other)
    };
    let before_other = other_feed.head().await;
    let kek = usermgmt::sealing::Keyring::new(
        Some(usermgmt::sealing::Kek::parse(&"11".repeat(32)).expect("a KEK")),
        vec![],
    );
    let sealed = store
        .with_keyring(kek)
        .rewrap_secrets()
        .await
        .expect("rewrap");
    assert!(sealed.sealed >= 1);
    let change = other_feed.next(before_other, "rewrap").await;
    assert_eq!(change.len(), 1);
    assert_eq!(
        (change[0].action.as_str(), change[0].target_id.as_str()),
        ("playback_key.rewrap", kid.as_str())
    );
    assert!(change[0].state.is_some());
    let _ = organisation;
}

/// The head of `feed`, asserted to be `expected` (operator commands of
/// other organisations leave it alone).
async fn before_acme(feed: &Feed, expected: i64) -> i64 {
    assert_eq!(feed.head().await, expected);
    expected
}

/// Plants `count` old changes of one event each (committed `age` ago) after
/// the organisation's head, as if they had been made then.
async fn plant_changes(feed: &Feed, count: i64, age: &str) {
    feed.client
        .execute(
            &format!(
                "WITH h AS (SELECT head FROM change_heads WHERE organisation_id = $1) \
                 INSERT INTO audit_events (id, organisation_id, occurred_at, actor, action, \
                     target_type, target_id, sequence, owner_id, state) \
                 SELECT gen_random_uuid(), $1, now() - interval '{age}', 'operator', \
                     'user.create', 'user', gen_random_uuid()::text, h.head + s, \
                     gen_random_uuid(), '{{\"type\":\"user\"}}'::jsonb \
                 FROM h, generate_series(1, $2::bigint) s"
            ),
            &[&feed.organisation_id, &count],
        )
        .await
        .expect("plant changes");
    feed.client
        .execute(
            "UPDATE change_heads SET head = head + $2 WHERE organisation_id = $1",
            &[&feed.organisation_id, &count],
        )
        .await
        .expect("advance the head");
}

/// The organisation's `pruned_through`, and how many of its sequenced
/// events still hold a state or an owner, at or before it and after it.
async fn pruning_of(feed: &Feed) -> (i64, i64, i64) {
    let row = feed
        .client
        .query_one(
            "SELECT h.pruned_through, \
                 (SELECT count(*) FROM audit_events a WHERE a.organisation_id = h.organisation_id \
                  AND a.sequence <= h.pruned_through \
                  AND (a.state IS NOT NULL OR a.owner_id IS NOT NULL)), \
                 (SELECT count(*) FROM audit_events a WHERE a.organisation_id = h.organisation_id \
                  AND a.sequence > h.pruned_through AND a.state IS NOT NULL) \
             FROM change_heads h WHERE h.organisation_id = $1",
            &[&feed.organisation_id],
        )
        .await
        .expect("pruning");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_drops_old_states_in_batches_and_advances_pruned_through() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let store = store(&db);
    let feed = Feed::of(&db, org.id).await;
    // The bootstrap (now), then 1,200 changes eight days old (more than a
    // batch), then 5 two days old.
    feed.client
        .execute(
            "UPDATE audit_events SET occurred_at = now() - interval '9 days' \
             WHERE organisation_id = $1",
            &[&org.id],
        )
        .await
        .expect("age the bootstrap");
    plant_changes(&feed, 1200, "8 days").await;
    plant_changes(&feed, 5, "2 days").await;
    let events_before: i64 = feed
        .client
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .expect("count")
        .get(0);

    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let pruned = store.prune_changes(week_ago).await.expect("prune");
    assert_eq!(pruned.changes, 1201, "{pruned:?}");
    assert_eq!(pruned.organisations, 1);
    assert_eq!(pruning_of(&feed).await, (1201, 0, 5));
    let events_after: i64 = feed
        .client
        .query_one("SELECT count(*) FROM audit_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events_after, events_before, "the audit events stay");

    // Again: nothing more to drop; pruned_through never goes back.
    let again = store.prune_changes(week_ago).await.expect("prune again");
    assert_eq!(again.changes, 0);
    let day_ago = chrono::Utc::now() - chrono::Duration::days(1);
    store.prune_changes(day_ago).await.expect("prune more");
    assert_eq!(pruning_of(&feed).await, (1206, 0, 0));
    let older = chrono::Utc::now() - chrono::Duration::days(30);
    store.prune_changes(older).await.expect("prune less");
    assert_eq!(pruning_of(&feed).await.0, 1206);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_prunes_what_is_older_than_its_retention_setting() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let feed = Feed::of(&db, org.id).await;
    feed.client
        .execute(
            "UPDATE audit_events SET occurred_at = now() - interval '4 hours' \
             WHERE organisation_id = $1",
            &[&org.id],
        )
        .await
        .expect("age the bootstrap");
    plant_changes(&feed, 3, "3 hours").await;
    plant_changes(&feed, 2, "10 minutes").await;
    // The replica prunes when it starts.
    let _replica =
        Replica::start_with_env(&db.url, &[("USERMGMT_CHANGE_RETENTION_HOURS", "2")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (through, ..) = pruning_of(&feed).await;
        if through > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing pruned in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The bootstrap and the three changes of 3 hours ago; not the two of
    // 10 minutes ago.
    assert_eq!(pruning_of(&feed).await, (4, 0, 2));
}
