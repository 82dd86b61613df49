//! Every write re-checks its caller at commit: in one transaction it first
//! takes the caller's organisation row lock, then verifies the caller
//! against the database as it is now, and only then writes.
//!
//! For every write RPC of the contract the test holds that lock, lets the
//! write queue behind it, revokes the caller by SQL in the same transaction
//! (user deleted, tokenKey changed, role lowered, session ended, API key
//! rotated) and
//! commits. The write must fail with the exact code and reason, and the
//! database must then hold exactly what the revocation left: no row, no
//! audit event, no used-up confirmation. A control case per RPC releases
//! the lock with nothing changed: the write succeeds, so the setup works.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient,
    organisation_service_client::OrganisationServiceClient,
    playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target, user_service_client::UserServiceClient,
};
use uuid::Uuid;

use crate::playback::{for_streams, make_secure};
use crate::support::dump::{assert_same, dump_org, dump_org_on};
use crate::support::lock::OrgLock;
use crate::support::two_step::{self, Caller as Credential};
use crate::support::*;

/// The longest one call of a case may take.
const CALL_BOUND: Duration = Duration::from_secs(20);

/// The RPCs that change nothing. Every other RPC of the contract must be a
/// [`Write`] with a case.
pub(crate) const READS: &[&str] = &[
    "AuthService/WhoAmI",
    // Queues a reset request in the mail outbox when mail is on (it is off
    // here); the worker's write of the reset goes through the write path
    // (password_reset.rs, outbox.rs).
    "AuthService/RequestPasswordReset",
    "SessionService/ListSessions",
    "ApiTokenService/ListApiTokens",
    "AuthService/Authorize",
    "AuthService/AuthorizeBatch",
    "UserService/GetUser",
    "UserService/ListUsers",
    "UserService/ListInvites",
    "AuditService/ListAuditEvents",
    "RoleService/ListRoles",
    "OrganisationService/GetOrganisation",
    "PlaybackTokenService/VerifyPlaybackToken",
    "PlaybackTokenService/ListSigningKeys",
    "ChangeService/WatchChanges",
    "ChangeService/ListChanges",
];

/// One write of the contract: an RPC, or one step of a two-step RPC (the
/// first step writes too: it stores a confirmation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    CreateUser,
    CreateInvite,
    RevokeInvite,
    UpdateUserRole,
    AskDeleteUser,
    ConfirmDeleteUser,
    /// Of another user: one's own needs no permission.
    AskRenewTokenKey,
    ConfirmRenewTokenKey,
    UpdateOrganisation,
    AskRotateApiKey,
    ConfirmRotateApiKey,
    IssuePlaybackToken,
    RevokePlaybackToken,
    RotateSigningKey,
    /// Anonymous; its "caller" is the invite's creator.
    AcceptInvite,
    /// The caller's own password: opens a session.
    Login,
    /// With a refresh token of another session of the caller.
    Refresh,
    Logout,
    /// Of the target's session.
    RevokeSession,
    ChangePassword,
    /// Anonymous, with a reset token of the caller's.
    ResetPassword,
    /// For the caller: needs a signed-in session.
    CreateApiToken,
    /// Of the target's token: needs api_tokens.manage.
    RevokeApiToken,
    AskSuspendUser,
    ConfirmSuspendUser,
    /// Of the target, suspended beforehand.
    ReactivateUser,
}

impl Write {
    const ALL: [Write; 26] = [
        Write::CreateUser,
        Write::CreateInvite,
        Write::RevokeInvite,
        Write::UpdateUserRole,
        Write::AskDeleteUser,
        Write::ConfirmDeleteUser,
        Write::AskRenewTokenKey,
        Write::ConfirmRenewTokenKey,
        Write::UpdateOrganisation,
        Write::AskRotateApiKey,
        Write::ConfirmRotateApiKey,
        Write::IssuePlaybackToken,
        Write::RevokePlaybackToken,
        Write::RotateSigningKey,
        Write::AcceptInvite,
        Write::Login,
        Write::Refresh,
        Write::Logout,
        Write::RevokeSession,
        Write::ChangePassword,
        Write::ResetPassword,
        Write::CreateApiToken,
        Write::RevokeApiToken,
        Write::AskSuspendUser,
        Write::ConfirmSuspendUser,
        Write::ReactivateUser,
    ];

    /// Whether `kind` can make this write at all: the API key has no
    /// password, session or reset of its own, and a personal API token no
    /// session (so it cannot create tokens either).
    fn made_by(self, kind: CallerKind) -> bool {
        kind == CallerKind::Admin
            || !matches!(
                self,
                Write::Login
                    | Write::Refresh
                    | Write::Logout
                    | Write::ChangePassword
                    | Write::ResetPassword
                    | Write::CreateApiToken
            )
    }

    /// The RPC, as `Service/Method`.
    fn rpc(self) -> &'static str {
        match self {
            Write::CreateUser => "UserService/CreateUser",
            Write::CreateInvite => "UserService/CreateInvite",
            Write::RevokeInvite => "UserService/RevokeInvite",
            Write::UpdateUserRole => "UserService/UpdateUserRole",
            Write::AskDeleteUser | Write::ConfirmDeleteUser => "UserService/DeleteUser",
            Write::AskRenewTokenKey | Write::ConfirmRenewTokenKey => "UserService/RenewTokenKey",
            Write::UpdateOrganisation => "OrganisationService/UpdateOrganisation",
            Write::AskRotateApiKey | Write::ConfirmRotateApiKey => {
                "OrganisationService/RotateApiKey"
            }
            Write::IssuePlaybackToken => "PlaybackTokenService/IssuePlaybackToken",
            Write::RevokePlaybackToken => "PlaybackTokenService/RevokePlaybackToken",
            Write::RotateSigningKey => "PlaybackTokenService/RotateSigningKey",
            Write::AcceptInvite => "AuthService/AcceptInvite",
            Write::Login => "AuthService/Login",
            Write::Refresh => "AuthService/Refresh",
            Write::Logout => "AuthService/Logout",
            Write::RevokeSession => "SessionService/RevokeSession",
            Write::ChangePassword => "AuthService/ChangePassword",
            Write::ResetPassword => "AuthService/ResetPassword",
            Write::CreateApiToken => "ApiTokenService/CreateApiToken",
            Write::RevokeApiToken => "ApiTokenService/RevokeApiToken",
            Write::AskSuspendUser | Write::ConfirmSuspendUser => "UserService/SuspendUser",
            Write::ReactivateUser => "UserService/ReactivateUser",
        }
    }
}

#[test]
fn every_rpc_of_the_contract_is_a_read_or_a_write_with_a_case() {
    let rpcs: Vec<String> = usermgmt::proto::rpc_paths()
        .expect("the contract's descriptors decode")
        .iter()
        .map(|path| path.trim_start_matches("/usermgmt.v1.").to_owned())
        .collect();
    assert!(!rpcs.is_empty());
    for rpc in &rpcs {
        let read = READS.contains(&rpc.as_str());
        let write = Write::ALL.iter().any(|w| w.rpc() == rpc);
        assert!(
            read || write,
            "{rpc} is neither a read nor a write with a commit re-check case"
        );
        assert!(!(read && write), "{rpc} is listed as a read and a write");
    }
    for name in READS.iter().copied().chain(Write::ALL.map(Write::rpc)) {
        assert!(
            rpcs.iter().any(|rpc| rpc == name),
            "{name} is not an RPC of the contract"
        );
    }
}

/// A credential of the organisation: its first admin's access token, or
/// its API key.
#[derive(Clone)]
struct Caller {
    channel: Channel,
    credential: Credential,
}

impl Caller {
    fn req<T>(&self, message: T) -> Request<T> {
        self.credential.req(message)
    }

    fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    fn organisations(&self) -> OrganisationServiceClient<Channel> {
        OrganisationServiceClient::new(self.channel.clone())
    }

    fn playback(&self) -> PlaybackTokenServiceClient<Channel> {
        PlaybackTokenServiceClient::new(self.channel.clone())
    }

    async fn invite(&self, email: &str) -> proto::CreateInviteResponse {
        self.users()
            .create_invite(self.req(proto::CreateInviteRequest {
                email: email.into(),
                role: Role::NanoUser as i32,
                ttl: None,
            }))
            .await
            .expect("create an invite")
            .into_inner()
    }

    /// One step of a double-confirmed action: with no `token`, the first
    /// (its confirmation token); with one, the second (the user's id, or the
    /// new key's fingerprint).
    async fn two_step(&self, action: TwoStep, token: &str) -> Result<String, Status> {
        let step = two_step::call(&self.channel, &self.credential, &action, token).await?;
        Ok(match step {
            two_step::Step::Asked(asked) if token.is_empty() => asked.confirmation_token,
            two_step::Step::Done(Done::Rotated(key)) if !token.is_empty() => {
                key.api_key_fingerprint
            }
            two_step::Step::Done(done) if !token.is_empty() => done.user().id,
            other => panic!("{action:?} answered {other:?}"),
        })
    }

    async fn delete_user(&self, user_id: &str, token: &str) -> Result<String, Status> {
        self.two_step(TwoStep::DeleteUser(user_id.into()), token)
            .await
    }

    async fn renew_token_key(&self, user_id: &str, token: &str) -> Result<String, Status> {
        self.two_step(TwoStep::RenewTokenKey(user_id.into()), token)
            .await
    }

    async fn suspend_user(&self, user_id: &str, token: &str) -> Result<String, Status> {
        self.two_step(TwoStep::SuspendUser(user_id.into()), token)
            .await
    }

    async fn rotate_api_key(&self, token: &str) -> Result<String, Status> {
        self.two_step(TwoStep::RotateApiKey, token).await
    }
}

/// A write, arranged up to its last call: what that call needs.
#[derive(Clone)]
struct Prepared {
    write: Write,
    /// The user the write is about (a nanoUser of the organisation).
    target: String,
    /// A fresh email address, for what the write creates.
    email: String,
    /// What the arrangement handed out: a confirmation token, an invite id
    /// or token, a playback token id, a refresh token, a session id, a
    /// reset token; empty if nothing.
    token: String,
    /// The caller's email (the admin's), for a login.
    admin_email: String,
}

impl Prepared {
    /// Arranges `write` as `caller`: the first step of a two-step RPC, the
    /// invite to revoke or accept, the playback token to revoke, the
    /// session to refresh or revoke, the reset token.
    async fn arrange(
        write: Write,
        caller: &Caller,
        db: &TestDb,
        org: &Org,
        target: Uuid,
        case: usize,
    ) -> Self {
        let target_email = format!("target@case{case}.example.com");
        let email = format!("new{case}@example.com");
        let token = match write {
            Write::RevokeInvite => caller.invite(&email).await.invite.expect("the invite").id,
            Write::AcceptInvite => caller.invite(&email).await.invite_token,
            Write::ConfirmDeleteUser => caller
                .delete_user(&target.to_string(), "")
                .await
                .expect("the first step of DeleteUser"),
            Write::ConfirmRenewTokenKey => caller
                .renew_token_key(&target.to_string(), "")
                .await
                .expect("the first step of RenewTokenKey"),
            Write::ConfirmRotateApiKey => caller
                .rotate_api_key("")
                .await
                .expect("the first step of RotateApiKey"),
            Write::RevokePlaybackToken => {
                caller
                    .playback()
                    .issue_playback_token(caller.req(proto::IssuePlaybackTokenRequest {
                        revocable: true,
                        ..for_streams(&["live"])
                    }))
                    .await
                    .expect("issue a revocable playback token")
                    .into_inner()
                    .token_id
            }
            Write::Refresh => {
                sign_in(&caller.channel, &org.admin_email, ADMIN_PASSWORD)
                    .await
                    .refresh_token
            }
            Write::RevokeSession => {
                sign_in(&caller.channel, &target_email, PASSWORD)
                    .await
                    .session_id
            }
            Write::ResetPassword => reset_token_of(db, org).await,
            Write::RevokeApiToken => {
                let access = login(&caller.channel, &target_email, PASSWORD).await;
                create_api_token(&caller.channel, &access, &[])
                    .await
                    .expect("the target's API token")
                    .api_token
                    .expect("its resource")
                    .id
            }
            Write::ConfirmSuspendUser => caller
                .suspend_user(&target.to_string(), "")
                .await
                .expect("the first step of SuspendUser"),
            Write::ReactivateUser => {
                db.client()
                    .await
                    .execute(
                        "UPDATE users SET state = 'suspended', token_key = gen_random_uuid(), \
                         version = version + 1 WHERE id = $1",
                        &[&target],
                    )
                    .await
                    .expect("suspend the target");
                String::new()
            }
            _ => String::new(),
        };
        let target = target.to_string();
        Prepared {
            write,
            target,
            email,
            token,
            admin_email: org.admin_email.clone(),
        }
    }

    /// The write's last call, as `caller` (AcceptInvite: anonymously).
    async fn run(&self, caller: &Caller) -> Result<(), Status> {
        let (target, token) = (self.target.as_str(), self.token.as_str());
        match self.write {
            Write::CreateUser => {
                caller
                    .users()
                    .create_user(caller.req(proto::CreateUserRequest {
                        email: self.email.clone(),
                        role: Role::NanoUser as i32,
                        password: PASSWORD.into(),
                    }))
                    .await?;
            }
            Write::CreateInvite => {
                caller
                    .users()
                    .create_invite(caller.req(proto::CreateInviteRequest {
                        email: self.email.clone(),
                        role: Role::NanoUser as i32,
                        ttl: None,
                    }))
                    .await?;
            }
            Write::RevokeInvite => {
                caller
                    .users()
                    .revoke_invite(caller.req(proto::RevokeInviteRequest {
                        invite_id: token.into(),
                    }))
                    .await?;
            }
            Write::UpdateUserRole => {
                let response = caller
                    .users()
                    .update_user_role(caller.req(proto::UpdateUserRoleRequest {
                        user_id: target.into(),
                        role: Role::NanoReadOnly as i32,
                        etag: String::new(),
                    }))
                    .await?;
                assert!(response.into_inner().changed, "the role changed");
            }
            Write::AskDeleteUser | Write::ConfirmDeleteUser => {
                caller.delete_user(target, token).await?;
            }
            Write::AskRenewTokenKey | Write::ConfirmRenewTokenKey => {
                caller.renew_token_key(target, token).await?;
            }
            Write::UpdateOrganisation => {
                caller
                    .organisations()
                    .update_organisation(caller.req(rename_organisation("Renamed")))
                    .await?;
            }
            Write::AskRotateApiKey | Write::ConfirmRotateApiKey => {
                caller.rotate_api_key(token).await?;
            }
            Write::IssuePlaybackToken => {
                caller
                    .playback()
                    .issue_playback_token(caller.req(for_streams(&["live"])))
                    .await?;
            }
            Write::RevokePlaybackToken => {
                caller
                    .playback()
                    .revoke_playback_token(caller.req(proto::RevokePlaybackTokenRequest {
                        target: Some(Target::TokenId(token.into())),
                    }))
                    .await?;
            }
            Write::RotateSigningKey => {
                caller
                    .playback()
                    .rotate_signing_key(caller.req(proto::RotateSigningKeyRequest {
                        algorithm: proto::SigningAlgorithm::Eddsa as i32,
                        ..Default::default()
                    }))
                    .await?;
            }
            Write::AcceptInvite => {
                AuthServiceClient::new(caller.channel.clone())
                    .accept_invite(proto::AcceptInviteRequest {
                        invite_token: token.into(),
                        password: PASSWORD.into(),
                    })
                    .await?;
            }
            Write::Login => {
                AuthServiceClient::new(caller.channel.clone())
                    .login(proto::LoginRequest {
                        email: self.admin_email.clone(),
                        password: ADMIN_PASSWORD.into(),
                        organisation_id: String::new(),
                    })
                    .await?;
            }
            Write::Refresh => {
                AuthServiceClient::new(caller.channel.clone())
                    .refresh(proto::RefreshRequest {
                        refresh_token: token.into(),
                    })
                    .await?;
            }
            Write::Logout => {
                AuthServiceClient::new(caller.channel.clone())
                    .logout(caller.req(proto::LogoutRequest {}))
                    .await?;
            }
            Write::RevokeSession => {
                proto::session_service_client::SessionServiceClient::new(caller.channel.clone())
                    .revoke_session(caller.req(proto::RevokeSessionRequest {
                        session_id: token.into(),
                    }))
                    .await?;
            }
            Write::ChangePassword => {
                AuthServiceClient::new(caller.channel.clone())
                    .change_password(caller.req(proto::ChangePasswordRequest {
                        current_password: ADMIN_PASSWORD.into(),
                        new_password: ADMIN_PASSWORD.into(),
                    }))
                    .await?;
            }
            Write::ResetPassword => {
                AuthServiceClient::new(caller.channel.clone())
                    .reset_password(proto::ResetPasswordRequest {
                        reset_token: token.into(),
                        new_password: ADMIN_PASSWORD.into(),
                    })
                    .await?;
            }
            Write::CreateApiToken => {
                let Credential::Token(access) = &caller.credential else {
                    panic!("CreateApiToken needs a signed-in caller");
                };
                create_api_token(&caller.channel, access, &[]).await?;
            }
            Write::RevokeApiToken => {
                proto::api_token_service_client::ApiTokenServiceClient::new(caller.channel.clone())
                    .revoke_api_token(caller.req(proto::RevokeApiTokenRequest {
                        api_token_id: token.into(),
                    }))
                    .await?;
            }
            Write::AskSuspendUser | Write::ConfirmSuspendUser => {
                caller.suspend_user(target, token).await?;
            }
            Write::ReactivateUser => {
                let user = caller
                    .users()
                    .reactivate_user(caller.req(proto::ReactivateUserRequest {
                        user_id: target.into(),
                        etag: String::new(),
                    }))
                    .await?
                    .into_inner()
                    .user
                    .expect("the user");
                assert_eq!(user.state, proto::UserState::Active as i32);
            }
        }
        Ok(())
    }

    /// [`Self::run`], bounded in time.
    async fn run_bounded(&self, caller: &Caller) -> Result<(), Status> {
        tokio::time::timeout(CALL_BOUND, self.run(caller))
            .await
            .unwrap_or_else(|_| panic!("{:?} took longer than {CALL_BOUND:?}", self.write))
    }
}

/// What the test does to the caller while the write waits for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// Nothing: the control case.
    Nothing,
    /// The caller's user is deleted.
    DeleteUser,
    /// The caller's user gets a new tokenKey.
    RenewTokenKey,
    /// The caller's user becomes nanoReadOnly; its tokenKey stays.
    Demote,
    /// The organisation's API key is replaced.
    RotateApiKey,
    /// Every session of the caller's user ends (logout, revocation).
    EndSessions,
    /// The caller's user is suspended, and only that: its tokenKey stays,
    /// so the state alone must refuse.
    Suspend,
    /// The caller's personal API tokens are revoked.
    RevokeApiTokens,
}

impl Revocation {
    async fn apply(self, tx: &tokio_postgres::Client, org: &Org) {
        let (sql, id) = match self {
            Revocation::Nothing => return,
            Revocation::DeleteUser => ("DELETE FROM users WHERE id = $1", org.admin_id),
            Revocation::RenewTokenKey => (
                "UPDATE users SET token_key = gen_random_uuid(), version = version + 1, \
                 updated_at = now() WHERE id = $1",
                org.admin_id,
            ),
            Revocation::Demote => (
                "UPDATE users SET role = 'nanoReadOnly', version = version + 1, \
                 updated_at = now() WHERE id = $1",
                org.admin_id,
            ),
            Revocation::EndSessions => (
                "UPDATE sessions SET ended_at = now(), end_reason = 'revoked' \
                 WHERE user_id = $1 AND ended_at IS NULL",
                org.admin_id,
            ),
            Revocation::Suspend => (
                "UPDATE users SET state = 'suspended', version = version + 1, \
                 updated_at = now() WHERE id = $1",
                org.admin_id,
            ),
            Revocation::RevokeApiTokens => (
                "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
                org.admin_id,
            ),
            Revocation::RotateApiKey => (
                "UPDATE organisations SET api_key_hash = sha256(gen_random_uuid()::text::bytea), \
                 api_key_fingerprint = 'rotatedbysql', api_key_rotated_at = now(), \
                 version = version + 1, updated_at = now() WHERE id = $1",
                org.id,
            ),
        };
        let changed = tx
            .execute(sql, &[&id])
            .await
            .unwrap_or_else(|e| panic!("{self:?}: {e}"));
        assert!(changed >= 1, "{self:?} changed a row");
    }
}

/// The exact refusal of `write` by `kind` after `revocation`; None: it
/// succeeds.
fn expected(
    write: Write,
    kind: CallerKind,
    revocation: Revocation,
) -> Option<(Code, &'static str)> {
    if write == Write::AcceptInvite {
        // The invite dies with its creator's authority (existence and
        // users.invite, or the API key being current), not with a renewal
        // of the creator's tokenKey or the end of the creator's sessions.
        return match revocation {
            Revocation::Nothing
            | Revocation::RenewTokenKey
            | Revocation::EndSessions
            | Revocation::RevokeApiTokens => None,
            Revocation::DeleteUser
            | Revocation::Demote
            | Revocation::RotateApiKey
            | Revocation::Suspend => Some((Code::Unauthenticated, "INVITE_INVALID")),
        };
    }
    let unauthenticated = |reason| Some((Code::Unauthenticated, reason));
    match (write, revocation) {
        (_, Revocation::Nothing) => return None,
        // Signing in needs only the user to exist, active.
        (Write::Login, Revocation::DeleteUser | Revocation::Suspend) => {
            return unauthenticated("LOGIN_FAILED");
        }
        (Write::Login, _) => return None,
        // A refresh needs its session live, with the user's tokenKey, and
        // the user active.
        (Write::Refresh, Revocation::Demote) => return None,
        (Write::Refresh, _) => return unauthenticated("REFRESH_TOKEN_INVALID"),
        // A reset needs only its user, active; it renews the tokenKey itself.
        (Write::ResetPassword, Revocation::DeleteUser | Revocation::Suspend) => {
            return unauthenticated("RESET_TOKEN_INVALID");
        }
        (Write::ResetPassword, _) => return None,
        // A signed-in caller's session does not depend on its API tokens.
        (_, Revocation::RevokeApiTokens) if kind != CallerKind::ApiToken => return None,
        // One's own session, password and tokens need no permission (the
        // token asks for the whole role, whatever it is at commit).
        (Write::Logout | Write::ChangePassword | Write::CreateApiToken, Revocation::Demote) => {
            return None;
        }
        _ => {}
    }
    match revocation {
        Revocation::Nothing => None,
        // A personal API token has no session.
        Revocation::EndSessions if kind == CallerKind::ApiToken => None,
        Revocation::DeleteUser
        | Revocation::RenewTokenKey
        | Revocation::EndSessions
        | Revocation::Suspend
        | Revocation::RevokeApiTokens => Some((Code::Unauthenticated, "TOKEN_REVOKED")),
        Revocation::Demote => Some((Code::PermissionDenied, "PERMISSION_MISSING")),
        Revocation::RotateApiKey => Some((Code::Unauthenticated, "API_KEY_INVALID")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerKind {
    /// The organisation's first nanoAdmin, signed in.
    Admin,
    /// The organisation API key.
    ApiKey,
    /// A personal API token of the first nanoAdmin, for the whole role.
    ApiToken,
}

/// One case, in an organisation of its own.
async fn run_case(
    server: &TestServer,
    channel: &Channel,
    number: usize,
    write: Write,
    kind: CallerKind,
    revocation: Revocation,
) {
    let case = format!("{write:?} ({}) by {kind:?}, {revocation:?}", write.rpc());
    let org = create_org(&server.db, &format!("Case{number}")).await;
    make_secure(&server.db, org.id).await;
    let target = insert_user(
        &server.db,
        org.id,
        &format!("target@case{number}.example.com"),
        "nanoUser",
    )
    .await;
    let credential = match kind {
        CallerKind::Admin => {
            Credential::Token(login(channel, &org.admin_email, ADMIN_PASSWORD).await)
        }
        CallerKind::ApiKey => Credential::ApiKey(org.api_key.clone()),
        CallerKind::ApiToken => {
            let access = login(channel, &org.admin_email, ADMIN_PASSWORD).await;
            let created = create_api_token(channel, &access, &[])
                .await
                .expect("the admin's API token");
            Credential::Token(created.token)
        }
    };
    let caller = Caller {
        channel: channel.clone(),
        credential,
    };
    let prepared = Prepared::arrange(write, &caller, &server.db, &org, target, number).await;

    let lock = OrgLock::take(&server.db, org.id).await;
    let mut call = tokio::spawn({
        let (prepared, caller) = (prepared.clone(), caller.clone());
        async move { prepared.run_bounded(&caller).await }
    });
    lock.until_queued(&mut call, &case).await;
    revocation.apply(lock.tx(), &org).await;
    // The organisation's rows as the revocation leaves them.
    let revoked = dump_org_on(lock.tx(), org.id).await;
    lock.commit().await;
    let result = call.await.expect("the call's task");
    let after = dump_org(&server.db, org.id).await;

    match expected(write, kind, revocation) {
        None => {
            if let Err(status) = result {
                panic!("{case}: expected OK, got {status:?}");
            }
            assert_ne!(revoked, after, "{case}: the write wrote nothing");
        }
        Some((code, reason)) => {
            let status = match result {
                Ok(()) => panic!("{case}: expected {code:?} {reason}, got OK"),
                Err(status) => status,
            };
            let got = status.get_details_error_info().map(|info| info.reason);
            assert_eq!(
                (status.code(), got.as_deref()),
                (code, Some(reason)),
                "{case}: {status:?}"
            );
            assert_same(&revoked, &after, &format!("{case}: refused"));
            if revocation == Revocation::RenewTokenKey && write != Write::Refresh {
                // Nothing was half done nor used up (the confirmation of a
                // second step): signed in again, the same write succeeds.
                let again = Caller {
                    channel: channel.clone(),
                    credential: Credential::Token(
                        login(channel, &org.admin_email, ADMIN_PASSWORD).await,
                    ),
                };
                if let Err(status) = prepared.run_bounded(&again).await {
                    panic!("{case}: signed in again, the write failed: {status:?}");
                }
            }
        }
    }
}

/// Runs every write with each revocation, one after the other (the lock
/// watch is per database, and cases must not overlap), and reports every
/// failing case at once.
async fn run_cases(kind: CallerKind, revocations: &[Revocation]) {
    // Many sign-ins from one address in a minute: no login rate limits. The
    // uses of API tokens are not written during the cases (an hour between
    // writes): they would change the rows a refused write must leave alone.
    let server = TestServer::start_with(&[
        "--login-rate-per-peer",
        "0",
        "--login-rate-per-email",
        "0",
        "--api-token-usage-flush-ms",
        "3600000",
    ])
    .await;
    let server = std::sync::Arc::new(server);
    let channel = server.channel().await;
    let mut failures = Vec::new();
    let mut number = 0;
    for write in Write::ALL.into_iter().filter(|w| w.made_by(kind)) {
        for &revocation in revocations {
            number += 1;
            let case = tokio::spawn({
                let (server, channel) = (server.clone(), channel.clone());
                async move { run_case(&server, &channel, number, write, kind, revocation).await }
            });
            if let Err(error) = case.await {
                let message = error
                    .try_into_panic()
                    .ok()
                    .and_then(|panic| {
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    })
                    .unwrap_or_else(|| "the case was cancelled".to_owned());
                failures.push(format!("{write:?} by {kind:?}, {revocation:?}: {message}"));
            }
        }
    }
    eprintln!(
        "commit_recheck: {number} cases by {kind:?}, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {number} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rechecks_a_signed_in_caller_at_commit() {
    run_cases(
        CallerKind::Admin,
        &[
            Revocation::Nothing,
            Revocation::DeleteUser,
            Revocation::RenewTokenKey,
            Revocation::Demote,
            Revocation::EndSessions,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rechecks_a_suspension_of_a_signed_in_caller_at_commit() {
    run_cases(CallerKind::Admin, &[Revocation::Suspend]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rechecks_a_personal_api_token_at_commit() {
    run_cases(
        CallerKind::ApiToken,
        &[
            Revocation::Nothing,
            Revocation::DeleteUser,
            Revocation::RenewTokenKey,
            Revocation::Demote,
            Revocation::Suspend,
            Revocation::RevokeApiTokens,
            Revocation::EndSessions,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rechecks_an_api_key_caller_at_commit() {
    run_cases(
        CallerKind::ApiKey,
        &[Revocation::Nothing, Revocation::RotateApiKey],
    )
    .await;
}
