//! Bad input through the API: every string field of every request (the list
//! comes from the contract's descriptors) has a length limit (a 10 KiB value
//! is refused, with nothing changed); no string holds NUL and no timestamp
//! or duration lies outside the contract's range, in any field of any
//! request; SQL-looking text is stored and returned verbatim.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};
use tonic::{Code, Status};
use usermgmt::proto::{
    self, Role, VerifyFailureReason, audit_service_client::AuditServiceClient,
    auth_service_client::AuthServiceClient, credential::Kind,
    organisation_service_client::OrganisationServiceClient, playback_scope::Scope,
    playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target,
};

use crate::playback::make_secure;
use crate::support::contract::{call_raw, is_text, is_time, request_fields};
use crate::support::dump::{assert_same, dump_all};
use crate::support::*;

/// How an RPC answered: OK, or (Authorize, VerifyPlaybackToken) a refusal
/// in its response.
#[derive(Debug, PartialEq, Eq)]
enum Answered {
    Ok,
    /// Authorize's refusal, with its reason.
    Denied(String),
    /// VerifyPlaybackToken's refusal.
    NotValid(VerifyFailureReason),
}

type Outcome = Pin<Box<dyn Future<Output = Result<Answered, Status>> + Send>>;

/// One call as an [`Outcome`]: `call!(client, method, request)`.
macro_rules! call {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client;
        let request = $request;
        Box::pin(async move {
            let answer = client.$method(request).await?.into_inner();
            Ok(Answer::answered(&answer))
        }) as Outcome
    }};
}

trait Answer {
    fn answered(&self) -> Answered {
        Answered::Ok
    }
}

impl Answer for proto::AuthorizeResponse {
    fn answered(&self) -> Answered {
        if self.allowed {
            Answered::Ok
        } else {
            Answered::Denied(self.reason.clone())
        }
    }
}

impl Answer for proto::AuthorizeBatchResponse {
    fn answered(&self) -> Answered {
        match self.decisions.iter().find(|d| !d.allowed) {
            Some(denied) => Answered::Denied(denied.reason.clone()),
            None => Answered::Ok,
        }
    }
}

impl Answer for proto::VerifyPlaybackTokenResponse {
    fn answered(&self) -> Answered {
        if self.valid {
            Answered::Ok
        } else {
            Answered::NotValid(self.reason())
        }
    }
}

macro_rules! answered_by_ok {
    ($($t:ty),*) => { $(impl Answer for $t {})* };
}

answered_by_ok!(
    proto::CreateApiTokenResponse,
    proto::ListApiTokensResponse,
    proto::RevokeApiTokenResponse,
    proto::SuspendUserResponse,
    proto::ReactivateUserResponse,
    proto::LoginResponse,
    proto::RefreshResponse,
    proto::ChangePasswordResponse,
    proto::RequestPasswordResetResponse,
    proto::ResetPasswordResponse,
    proto::ListSessionsResponse,
    proto::RevokeSessionResponse,
    proto::AcceptInviteResponse,
    proto::GetUserResponse,
    proto::ListUsersResponse,
    proto::CreateUserResponse,
    proto::CreateInviteResponse,
    proto::ListInvitesResponse,
    proto::RevokeInviteResponse,
    proto::UpdateUserRoleResponse,
    proto::DeleteUserResponse,
    proto::RenewTokenKeyResponse,
    proto::ListAuditEventsResponse,
    proto::UpdateOrganisationResponse,
    proto::RotateApiKeyResponse,
    proto::IssuePlaybackTokenResponse,
    proto::RevokePlaybackTokenResponse,
    proto::ListChangesResponse,
    tonic::Streaming<proto::WatchChangesResponse>
);

/// What a 10 KiB value of a field gets.
#[derive(Debug)]
enum Expect {
    /// INVALID_ARGUMENT, with a violation of exactly this field.
    Invalid(&'static str),
    /// A credential the contract refuses in the response: this reason.
    Denied(&'static str),
    NotValid(VerifyFailureReason),
    /// An output-only field, ignored by the update (which succeeds without it).
    Ignored,
}

/// Whether one case's answer is what it expects; if not, what it was.
fn check(expect: &Expect, result: Result<Answered, Status>) -> Result<(), String> {
    match (expect, result) {
        (Expect::Invalid(name), Err(status))
            if status.code() == Code::InvalidArgument && violated_fields(&status) == [*name] =>
        {
            Ok(())
        }
        (Expect::Denied(reason), Ok(Answered::Denied(got))) if got == *reason => Ok(()),
        (Expect::NotValid(reason), Ok(Answered::NotValid(got))) if got == *reason => Ok(()),
        (Expect::Ignored, Ok(Answered::Ok)) => Ok(()),
        (expect, got) => Err(format!("expected {expect:?}, got {got:?}")),
    }
}

/// What the length cases need: an organisation with its admin and a user,
/// a service key, a genuine playback token and the too-long values.
struct LengthFixture {
    channel: tonic::transport::Channel,
    org: Org,
    admin: Session,
    user: proto::User,
    service_key: String,
    genuine: String,
    long: String,
    long_email: String,
}

/// One case per string field: its `Message.field`, what is expected, the call.
type LengthCase = (&'static str, Expect, Outcome);

/// The length cases of AuthService, Authorize and AuthorizeBatch included.
fn auth_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        org,
        admin,
        service_key,
        long,
        long_email,
        ..
    } = fixture;
    let auth = || AuthServiceClient::new(channel.clone());
    let login = |email: &str, password: &str, org: &str| proto::LoginRequest {
        email: email.into(),
        password: password.into(),
        organisation_id: org.into(),
    };
    let authorize = |credential: Kind, permission: &str, org: &str| {
        with_header(
            proto::AuthorizeRequest {
                credential: Some(proto::Credential {
                    kind: Some(credential),
                }),
                permission: permission.into(),
                organisation_id: org.into(),
            },
            "x-usermgmt-service-key",
            service_key,
        )
    };
    let batch = |permission: &str, org: &str| {
        with_header(
            proto::AuthorizeBatchRequest {
                credential: Some(proto::Credential {
                    kind: Some(Kind::AccessToken(admin.token.clone())),
                }),
                permissions: vec![permission.into()],
                organisation_id: org.into(),
            },
            "x-usermgmt-service-key",
            service_key,
        )
    };
    vec![
        (
            "LoginRequest.email",
            Expect::Invalid("email"),
            call!(auth(), login, login(long_email, PASSWORD, "")),
        ),
        (
            "LoginRequest.password",
            Expect::Invalid("password"),
            call!(auth(), login, login(&org.admin_email, long, "")),
        ),
        (
            "LoginRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(auth(), login, login(&org.admin_email, PASSWORD, long)),
        ),
        (
            "AcceptInviteRequest.invite_token",
            Expect::Invalid("invite_token"),
            call!(
                auth(),
                accept_invite,
                proto::AcceptInviteRequest {
                    invite_token: long.clone(),
                    password: PASSWORD.into(),
                }
            ),
        ),
        (
            "AcceptInviteRequest.password",
            Expect::Invalid("password"),
            call!(
                auth(),
                accept_invite,
                proto::AcceptInviteRequest {
                    invite_token: "umi_x".into(),
                    password: long.clone(),
                }
            ),
        ),
        (
            "RefreshRequest.refresh_token",
            Expect::Invalid("refresh_token"),
            call!(
                auth(),
                refresh,
                proto::RefreshRequest {
                    refresh_token: long.clone(),
                }
            ),
        ),
        (
            "ChangePasswordRequest.current_password",
            Expect::Invalid("current_password"),
            call!(
                auth(),
                change_password,
                admin.req(proto::ChangePasswordRequest {
                    current_password: long.clone(),
                    new_password: PASSWORD.into(),
                })
            ),
        ),
        (
            "ChangePasswordRequest.new_password",
            Expect::Invalid("new_password"),
            call!(
                auth(),
                change_password,
                admin.req(proto::ChangePasswordRequest {
                    current_password: ADMIN_PASSWORD.into(),
                    new_password: long.clone(),
                })
            ),
        ),
        (
            "RequestPasswordResetRequest.email",
            Expect::Invalid("email"),
            call!(
                auth(),
                request_password_reset,
                proto::RequestPasswordResetRequest {
                    email: long_email.clone(),
                    organisation_id: String::new(),
                }
            ),
        ),
        (
            "RequestPasswordResetRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(
                auth(),
                request_password_reset,
                proto::RequestPasswordResetRequest {
                    email: org.admin_email.clone(),
                    organisation_id: long.clone(),
                }
            ),
        ),
        (
            "ResetPasswordRequest.reset_token",
            Expect::Invalid("reset_token"),
            call!(
                auth(),
                reset_password,
                proto::ResetPasswordRequest {
                    reset_token: long.clone(),
                    new_password: PASSWORD.into(),
                }
            ),
        ),
        (
            "ResetPasswordRequest.new_password",
            Expect::Invalid("new_password"),
            call!(
                auth(),
                reset_password,
                proto::ResetPasswordRequest {
                    reset_token: "ump_x".into(),
                    new_password: long.clone(),
                }
            ),
        ),
        (
            "Credential.access_token",
            Expect::Denied("CREDENTIALS_MALFORMED"),
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(long.clone()), "users.read", "")
            ),
        ),
        (
            "Credential.api_key",
            Expect::Denied("CREDENTIALS_MALFORMED"),
            call!(
                auth(),
                authorize,
                authorize(Kind::ApiKey(long.clone()), "users.read", "")
            ),
        ),
        (
            "AuthorizeRequest.permission",
            Expect::Invalid("permission"),
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(admin.token.clone()), long, "")
            ),
        ),
        (
            "AuthorizeRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(admin.token.clone()), "users.read", long,)
            ),
        ),
        (
            "AuthorizeBatchRequest.permissions",
            Expect::Invalid("permissions[0]"),
            call!(auth(), authorize_batch, batch(long, "")),
        ),
        (
            "AuthorizeBatchRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(auth(), authorize_batch, batch("users.read", long)),
        ),
    ]
}

/// The length cases of SessionService.
fn session_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        long,
        ..
    } = fixture;
    let sessions = || proto::session_service_client::SessionServiceClient::new(channel.clone());
    vec![
        (
            "ListSessionsRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                sessions(),
                list_sessions,
                admin.req(proto::ListSessionsRequest {
                    user_id: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "ListSessionsRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                sessions(),
                list_sessions,
                admin.req(proto::ListSessionsRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "RevokeSessionRequest.session_id",
            Expect::Invalid("session_id"),
            call!(
                sessions(),
                revoke_session,
                admin.req(proto::RevokeSessionRequest {
                    session_id: long.clone(),
                })
            ),
        ),
    ]
}

/// The length cases of ApiTokenService.
fn api_token_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        long,
        ..
    } = fixture;
    let api_tokens =
        || proto::api_token_service_client::ApiTokenServiceClient::new(channel.clone());
    let token_request = |permissions: &[&str]| proto::CreateApiTokenRequest {
        name: "script".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: now_seconds() + 3_600,
            nanos: 0,
        }),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    };
    vec![
        (
            "CreateApiTokenRequest.name",
            Expect::Invalid("name"),
            call!(
                api_tokens(),
                create_api_token,
                admin.req(proto::CreateApiTokenRequest {
                    name: long.clone(),
                    ..token_request(&[])
                })
            ),
        ),
        (
            "CreateApiTokenRequest.permissions",
            Expect::Invalid("permissions[0]"),
            call!(
                api_tokens(),
                create_api_token,
                admin.req(token_request(&[long.as_str()]))
            ),
        ),
        (
            "ListApiTokensRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                api_tokens(),
                list_api_tokens,
                admin.req(proto::ListApiTokensRequest {
                    user_id: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "ListApiTokensRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                api_tokens(),
                list_api_tokens,
                admin.req(proto::ListApiTokensRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "RevokeApiTokenRequest.api_token_id",
            Expect::Invalid("api_token_id"),
            call!(
                api_tokens(),
                revoke_api_token,
                admin.req(proto::RevokeApiTokenRequest {
                    api_token_id: long.clone(),
                })
            ),
        ),
    ]
}

/// The length cases of UserService.
fn user_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        admin,
        user,
        long,
        long_email,
        ..
    } = fixture;
    let users = || admin.users();
    let uid = user.id.clone();
    vec![
        (
            "ListUsersRequest.email_prefix",
            Expect::Invalid("email_prefix"),
            call!(
                users(),
                list_users,
                admin.req(proto::ListUsersRequest {
                    email_prefix: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "SuspendUserRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                suspend_user,
                admin.req(proto::SuspendUserRequest {
                    user_id: long.clone(),
                    confirmation_token: String::new(),
                })
            ),
        ),
        (
            "SuspendUserRequest.confirmation_token",
            Expect::Invalid("confirmation_token"),
            call!(
                users(),
                suspend_user,
                admin.req(proto::SuspendUserRequest {
                    user_id: user.id.clone(),
                    confirmation_token: long.clone(),
                })
            ),
        ),
        (
            "ReactivateUserRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                reactivate_user,
                admin.req(proto::ReactivateUserRequest {
                    user_id: long.clone(),
                    etag: String::new(),
                })
            ),
        ),
        (
            "ReactivateUserRequest.etag",
            Expect::Invalid("etag"),
            call!(
                users(),
                reactivate_user,
                admin.req(proto::ReactivateUserRequest {
                    user_id: user.id.clone(),
                    etag: long.clone(),
                })
            ),
        ),
        (
            "GetUserRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                get_user,
                admin.req(proto::GetUserRequest {
                    user_id: long.clone(),
                })
            ),
        ),
        (
            "ListUsersRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                users(),
                list_users,
                admin.req(proto::ListUsersRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "CreateUserRequest.email",
            Expect::Invalid("email"),
            call!(
                users(),
                create_user,
                admin.req(proto::CreateUserRequest {
                    email: long_email.clone(),
                    role: Role::NanoUser as i32,
                    password: PASSWORD.into(),
                })
            ),
        ),
        (
            "CreateUserRequest.password",
            Expect::Invalid("password"),
            call!(
                users(),
                create_user,
                admin.req(proto::CreateUserRequest {
                    email: "new@acme.example.com".into(),
                    role: Role::NanoUser as i32,
                    password: long.clone(),
                })
            ),
        ),
        (
            "CreateInviteRequest.email",
            Expect::Invalid("email"),
            call!(
                users(),
                create_invite,
                admin.req(proto::CreateInviteRequest {
                    email: long_email.clone(),
                    role: Role::NanoUser as i32,
                    ttl: None,
                })
            ),
        ),
        (
            "ListInvitesRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                users(),
                list_invites,
                admin.req(proto::ListInvitesRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "RevokeInviteRequest.invite_id",
            Expect::Invalid("invite_id"),
            call!(
                users(),
                revoke_invite,
                admin.req(proto::RevokeInviteRequest {
                    invite_id: long.clone(),
                })
            ),
        ),
        (
            "UpdateUserRoleRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                update_user_role,
                admin.req(proto::UpdateUserRoleRequest {
                    user_id: long.clone(),
                    role: Role::NanoReadOnly as i32,
                    etag: String::new(),
                })
            ),
        ),
        (
            "UpdateUserRoleRequest.etag",
            Expect::Invalid("etag"),
            call!(
                users(),
                update_user_role,
                admin.req(proto::UpdateUserRoleRequest {
                    user_id: uid.clone(),
                    role: Role::NanoReadOnly as i32,
                    etag: long.clone(),
                })
            ),
        ),
        (
            "DeleteUserRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                delete_user,
                admin.req(proto::DeleteUserRequest {
                    user_id: long.clone(),
                    confirmation_token: String::new(),
                })
            ),
        ),
        (
            "DeleteUserRequest.confirmation_token",
            Expect::Invalid("confirmation_token"),
            call!(
                users(),
                delete_user,
                admin.req(proto::DeleteUserRequest {
                    user_id: uid.clone(),
                    confirmation_token: long.clone(),
                })
            ),
        ),
        (
            "RenewTokenKeyRequest.user_id",
            Expect::Invalid("user_id"),
            call!(
                users(),
                renew_token_key,
                admin.req(proto::RenewTokenKeyRequest {
                    user_id: long.clone(),
                    confirmation_token: String::new(),
                })
            ),
        ),
        (
            "RenewTokenKeyRequest.confirmation_token",
            Expect::Invalid("confirmation_token"),
            call!(
                users(),
                renew_token_key,
                admin.req(proto::RenewTokenKeyRequest {
                    user_id: uid.clone(),
                    confirmation_token: long.clone(),
                })
            ),
        ),
    ]
}

/// The length cases of AuditService.
fn audit_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        long,
        ..
    } = fixture;
    let audit = || AuditServiceClient::new(channel.clone());
    let audit_req = |f: &dyn Fn(&mut proto::ListAuditEventsRequest)| {
        let mut r = proto::ListAuditEventsRequest::default();
        f(&mut r);
        admin.req(r)
    };
    vec![
        (
            "ListAuditEventsRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.page_token = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.actor",
            Expect::Invalid("actor"),
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.actor = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.target_id",
            Expect::Invalid("target_id"),
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.target_id = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.action",
            Expect::Invalid("action"),
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.action = long.clone())
            ),
        ),
    ]
}

/// The length cases of OrganisationService, with the output-only fields that UpdateOrganisation ignores (AIP-203).
fn organisation_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        long,
        ..
    } = fixture;
    let organisations = || OrganisationServiceClient::new(channel.clone());
    let update_org = |name: &str, etag: &str, path: &str| {
        admin.req(proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                name: name.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![path.into()],
            }),
        })
    };
    let mut cases: Vec<LengthCase> = vec![
        (
            "Organisation.name",
            Expect::Invalid("organisation.name"),
            call!(
                organisations(),
                update_organisation,
                update_org(long, "", "name")
            ),
        ),
        (
            "Organisation.etag",
            Expect::Invalid("organisation.etag"),
            call!(
                organisations(),
                update_organisation,
                update_org("Acme", long, "name")
            ),
        ),
        (
            "FieldMask.paths",
            Expect::Invalid("update_mask"),
            call!(
                organisations(),
                update_organisation,
                update_org("Acme", "", long)
            ),
        ),
        (
            "RotateApiKeyRequest.confirmation_token",
            Expect::Invalid("confirmation_token"),
            call!(
                organisations(),
                rotate_api_key,
                admin.req(proto::RotateApiKeyRequest {
                    confirmation_token: long.clone(),
                })
            ),
        ),
    ];
    // Output-only fields: UpdateOrganisation ignores them (AIP-203).
    for (field, set) in [
        (
            "Organisation.id",
            (|o: &mut proto::Organisation, v: String| o.id = v) as fn(&mut _, _),
        ),
        ("Organisation.api_key_fingerprint", |o, v| {
            o.api_key_fingerprint = v
        }),
    ] {
        let mut organisation = proto::Organisation {
            name: "Acme".into(),
            ..Default::default()
        };
        set(&mut organisation, long.clone());
        let request = admin.req(proto::UpdateOrganisationRequest {
            organisation: Some(organisation),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        });
        cases.push((
            field,
            Expect::Ignored,
            call!(organisations(), update_organisation, request),
        ));
    }
    cases
}

/// The length cases of PlaybackTokenService.
fn playback_token_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        genuine,
        long,
        ..
    } = fixture;
    let playback = || PlaybackTokenServiceClient::new(channel.clone());
    let restrictions = |f: &dyn Fn(&mut proto::PlaybackRestrictions)| {
        let mut r = proto::PlaybackRestrictions::default();
        f(&mut r);
        admin.req(proto::IssuePlaybackTokenRequest {
            scope: Some(proto::PlaybackScope {
                scope: Some(Scope::OrganisationWide(true)),
            }),
            restrictions: Some(r),
            ..Default::default()
        })
    };
    let issue_scope = |scope: Scope| {
        admin.req(proto::IssuePlaybackTokenRequest {
            scope: Some(proto::PlaybackScope { scope: Some(scope) }),
            ..Default::default()
        })
    };
    let verify = |token: &str, stream: &str, group: &str| proto::VerifyPlaybackTokenRequest {
        token: token.into(),
        stream: stream.into(),
        group_id: group.into(),
    };
    vec![
        (
            "StreamList.names",
            Expect::Invalid("scope.streams.names"),
            call!(
                playback(),
                issue_playback_token,
                issue_scope(Scope::Streams(proto::StreamList {
                    names: vec![long.clone()],
                },))
            ),
        ),
        (
            "PlaybackScope.group_id",
            Expect::Invalid("scope.group_id"),
            call!(
                playback(),
                issue_playback_token,
                issue_scope(Scope::GroupId(long.clone()))
            ),
        ),
        (
            "PlaybackRestrictions.domain",
            Expect::Invalid("restrictions.domain"),
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.domain = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.ip",
            Expect::Invalid("restrictions.ip"),
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.ip = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.tag",
            Expect::Invalid("restrictions.tag"),
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.tag = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.user",
            Expect::Invalid("restrictions.user"),
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.user = long.clone())
            ),
        ),
        (
            "VerifyPlaybackTokenRequest.token",
            Expect::NotValid(VerifyFailureReason::Malformed),
            call!(playback(), verify_playback_token, verify(long, "live", "")),
        ),
        (
            "VerifyPlaybackTokenRequest.stream",
            Expect::Invalid("stream"),
            call!(playback(), verify_playback_token, verify(genuine, long, "")),
        ),
        (
            "VerifyPlaybackTokenRequest.group_id",
            Expect::Invalid("group_id"),
            call!(playback(), verify_playback_token, verify(genuine, "", long)),
        ),
        (
            "RevokePlaybackTokenRequest.token",
            Expect::Invalid("token"),
            call!(
                playback(),
                revoke_playback_token,
                admin.req(proto::RevokePlaybackTokenRequest {
                    target: Some(Target::Token(long.clone())),
                })
            ),
        ),
        (
            "RevokePlaybackTokenRequest.token_id",
            Expect::Invalid("token_id"),
            call!(
                playback(),
                revoke_playback_token,
                admin.req(proto::RevokePlaybackTokenRequest {
                    target: Some(Target::TokenId(long.clone())),
                })
            ),
        ),
    ]
}

/// The length cases of ChangeService.
fn change_service_length_cases(fixture: &LengthFixture) -> Vec<LengthCase> {
    let LengthFixture {
        channel,
        admin,
        long,
        ..
    } = fixture;
    let feed = || proto::change_service_client::ChangeServiceClient::new(channel.clone());
    let list = |request: proto::ListChangesRequest| admin.req(request);
    let watch = |request: proto::WatchChangesRequest| admin.req(request);
    vec![
        (
            "ListChangesRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(
                feed(),
                list_changes,
                list(proto::ListChangesRequest {
                    organisation_id: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "ListChangesRequest.page_token",
            Expect::Invalid("page_token"),
            call!(
                feed(),
                list_changes,
                list(proto::ListChangesRequest {
                    page_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "ListChangesRequest.target_types",
            Expect::Invalid("target_types[0]"),
            call!(
                feed(),
                list_changes,
                list(proto::ListChangesRequest {
                    target_types: vec![long.clone()],
                    ..Default::default()
                })
            ),
        ),
        (
            "ListChangesRequest.target_ids",
            Expect::Invalid("target_ids[0]"),
            call!(
                feed(),
                list_changes,
                list(proto::ListChangesRequest {
                    target_ids: vec![long.clone()],
                    ..Default::default()
                })
            ),
        ),
        (
            "WatchChangesRequest.organisation_id",
            Expect::Invalid("organisation_id"),
            call!(
                feed(),
                watch_changes,
                watch(proto::WatchChangesRequest {
                    organisation_id: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "WatchChangesRequest.resume_token",
            Expect::Invalid("resume_token"),
            call!(
                feed(),
                watch_changes,
                watch(proto::WatchChangesRequest {
                    resume_token: long.clone(),
                    ..Default::default()
                })
            ),
        ),
        (
            "WatchChangesRequest.target_types",
            Expect::Invalid("target_types[0]"),
            call!(
                feed(),
                watch_changes,
                watch(proto::WatchChangesRequest {
                    target_types: vec![long.clone()],
                    ..Default::default()
                })
            ),
        ),
        (
            "WatchChangesRequest.target_ids",
            Expect::Invalid("target_ids[0]"),
            call!(
                feed(),
                watch_changes,
                watch(proto::WatchChangesRequest {
                    target_ids: vec![long.clone()],
                    ..Default::default()
                })
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_field_has_a_length_limit() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    make_secure(&server.db, org.id).await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let user = admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let service_key = register_service(&server.db, "streams").await;
    let genuine = crate::playback::issue(&admin, crate::playback::for_streams(&["live"]))
        .await
        .expect("issue")
        .token;
    let long = "x".repeat(10 * 1024);
    let long_email = format!("{}@example.com", "a".repeat(10 * 1024));
    let fixture = LengthFixture {
        channel,
        org,
        admin,
        user,
        service_key,
        genuine,
        long,
        long_email,
    };
    let cases: Vec<LengthCase> = [
        auth_service_length_cases(&fixture),
        session_service_length_cases(&fixture),
        api_token_service_length_cases(&fixture),
        user_service_length_cases(&fixture),
        audit_service_length_cases(&fixture),
        organisation_service_length_cases(&fixture),
        playback_token_service_length_cases(&fixture),
        change_service_length_cases(&fixture),
    ]
    .into_iter()
    .flatten()
    .collect();

    // Every string field of every request has its case, and every case is one.
    let contract: BTreeMap<String, String> = request_fields(is_text)
        .into_iter()
        .map(|path| (path.declared_as(), path.rpc))
        .collect();
    let named: Vec<&str> = cases.iter().map(|(field, ..)| *field).collect();
    for (field, rpc) in &contract {
        assert!(
            named.contains(&field.as_str()),
            "{field} (in {rpc}) has no case: give it a length limit and a case here"
        );
    }
    for field in &named {
        assert!(
            contract.contains_key(*field),
            "{field} is not a string field of a request"
        );
    }
    assert_eq!(named.len(), contract.len(), "a field has two cases");

    let before = dump_all(&server.db).await;
    let count = cases.len();
    let mut wrong = Vec::new();
    for (field, expect, outcome) in cases {
        if let Err(got) = check(&expect, outcome.await) {
            wrong.push(format!("{field}: {got}"));
        }
        assert_same(&before, &dump_all(&server.db).await, field);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!("{count} string fields refused at 10 KiB");
}

/// A timestamp or duration message with these seconds and nanos.
fn time_value(message: &prost_reflect::MessageDescriptor, seconds: i64, nanos: i32) -> Value {
    let mut time = DynamicMessage::new(message.clone());
    time.set_field_by_name("seconds", Value::I64(seconds));
    time.set_field_by_name("nanos", Value::I32(nanos));
    Value::Message(time)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_field_of_any_request_holds_nul_or_a_time_out_of_range() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    make_secure(&server.db, org.id).await;
    let channel = server.channel().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let service_key = register_service(&server.db, "streams").await;
    // Past the per-call check of every RPC: an admin's token, and the service
    // key that Authorize asks for.
    let metadata = [
        ("authorization", format!("Bearer {}", admin.token)),
        ("x-usermgmt-service-key", service_key),
    ];

    let mut cases: Vec<(String, String, String, Vec<u8>)> = Vec::new();
    for path in request_fields(is_text) {
        for text in ["a\0b", "\u{202E}\0"] {
            let request = path.request_with(Value::String(text.into()));
            cases.push((
                path.rpc.clone(),
                format!("{} = {text:?}", path.violation()),
                path.violation(),
                request.encode_to_vec(),
            ));
        }
    }
    let texts = cases.len();
    for path in request_fields(|f| f.kind().as_message().is_some_and(is_time)) {
        let time = path.fields.last().expect("a field").kind();
        let time = time.as_message().expect("a message");
        let values: &[(i64, i32)] = if time.name() == "Duration" {
            &[
                (i64::MAX, 0),
                (315_576_000_001, 0),
                (1, -1),
                (0, 1_000_000_000),
            ]
        } else {
            // Chrono's last second (where adding overflowed), one before
            // PostgreSQL's first, and nanos out of a second.
            &[
                (8_210_266_876_799, 0),
                (-100_000_000_000, 0),
                (0, -1),
                (i64::MIN, 0),
            ]
        };
        for (seconds, nanos) in values {
            let request = path.request_with(time_value(time, *seconds, *nanos));
            cases.push((
                path.rpc.clone(),
                format!("{} = {seconds}s {nanos}ns", path.violation()),
                path.violation(),
                request.encode_to_vec(),
            ));
        }
    }
    assert!(texts >= 2 * 40, "{texts} cases of text");
    assert!(
        cases.len() - texts >= 4 * 5,
        "{} cases of time",
        cases.len() - texts
    );

    let before = dump_all(&server.db).await;
    let mut wrong = Vec::new();
    for (rpc, case, field, request) in &cases {
        match call_raw(&channel, rpc, request.clone(), &metadata).await {
            Err(status)
                if status.code() == Code::InvalidArgument
                    && violated_fields(&status) == [field.clone()] => {}
            Err(status) => wrong.push(format!(
                "{rpc} {case}: {:?} {:?} {}",
                status.code(),
                violated_fields(&status),
                status.message()
            )),
            Ok(_) => wrong.push(format!("{rpc} {case}: accepted")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answered otherwise than INVALID_ARGUMENT for the field:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_same(&before, &dump_all(&server.db).await, "refused requests");
    eprintln!(
        "{} values refused in every field of every request",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_names_are_stored_and_returned_verbatim() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    for name in [
        "Robert'); DROP TABLE users;--",
        "x' OR '1'='1",
        "\"; DELETE FROM organisations; --",
        "100% _literal_ \\ backslash",
        "$1 $$ E'\\x00' ::text",
    ] {
        organisations
            .update_organisation(admin.req(rename_organisation(name)))
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"));
        let got = organisations
            .get_organisation(admin.req(proto::GetOrganisationRequest {}))
            .await
            .expect("get")
            .into_inner()
            .organisation
            .expect("organisation");
        assert_eq!(got.name, name);
        let events = admin
            .audit_events(proto::ListAuditEventsRequest {
                action: "organisation.update".into(),
                ..Default::default()
            })
            .await
            .expect("audit");
        assert!(
            events.iter().any(|e| e
                .after
                .contains(&name.replace('\\', "\\\\").replace('"', "\\\""))
                || e.target_label == name),
            "{name} in the audit log: {events:?}"
        );
    }
    let users: i64 = server
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(users, 1, "the tables are whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_emails_have_one_form() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    // Composed é, then decomposed and upper case: the same address.
    let jose = admin
        .create_user("jos\u{e9}@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    assert_eq!(jose.email, "jos\u{e9}@acme.example.com");
    assert_status(
        admin
            .create_user("JOSE\u{301}@ACME.example.com", Role::NanoUser)
            .await,
        Code::AlreadyExists,
        None,
    );
    let token = login(&channel, "JOSE\u{301}@Acme.Example.Com", PASSWORD).await;
    assert!(!token.is_empty());

    // A Cyrillic а is another address: its own user, who is not alice.
    let alice = admin
        .create_user("alice@acme.example.com", Role::NanoUser)
        .await
        .expect("alice");
    let lookalike = admin
        .create_user("\u{430}lice@acme.example.com", Role::NanoReadOnly)
        .await
        .expect("a lookalike is a different address");
    assert_ne!(alice.id, lookalike.id);

    // Invisible characters and trailing dots are refused, not dropped.
    for email in [
        "al\u{200B}ice@acme.example.com",
        "alice\u{202E}@acme.example.com",
        "alice@acme.example.com.",
        "alice@acme.example.com..",
    ] {
        let status = assert_status(
            admin.create_user(email, Role::NanoUser).await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(violated_fields(&status), ["email"], "{email:?}");
    }
}
