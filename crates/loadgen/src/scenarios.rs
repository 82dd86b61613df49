//! What each scenario sends, and what counts as its success.

use std::sync::atomic::Ordering;

use clap::ValueEnum;
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use usermgmt_proto as proto;
use usermgmt_proto::auth_service_client::AuthServiceClient;
use usermgmt_proto::playback_token_service_client::PlaybackTokenServiceClient;
use usermgmt_proto::user_service_client::UserServiceClient;

use crate::measure::nanos;
use crate::organisations::{login_request, playback_request};
use crate::session::Session;

/// One kind of call to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Scenario {
    /// `grpc.health.v1.Health/Check` of the whole server: no credentials, no
    /// database; the baseline every other scenario is compared with.
    Health,
    /// `UserService/GetUser` of the signed-in user.
    GetUser,
    /// `AuthService/WhoAmI`.
    WhoAmI,
    /// `AuthService/WhoAmI`, each call as the next of `--users` users.
    WhoAmIUsers,
    /// `AuthService/Authorize` of the signed-in user's access token
    /// (needs `--service-key`).
    AuthorizeToken,
    /// `AuthService/Authorize` of the organisation API key (needs
    /// `--service-key` and `--api-key`).
    AuthorizeApiKey,
    /// `PlaybackTokenService/VerifyPlaybackToken` of a token issued at start
    /// (the signed-in user's organisation must be a secure organisation).
    VerifyPlayback,
    /// `AuthService/Authorize` (token) while 32 more tasks log in back to
    /// back (argon2id), which are not measured.
    AuthorizeDuringLogins,
    /// `UserService/ListUsers`, first page of 100.
    ListUsersFirst,
    /// `UserService/ListUsers`, page 1000 of 100 (its token is found once,
    /// before measuring, by walking the pages).
    ListUsersDeep,
    /// `UserService/ListUsers`, first page of 100 nanoUsers (role filter).
    ListUsersRole,
    /// `UserService/ListUsers`, first page of 100 users whose email starts
    /// with `--email-prefix`.
    ListUsersPrefix,
    /// `UserService/GetUser` of the signed-in user, with a personal API token
    /// it created at start (in the `--token-header` header).
    GetUserApiToken,
    /// `AuthService/Authorize` of that personal API token (needs
    /// `--service-key`).
    AuthorizeApiToken,
    /// `UserService/UpdateUserRole` of one target user (see
    /// `--target-user-id`), alternately to nanoReadOnly and to nanoUser. A
    /// write: it takes the organisation's row lock, renews the target's
    /// tokenKey and waits for every replica's cache to settle. A call that
    /// changes nothing (a concurrent call had set that role first) is counted
    /// apart, not as ok.
    UpdateUserRole,
    /// `UserService/CreateInvite` of a fresh email, then
    /// `UserService/RevokeInvite` of that invite: one iteration is both calls
    /// (each call's latency is reported too).
    InviteCycle,
    /// `PlaybackTokenService/IssuePlaybackToken` as the signed-in user: an
    /// organisation-wide, revocable token expiring 5 minutes after the call,
    /// so every call is a committed write (the token's record and its audit
    /// event) in that one organisation, under its shared lock. Before
    /// measuring, loadgen makes the organisation secure if it is not
    /// (`UpdateOrganisation`) and issues one token, which creates its
    /// signing key.
    IssuePlayback,
    /// The same as `issue_playback`, each call as the user of the next of
    /// `--organisations` organisations, in turn: the first
    /// `--organisations` users by id (their tokens from `usermgmt
    /// bench-tokens`, see `--usermgmt-bin`), which must belong to as many
    /// organisations and hold `playback_tokens.create` and `users.read`, as
    /// the nanoAdmins `usermgmt bootstrap` then `usermgmt seed
    /// --organisations N` create do. Each organisation is prepared as for
    /// `issue_playback`.
    IssuePlaybackOrgs,
    /// `AuthService/Login` (an argon2id verification, then a session opened
    /// in a committed write of the organisation) as the next of the first
    /// `--login-users` users of the signed-in user's organisation whose email
    /// starts with `--email-prefix` (by email), in turn, each with
    /// `--login-password` and the organisation's id. Each of them signs in
    /// once before measuring, so that every measured login comes from an
    /// address the user already signed in from. The server's limit on login
    /// attempts per peer address must allow the rate (`usermgmt serve
    /// --login-rate-per-peer 0`: every call comes from one address), and at
    /// most 8 logins may be in flight (the server's default bound of
    /// password hashes queued per caller).
    Login,
    /// The same as `login`, over `--login-users` users of each of the
    /// `--organisations` organisations of `issue_playback_orgs`: consecutive
    /// calls sign in to different organisations.
    LoginOrgs,
}

/// What one successful call (or iteration) of a scenario was.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// A write that changed nothing; not counted as ok.
    Unchanged,
    /// Done; the latency of each of its calls, in nanoseconds, in the order
    /// of [`Scenario::parts`].
    Parts([u64; 2]),
}

/// How many logins run during `authorize_during_logins`.
pub const LOGIN_STORM: usize = 32;

/// The page `list_users_deep` measures, and the page size of the list scenarios.
pub const DEEP_PAGE: usize = 1000;

pub const LIST_PAGE_SIZE: i32 = 100;

impl Scenario {
    /// The calls of one iteration, where it makes more than one.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Scenario::InviteCycle => &["create_invite", "revoke_invite"],
            _ => &[],
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, Scenario::UpdateUserRole | Scenario::InviteCycle)
    }

    /// Sends one request (or one iteration's requests); `Ok` only for OK
    /// responses.
    pub async fn call(self, channel: &Channel, session: &Session) -> Result<Outcome, Status> {
        match self {
            Scenario::Health => {
                let response = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?
                    .into_inner();
                if response.status() != ServingStatus::Serving {
                    return Err(Status::unavailable(format!(
                        "health check answered {:?}",
                        response.status()
                    )));
                }
            }
            Scenario::GetUser => {
                UserServiceClient::new(channel.clone())
                    .get_user(session.authorized(proto::GetUserRequest {
                        user_id: session.user_id.clone(),
                    }))
                    .await?;
            }
            Scenario::WhoAmI => {
                AuthServiceClient::new(channel.clone())
                    .who_am_i(session.authorized(proto::WhoAmIRequest {}))
                    .await?;
            }
            Scenario::WhoAmIUsers => {
                AuthServiceClient::new(channel.clone())
                    .who_am_i(session.as_next_user(proto::WhoAmIRequest {})?)
                    .await?;
            }
            Scenario::GetUserApiToken => {
                UserServiceClient::new(channel.clone())
                    .get_user(session.with_api_token(proto::GetUserRequest {
                        user_id: session.user_id.clone(),
                    })?)
                    .await?;
            }
            Scenario::AuthorizeToken
            | Scenario::AuthorizeApiKey
            | Scenario::AuthorizeApiToken
            | Scenario::AuthorizeDuringLogins => {
                let kind = match self {
                    Scenario::AuthorizeApiKey => {
                        proto::credential::Kind::ApiKey(session.api_key.clone().unwrap_or_default())
                    }
                    Scenario::AuthorizeApiToken => proto::credential::Kind::AccessToken(
                        session.api_token.clone().unwrap_or_default(),
                    ),
                    _ => proto::credential::Kind::AccessToken(session.access_token.clone()),
                };
                let request = proto::AuthorizeRequest {
                    credential: Some(proto::Credential { kind: Some(kind) }),
                    permission: "streams.create".into(),
                    organisation_id: String::new(),
                };
                let answer = AuthServiceClient::new(channel.clone())
                    .authorize(session.as_service(request)?)
                    .await?
                    .into_inner();
                if !answer.allowed {
                    return Err(Status::permission_denied(answer.message));
                }
            }
            Scenario::ListUsersFirst
            | Scenario::ListUsersDeep
            | Scenario::ListUsersRole
            | Scenario::ListUsersPrefix => {
                let request = proto::ListUsersRequest {
                    page_size: LIST_PAGE_SIZE,
                    page_token: if self == Scenario::ListUsersDeep {
                        session.deep_page_token.clone().unwrap_or_default()
                    } else {
                        String::new()
                    },
                    role: if self == Scenario::ListUsersRole {
                        proto::Role::NanoUser as i32
                    } else {
                        proto::Role::Unspecified as i32
                    },
                    email_prefix: if self == Scenario::ListUsersPrefix {
                        session.email_prefix.clone()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                UserServiceClient::new(channel.clone())
                    .list_users(session.authorized(request))
                    .await?;
            }
            Scenario::VerifyPlayback => {
                let request = proto::VerifyPlaybackTokenRequest {
                    token: session.playback_token.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let answer = PlaybackTokenServiceClient::new(channel.clone())
                    .verify_playback_token(request)
                    .await?
                    .into_inner();
                if !answer.valid {
                    return Err(Status::failed_precondition(
                        "the playback token did not verify",
                    ));
                }
            }
            Scenario::UpdateUserRole => {
                // The target starts as nanoUser: even flips demote it to
                // nanoReadOnly, odd ones promote it back.
                let flip = session.role_flips.fetch_add(1, Ordering::Relaxed);
                let role = if flip.is_multiple_of(2) {
                    proto::Role::NanoReadOnly
                } else {
                    proto::Role::NanoUser
                };
                let request = proto::UpdateUserRoleRequest {
                    user_id: session.target_user_id.clone().unwrap_or_default(),
                    role: role as i32,
                    etag: String::new(),
                };
                let answer = UserServiceClient::new(channel.clone())
                    .update_user_role(session.writer(request)?)
                    .await?
                    .into_inner();
                if !answer.changed {
                    return Ok(Outcome::Unchanged);
                }
            }
            Scenario::IssuePlayback | Scenario::IssuePlaybackOrgs => {
                let request = playback_request();
                let request = if self == Scenario::IssuePlayback {
                    session.authorized(request)
                } else {
                    session.as_next_organisation(request)?
                };
                PlaybackTokenServiceClient::new(channel.clone())
                    .issue_playback_token(request)
                    .await?;
            }
            Scenario::Login | Scenario::LoginOrgs => {
                let users = if self == Scenario::Login {
                    &session.login_users
                } else {
                    &session.login_users_orgs
                };
                let user = session
                    .next_of(users)
                    .ok_or_else(|| Status::internal("no login users were prepared"))?;
                let answer = AuthServiceClient::new(channel.clone())
                    .login(login_request(user, &session.login_password))
                    .await?
                    .into_inner();
                if answer.access_token.is_empty() {
                    return Err(Status::internal("Login answered no access token"));
                }
            }
            Scenario::InviteCycle => {
                let mut users = UserServiceClient::new(channel.clone());
                let sequence = session.invite_sequence.fetch_add(1, Ordering::Relaxed);
                let request = proto::CreateInviteRequest {
                    email: format!("loadgen-{}-{sequence}@example.com", session.nonce),
                    role: proto::Role::NanoReadOnly as i32,
                    ttl: None,
                };
                let started = Instant::now();
                let invite = users
                    .create_invite(session.writer(request)?)
                    .await?
                    .into_inner()
                    .invite
                    .ok_or_else(|| Status::internal("CreateInvite answered no invite"))?;
                let created = Instant::now();
                users
                    .revoke_invite(session.writer(proto::RevokeInviteRequest {
                        invite_id: invite.id,
                    })?)
                    .await?;
                let revoked = Instant::now();
                return Ok(Outcome::Parts([
                    nanos(created.duration_since(started)),
                    nanos(revoked.duration_since(created)),
                ]));
            }
        }
        Ok(Outcome::Done)
    }

    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_else(|| format!("{self:?}"))
    }
}
