//! Tenant isolation: for every RPC of the contract, an admin of organisation
//! B aims at organisation A's objects (users, invites, playback tokens,
//! confirmations, the organisation itself). B gets NOT_FOUND, a refusal, or
//! an answer about B only; and every row of A is the same afterwards.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use tonic::Code;
use tonic::transport::Channel;
use usermgmt::proto::{
    self, Role, api_token_service_client::ApiTokenServiceClient,
    auth_service_client::AuthServiceClient, change_service_client::ChangeServiceClient,
    credential::Kind, organisation_service_client::OrganisationServiceClient,
    playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target, role_service_client::RoleServiceClient,
    session_service_client::SessionServiceClient,
};

use crate::playback::{for_streams, issue, make_secure};
use crate::support::dump::{assert_same, dump_org};
use crate::support::*;

type Case = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every RPC of the contract, as `/package.Service/Method`.
fn contract_rpcs() -> Vec<String> {
    usermgmt::proto::rpc_paths().expect("the contract's descriptors decode")
}

/// What organisation A has: every kind of object another admin could aim at.
struct Victim {
    org: Org,
    admin: Session,
    user_id: String,
    invite_id: String,
    playback_token: String,
    playback_token_id: String,
    /// A's pending confirmations: of a renewal of `user_id`, and of an API
    /// key rotation.
    renew_confirmation: String,
    rotate_confirmation: String,
    /// The admin's session.
    session_id: String,
    /// A personal API token of the admin.
    api_token_id: String,
    /// A resume token of A's change feed (after its last change).
    change_token: String,
}

async fn victim(server: &TestServer, channel: &Channel) -> Victim {
    let org = create_org(&server.db, "Acme").await;
    make_secure(&server.db, org.id).await;
    let admin = Session::login(channel, &org.admin_email, ADMIN_PASSWORD).await;
    let user = admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let invite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "invitee@acme.example.com".into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner();
    let playback = issue(
        &admin,
        proto::IssuePlaybackTokenRequest {
            revocable: true,
            ..for_streams(&["live"])
        },
    )
    .await
    .expect("issue");
    let renew = admin.ask_renew(&user.id).await.expect("ask renew");
    let rotate = admin
        .ask(&TwoStep::RotateApiKey)
        .await
        .expect("ask rotation");
    let session_id = SessionServiceClient::new(channel.clone())
        .list_sessions(admin.req(proto::ListSessionsRequest::default()))
        .await
        .expect("the admin's sessions")
        .into_inner()
        .sessions
        .into_iter()
        .find(|session| session.current)
        .expect("the current session")
        .id;
    let api_token_id = create_api_token(channel, &admin.token, &[])
        .await
        .expect("the admin's API token")
        .api_token
        .expect("its resource")
        .id;
    let change_token = ChangeServiceClient::new(channel.clone())
        .list_changes(admin.req(proto::ListChangesRequest::default()))
        .await
        .expect("A's changes")
        .into_inner()
        .resume_token;
    Victim {
        change_token,
        api_token_id,
        session_id,
        org,
        admin,
        user_id: user.id,
        invite_id: invite.invite.expect("invite").id,
        playback_token: playback.token,
        playback_token_id: playback.token_id,
        renew_confirmation: renew.confirmation_token,
        rotate_confirmation: rotate.confirmation_token,
    }
}

fn code_in<T: std::fmt::Debug>(result: Result<T, tonic::Status>, codes: &[Code], rpc: &str) {
    match result {
        Ok(value) => panic!("{rpc}: expected one of {codes:?}, got OK: {value:?}"),
        Err(status) => assert!(codes.contains(&status.code()), "{rpc}: {status:?}"),
    }
}

/// The two organisations: A, whose every resource B's admin aims at, and
/// B, with what the cases need.
struct Parties {
    channel: Channel,
    a: Victim,
    other: Org,
    b: Session,
    service_key: String,
    a_id: String,
    b_id: String,
    a_audit_ids: Vec<String>,
}

/// B's attempt at A by each RPC, by its `Service/Method` name.
type Cases = BTreeMap<&'static str, Case>;

async fn auth_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        channel,
        a,
        other,
        b,
        service_key,
        a_id,
        b_id,
        ..
    } = parties;
    let auth = || AuthServiceClient::new(channel.clone());
    // AuthService.
    cases.insert("AuthService/Login", {
        let mut auth = auth();
        let request = proto::LoginRequest {
            email: a.org.admin_email.clone(),
            password: ADMIN_PASSWORD.into(),
            organisation_id: b_id.clone(),
        };
        Box::pin(async move {
            let result = auth.login(request).await;
            assert_status(result, Code::Unauthenticated, Some("LOGIN_FAILED"));
        })
    });
    cases.insert("AuthService/WhoAmI", {
        let b = b.clone();
        let b_id = b_id.clone();
        Box::pin(async move {
            let me = b.who_am_i().await.expect("who am i");
            assert_eq!(me.organisation.expect("organisation").id, b_id);
        })
    });
    cases.insert("AuthService/AcceptInvite", {
        let mut auth = auth();
        // B knows A's invite id (not its token): it is no credential.
        let request = b.req(proto::AcceptInviteRequest {
            invite_token: a.invite_id.clone(),
            password: PASSWORD.into(),
        });
        Box::pin(async move {
            let result = auth.accept_invite(request).await;
            assert_status(result, Code::Unauthenticated, Some("INVITE_INVALID"));
        })
    });
    cases.insert("AuthService/Refresh", {
        let mut auth = auth();
        // A's session id is no refresh token.
        let request = proto::RefreshRequest {
            refresh_token: format!("umr_{}", a.session_id),
        };
        Box::pin(async move {
            let result = auth.refresh(request).await;
            assert_status(result, Code::Unauthenticated, Some("REFRESH_TOKEN_INVALID"));
        })
    });
    cases.insert("AuthService/Logout", {
        // B's own session, of a sign-in of its own: the others' go on.
        let mut auth = auth();
        let b_again = Session::login(channel, &other.admin_email, ADMIN_PASSWORD).await;
        let request = b_again.req(proto::LogoutRequest {});
        Box::pin(async move {
            auth.logout(request).await.expect("B logs out");
        })
    });
    cases.insert("AuthService/ChangePassword", {
        let mut auth = auth();
        let request = b.req(proto::ChangePasswordRequest {
            current_password: "A's password, perhaps".into(),
            new_password: "a new password 9".into(),
        });
        Box::pin(async move {
            let result = auth.change_password(request).await;
            assert_status(result, Code::InvalidArgument, None);
        })
    });
    cases.insert("AuthService/RequestPasswordReset", {
        // A's admin's email with B's organisation: B's (none), not A's.
        let mut auth = auth();
        let request = proto::RequestPasswordResetRequest {
            email: a.org.admin_email.clone(),
            organisation_id: b_id.clone(),
        };
        Box::pin(async move {
            auth.request_password_reset(request)
                .await
                .expect("answered alike");
        })
    });
    cases.insert("AuthService/ResetPassword", {
        let mut auth = auth();
        let request = proto::ResetPasswordRequest {
            reset_token: format!("ump_{}", a.session_id),
            new_password: "a new password 9".into(),
        };
        Box::pin(async move {
            let result = auth.reset_password(request).await;
            assert_status(result, Code::Unauthenticated, Some("RESET_TOKEN_INVALID"));
        })
    });
    for (name, batch) in [
        ("AuthService/Authorize", false),
        ("AuthService/AuthorizeBatch", true),
    ] {
        let mut auth = auth();
        let credential = Some(proto::Credential {
            kind: Some(Kind::AccessToken(b.token.clone())),
        });
        let (a_id, key) = (a_id.clone(), service_key.clone());
        cases.insert(
            name,
            Box::pin(async move {
                let decisions = if batch {
                    let request = proto::AuthorizeBatchRequest {
                        credential,
                        permissions: vec!["users.delete".into(), "users.read".into()],
                        organisation_id: a_id,
                    };
                    auth.authorize_batch(with_header(request, "x-usermgmt-service-key", &key))
                        .await
                        .expect("authorize batch")
                        .into_inner()
                        .decisions
                } else {
                    let request = proto::AuthorizeRequest {
                        credential,
                        permission: "users.delete".into(),
                        organisation_id: a_id,
                    };
                    vec![
                        auth.authorize(with_header(request, "x-usermgmt-service-key", &key))
                            .await
                            .expect("authorize")
                            .into_inner(),
                    ]
                };
                for decision in decisions {
                    assert!(!decision.allowed, "{decision:?}");
                    assert_eq!(
                        decision.denial_reason,
                        proto::DenialReason::WrongOrganisation as i32
                    );
                }
            }),
        );
    }
}

async fn session_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties { channel, a, b, .. } = parties;
    cases.insert("SessionService/ListSessions", {
        let mut sessions = SessionServiceClient::new(channel.clone());
        let request = b.req(proto::ListSessionsRequest {
            user_id: a.org.admin_id.to_string(),
            ..Default::default()
        });
        Box::pin(async move {
            let result = sessions.list_sessions(request).await;
            assert_status(result, Code::NotFound, None);
        })
    });
    cases.insert("SessionService/RevokeSession", {
        let mut sessions = SessionServiceClient::new(channel.clone());
        let request = b.req(proto::RevokeSessionRequest {
            session_id: a.session_id.clone(),
        });
        Box::pin(async move {
            let result = sessions.revoke_session(request).await;
            assert_status(result, Code::NotFound, None);
        })
    });
}

async fn api_token_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        channel,
        a,
        other,
        b,
        ..
    } = parties;
    cases.insert("ApiTokenService/CreateApiToken", {
        // A token is the caller's own: B's token is B's, whatever it tries.
        let (channel, token) = (channel.clone(), b.token.clone());
        let b_admin = other.admin_id.to_string();
        Box::pin(async move {
            let created = create_api_token(&channel, &token, &[])
                .await
                .expect("B's own token");
            assert_eq!(created.api_token.expect("resource").user_id, b_admin);
        })
    });
    cases.insert("ApiTokenService/ListApiTokens", {
        let mut tokens = ApiTokenServiceClient::new(channel.clone());
        let request = b.req(proto::ListApiTokensRequest {
            user_id: a.org.admin_id.to_string(),
            ..Default::default()
        });
        Box::pin(async move {
            assert_status(tokens.list_api_tokens(request).await, Code::NotFound, None);
        })
    });
    cases.insert("ApiTokenService/RevokeApiToken", {
        let mut tokens = ApiTokenServiceClient::new(channel.clone());
        let request = b.req(proto::RevokeApiTokenRequest {
            api_token_id: a.api_token_id.clone(),
        });
        Box::pin(async move {
            assert_status(tokens.revoke_api_token(request).await, Code::NotFound, None);
        })
    });
}

async fn user_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties { a, b, .. } = parties;
    let users = || b.users();
    // UserService.
    cases.insert("UserService/GetUser", {
        let (mut users, request) = (
            users(),
            b.req(proto::GetUserRequest {
                user_id: a.user_id.clone(),
            }),
        );
        Box::pin(
            async move { code_in(users.get_user(request).await, &[Code::NotFound], "GetUser") },
        )
    });
    cases.insert("UserService/ListUsers", {
        let (mut users, request) = (users(), b.req(proto::ListUsersRequest::default()));
        let a_ids = [a.user_id.clone(), a.org.admin_id.to_string()];
        Box::pin(async move {
            let listed = users.list_users(request).await.expect("list").into_inner();
            assert!(!listed.users.is_empty());
            for user in listed.users {
                assert!(!a_ids.contains(&user.id), "A's user listed to B: {user:?}");
            }
        })
    });
    cases.insert("UserService/CreateUser", {
        let b = b.clone();
        let email = a.org.admin_email.clone();
        Box::pin(async move {
            // A's admin email in B is a user of B, which A never sees.
            let user = b
                .create_user(&email, Role::NanoAdmin)
                .await
                .expect("create in B");
            assert_eq!(user.email, email);
        })
    });
    cases.insert("UserService/CreateInvite", {
        let mut users = users();
        let request = b.req(proto::CreateInviteRequest {
            email: "invitee@acme.example.com".into(),
            role: Role::NanoAdmin as i32,
            ttl: None,
        });
        Box::pin(async move {
            users.create_invite(request).await.expect("an invite of B");
        })
    });
    cases.insert("UserService/ListInvites", {
        let mut users = users();
        let request = b.req(proto::ListInvitesRequest::default());
        let a_invite = a.invite_id.clone();
        Box::pin(async move {
            let listed = users
                .list_invites(request)
                .await
                .expect("list")
                .into_inner();
            assert!(listed.invites.iter().all(|i| i.id != a_invite));
        })
    });
    cases.insert("UserService/RevokeInvite", {
        let mut users = users();
        let request = b.req(proto::RevokeInviteRequest {
            invite_id: a.invite_id.clone(),
        });
        Box::pin(async move {
            code_in(
                users.revoke_invite(request).await,
                &[Code::NotFound],
                "RevokeInvite",
            )
        })
    });
    cases.insert("UserService/UpdateUserRole", {
        let b = b.clone();
        let id = a.user_id.clone();
        Box::pin(async move {
            code_in(
                b.set_role(&id, Role::NanoAdmin, "").await,
                &[Code::NotFound],
                "UpdateUserRole",
            )
        })
    });
    cases.insert("UserService/DeleteUser", {
        let b = b.clone();
        let (id, token) = (a.user_id.clone(), a.renew_confirmation.clone());
        Box::pin(async move {
            code_in(b.ask_delete(&id).await, &[Code::NotFound], "DeleteUser");
            // Even with a confirmation token of A that leaked to B.
            let mut users = b.users();
            let result = users
                .delete_user(b.req(proto::DeleteUserRequest {
                    user_id: id,
                    confirmation_token: token,
                }))
                .await;
            code_in(
                result,
                &[Code::NotFound, Code::FailedPrecondition],
                "DeleteUser",
            );
        })
    });
    cases.insert("UserService/RenewTokenKey", {
        let b = b.clone();
        let (id, token) = (a.user_id.clone(), a.renew_confirmation.clone());
        Box::pin(async move {
            code_in(b.ask_renew(&id).await, &[Code::NotFound], "RenewTokenKey");
            code_in(
                b.confirm_renew(&id, &token).await,
                &[Code::NotFound, Code::FailedPrecondition],
                "RenewTokenKey",
            );
        })
    });
    cases.insert("UserService/SuspendUser", {
        let b = b.clone();
        let (id, token) = (a.user_id.clone(), a.renew_confirmation.clone());
        Box::pin(async move {
            for confirmation_token in [String::new(), token] {
                let result = b
                    .users()
                    .suspend_user(b.req(proto::SuspendUserRequest {
                        user_id: id.clone(),
                        confirmation_token,
                    }))
                    .await;
                code_in(
                    result,
                    &[Code::NotFound, Code::FailedPrecondition],
                    "SuspendUser",
                );
            }
        })
    });
    cases.insert("UserService/ReactivateUser", {
        let b = b.clone();
        let id = a.user_id.clone();
        Box::pin(async move {
            let result = b
                .users()
                .reactivate_user(b.req(proto::ReactivateUserRequest {
                    user_id: id,
                    etag: String::new(),
                }))
                .await;
            assert_status(result, Code::NotFound, None);
        })
    });
}

async fn audit_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        a, b, a_audit_ids, ..
    } = parties;
    // AuditService.
    cases.insert("AuditService/ListAuditEvents", {
        let b = b.clone();
        let target = a.user_id.clone();
        let a_audit_ids = a_audit_ids.clone();
        Box::pin(async move {
            for request in [
                proto::ListAuditEventsRequest::default(),
                proto::ListAuditEventsRequest {
                    target_id: target.clone(),
                    ..Default::default()
                },
            ] {
                let events = b.audit_events(request).await.expect("audit");
                assert!(events.iter().all(|e| !a_audit_ids.contains(&e.id)));
            }
        })
    });
}

async fn role_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties { channel, b, .. } = parties;
    // RoleService: the same static matrix for everyone.
    cases.insert("RoleService/ListRoles", {
        let mut roles = RoleServiceClient::new(channel.clone());
        let request = b.req(proto::ListRolesRequest {});
        Box::pin(async move {
            roles.list_roles(request).await.expect("roles");
        })
    });
}

async fn organisation_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        channel,
        a,
        b,
        a_id,
        b_id,
        ..
    } = parties;
    let organisations = || OrganisationServiceClient::new(channel.clone());
    // OrganisationService.
    cases.insert("OrganisationService/GetOrganisation", {
        let mut organisations = organisations();
        let request = b.req(proto::GetOrganisationRequest {});
        let b_id = b_id.clone();
        Box::pin(async move {
            let got = organisations.get_organisation(request).await.expect("get");
            assert_eq!(got.into_inner().organisation.expect("org").id, b_id);
        })
    });
    cases.insert("OrganisationService/UpdateOrganisation", {
        let mut organisations = organisations();
        // The request names A's id; the server ignores it: B changes B.
        let request = b.req(proto::UpdateOrganisationRequest {
            organisation: Some(proto::Organisation {
                id: a_id.clone(),
                name: "Pwned".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        });
        let b_id = b_id.clone();
        Box::pin(async move {
            let updated = organisations
                .update_organisation(request)
                .await
                .expect("update")
                .into_inner();
            assert_eq!(updated.organisation.expect("org").id, b_id);
        })
    });
    cases.insert("OrganisationService/RotateApiKey", {
        let mut organisations = organisations();
        let request = b.req(proto::RotateApiKeyRequest {
            confirmation_token: a.rotate_confirmation.clone(),
        });
        Box::pin(async move {
            code_in(
                organisations.rotate_api_key(request).await,
                &[Code::FailedPrecondition, Code::NotFound],
                "RotateApiKey",
            )
        })
    });
}

async fn playback_token_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        channel,
        a,
        b,
        a_id,
        b_id,
        ..
    } = parties;
    let playback = || PlaybackTokenServiceClient::new(channel.clone());
    // PlaybackTokenService.
    cases.insert("PlaybackTokenService/IssuePlaybackToken", {
        let b = b.clone();
        let mut verify = playback();
        let b_id = b_id.clone();
        Box::pin(async move {
            let issued = issue(&b, for_streams(&["live"])).await.expect("issue in B");
            let verified = verify
                .verify_playback_token(proto::VerifyPlaybackTokenRequest {
                    token: issued.token,
                    stream: "live".into(),
                    group_id: String::new(),
                })
                .await
                .expect("verify")
                .into_inner();
            assert_eq!(verified.claims.expect("claims").organisation_id, b_id);
        })
    });
    cases.insert("PlaybackTokenService/VerifyPlaybackToken", {
        // Public: the token is the credential. B learns A's token's own
        // claims only by holding it, and changes nothing.
        let mut verify = playback();
        let request = b.req(proto::VerifyPlaybackTokenRequest {
            token: a.playback_token.clone(),
            stream: "live".into(),
            group_id: String::new(),
        });
        let a_id = a_id.clone();
        Box::pin(async move {
            let verified = verify.verify_playback_token(request).await.expect("verify");
            assert_eq!(
                verified
                    .into_inner()
                    .claims
                    .expect("claims")
                    .organisation_id,
                a_id
            );
        })
    });
    cases.insert("PlaybackTokenService/RevokePlaybackToken", {
        let mut revoke = playback();
        let by_id = b.req(proto::RevokePlaybackTokenRequest {
            target: Some(Target::TokenId(a.playback_token_id.clone())),
        });
        let by_token = b.req(proto::RevokePlaybackTokenRequest {
            target: Some(Target::Token(a.playback_token.clone())),
        });
        Box::pin(async move {
            code_in(
                revoke.revoke_playback_token(by_id).await,
                &[Code::NotFound],
                "RevokePlaybackToken",
            );
            code_in(
                revoke.revoke_playback_token(by_token).await,
                &[Code::NotFound, Code::PermissionDenied],
                "RevokePlaybackToken",
            );
        })
    });
    cases.insert("PlaybackTokenService/ListSigningKeys", {
        // Public keys are public (a JWKS); the answer has no private part.
        let mut keys = playback();
        let request = b.req(proto::ListSigningKeysRequest {});
        Box::pin(async move {
            keys.list_signing_keys(request).await.expect("keys");
        })
    });
    cases.insert("PlaybackTokenService/RotateSigningKey", {
        let mut rotate = playback();
        let request = b.req(proto::RotateSigningKeyRequest::default());
        let b_id = b_id.clone();
        Box::pin(async move {
            let rotated = rotate
                .rotate_signing_key(request)
                .await
                .expect("rotate B's key");
            assert_eq!(rotated.into_inner().key.expect("key").organisation_id, b_id);
        })
    });
}

/// NOT_FOUND, of the organisation, with nothing of it in the answer.
#[track_caller]
fn organisation_not_found<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    a_id: &str,
    rpc: &str,
) {
    let status = assert_status(result, Code::NotFound, None);
    assert_eq!(
        error_summary::<()>(Err(status.clone())),
        "code: NotFound\nresource type: organisation\n",
        "{rpc}"
    );
    assert!(!status.message().contains(a_id), "{rpc}: {status:?}");
}

/// INVALID_ARGUMENT, naming exactly `field`.
#[track_caller]
fn invalid_field<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str, rpc: &str) {
    let status = assert_status(result, Code::InvalidArgument, None);
    assert_eq!(violated_fields(&status), [field], "{rpc}: {status:?}");
}

/// Every id of A's objects, which nothing B is answered may name.
fn ids_of(a: &Victim) -> Vec<String> {
    vec![
        a.org.id.to_string(),
        a.org.admin_id.to_string(),
        a.user_id.clone(),
        a.invite_id.clone(),
        a.playback_token_id.clone(),
        a.session_id.clone(),
        a.api_token_id.clone(),
    ]
}

async fn change_service_cases(parties: &Parties, cases: &mut Cases) {
    let Parties {
        channel,
        a,
        b,
        a_id,
        b_id,
        ..
    } = parties;
    let feed = || ChangeServiceClient::new(channel.clone());
    // ChangeService: B's admin names A's organisation (NOT_FOUND), resumes
    // from A's token (INVALID_ARGUMENT), and its own feed names nothing of A.
    cases.insert("ChangeService/ListChanges", {
        let mut feed = feed();
        let naming_a = b.req(proto::ListChangesRequest {
            organisation_id: a_id.clone(),
            ..Default::default()
        });
        let from_a_token = b.req(proto::ListChangesRequest {
            page_token: a.change_token.clone(),
            ..Default::default()
        });
        let own = b.req(proto::ListChangesRequest::default());
        let (a_id, b_id, a_ids) = (a_id.clone(), b_id.clone(), ids_of(a));
        Box::pin(async move {
            organisation_not_found(feed.list_changes(naming_a).await, &a_id, "ListChanges");
            invalid_field(
                feed.list_changes(from_a_token).await,
                "page_token",
                "ListChanges",
            );
            let page = feed
                .list_changes(own)
                .await
                .expect("B's changes")
                .into_inner();
            assert!(!page.changes.is_empty(), "B has changes of its own");
            for change in &page.changes {
                assert_eq!(change.organisation_id, b_id);
                for target in &change.targets {
                    assert!(!a_ids.contains(&target.target_id), "{target:?}");
                }
            }
        })
    });
    cases.insert("ChangeService/WatchChanges", {
        let mut feed = feed();
        let naming_a = b.req(proto::WatchChangesRequest {
            organisation_id: a_id.clone(),
            ..Default::default()
        });
        let from_a_token = b.req(proto::WatchChangesRequest {
            resume_token: a.change_token.clone(),
            ..Default::default()
        });
        let own_snapshot = b.req(proto::WatchChangesRequest {
            start: proto::ChangeStart::Snapshot as i32,
            ..Default::default()
        });
        let (a_id, a_ids) = (a_id.clone(), ids_of(a));
        Box::pin(async move {
            organisation_not_found(feed.watch_changes(naming_a).await, &a_id, "WatchChanges");
            invalid_field(
                feed.watch_changes(from_a_token).await,
                "resume_token",
                "WatchChanges",
            );
            let mut stream = feed
                .watch_changes(own_snapshot)
                .await
                .expect("B watches its own")
                .into_inner();
            loop {
                let message =
                    tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
                        .await
                        .expect("B's snapshot within 30 s")
                        .expect("B's stream")
                        .expect("open");
                let Some(proto::watch_changes_response::Event::Snapshot(page)) = message.event
                else {
                    panic!("a snapshot page first: {message:?}");
                };
                for target in &page.targets {
                    assert!(!a_ids.contains(&target.target_id), "{target:?}");
                }
                if page.last {
                    break;
                }
            }
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_admin_reaches_nothing_of_an_organisation_by_any_rpc() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let a = victim(&server, &channel).await;
    let other = create_org(&server.db, "Other").await;
    make_secure(&server.db, other.id).await;
    let b = Session::login(&channel, &other.admin_email, ADMIN_PASSWORD).await;
    let service_key = register_service(&server.db, "streams").await;
    let a_id = a.org.id.to_string();
    let b_id = other.id.to_string();

    let a_audit_ids: Vec<String> = server
        .db
        .client()
        .await
        .query(
            "SELECT id::text FROM audit_events WHERE organisation_id = $1",
            &[&a.org.id],
        )
        .await
        .expect("audit ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!a_audit_ids.is_empty());

    let parties = Parties {
        channel,
        a,
        other,
        b,
        service_key,
        a_id,
        b_id,
        a_audit_ids,
    };

    let mut cases = Cases::new();
    auth_service_cases(&parties, &mut cases).await;
    session_service_cases(&parties, &mut cases).await;
    api_token_service_cases(&parties, &mut cases).await;
    user_service_cases(&parties, &mut cases).await;
    audit_service_cases(&parties, &mut cases).await;
    role_service_cases(&parties, &mut cases).await;
    organisation_service_cases(&parties, &mut cases).await;
    playback_token_service_cases(&parties, &mut cases).await;
    change_service_cases(&parties, &mut cases).await;

    // Every RPC has a case, and every case is an RPC.
    let rpcs = contract_rpcs();
    for path in &rpcs {
        let name = path.trim_start_matches("/usermgmt.v1.");
        assert!(cases.contains_key(name), "{path} has no isolation case");
    }
    assert_eq!(cases.len(), rpcs.len(), "a case names no RPC");

    let before = dump_org(&server.db, parties.a.org.id).await;
    let count = cases.len();
    for (name, case) in cases {
        case.await;
        assert_same(
            &before,
            &dump_org(&server.db, parties.a.org.id).await,
            &format!("/usermgmt.v1.{name}"),
        );
    }
    eprintln!("isolation: {count} RPCs tried by another organisation's admin, A unchanged");
    // A is still whole and working.
    parties
        .a
        .admin
        .who_am_i()
        .await
        .expect("A's admin still works");
}
