//! Bad input through the API: every string field of every request has a
//! length limit (a 10 KiB value is refused, with nothing changed), and
//! SQL-looking text is stored and returned verbatim.

use std::future::Future;
use std::pin::Pin;

use tonic::{Code, Status};
use usermgmt::proto::{
    self, Role, audit_service_client::AuditServiceClient, auth_service_client::AuthServiceClient,
    credential::Kind, organisation_service_client::OrganisationServiceClient,
    playback_scope::Scope, playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target,
};

use crate::playback::make_secure;
use crate::support::dump::{assert_same, dump_all};
use crate::support::*;

type Outcome = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// One call as an [`Outcome`]: `call!(client, method, request)`.
macro_rules! call {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client;
        let request = $request;
        Box::pin(async move {
            let answer = client.$method(request).await?.into_inner();
            if Answer::accepted(&answer) {
                Ok(())
            } else {
                Err(Status::unauthenticated("refused in the answer"))
            }
        }) as Outcome
    }};
}

/// Whether an answer accepted the request: Authorize and VerifyPlaybackToken
/// answer a refusal in their response, every other RPC with a status.
trait Answer {
    fn accepted(&self) -> bool {
        true
    }
}

impl Answer for proto::AuthorizeResponse {
    fn accepted(&self) -> bool {
        self.allowed
    }
}

impl Answer for proto::AuthorizeBatchResponse {
    fn accepted(&self) -> bool {
        self.decisions.iter().any(|d| d.allowed)
    }
}

impl Answer for proto::VerifyPlaybackTokenResponse {
    fn accepted(&self) -> bool {
        self.valid
    }
}

macro_rules! accepted_by_ok {
    ($($t:ty),*) => { $(impl Answer for $t {})* };
}

accepted_by_ok!(
    proto::LoginResponse,
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
    proto::RevokePlaybackTokenResponse
);

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

    let auth = || AuthServiceClient::new(channel.clone());
    let users = || admin.users();
    let organisations = || OrganisationServiceClient::new(channel.clone());
    let playback = || PlaybackTokenServiceClient::new(channel.clone());
    let audit = || AuditServiceClient::new(channel.clone());
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
            &service_key,
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
            &service_key,
        )
    };
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
    let audit_req = |f: &dyn Fn(&mut proto::ListAuditEventsRequest)| {
        let mut r = proto::ListAuditEventsRequest::default();
        f(&mut r);
        admin.req(r)
    };
    let verify = |token: &str, stream: &str, group: &str| proto::VerifyPlaybackTokenRequest {
        token: token.into(),
        stream: stream.into(),
        group_id: group.into(),
    };
    let uid = user.id.clone();

    let cases: Vec<(&str, Outcome)> = vec![
        (
            "LoginRequest.email",
            call!(auth(), login, login(&long_email, PASSWORD, "")),
        ),
        (
            "LoginRequest.password",
            call!(auth(), login, login(&org.admin_email, &long, "")),
        ),
        (
            "LoginRequest.organisation_id",
            call!(auth(), login, login(&org.admin_email, PASSWORD, &long)),
        ),
        (
            "AcceptInviteRequest.invite_token",
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
            "Credential.access_token",
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(long.clone()), "users.read", "")
            ),
        ),
        (
            "Credential.api_key",
            call!(
                auth(),
                authorize,
                authorize(Kind::ApiKey(long.clone()), "users.read", "")
            ),
        ),
        (
            "AuthorizeRequest.permission",
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(admin.token.clone()), &long, "")
            ),
        ),
        (
            "AuthorizeRequest.organisation_id",
            call!(
                auth(),
                authorize,
                authorize(Kind::AccessToken(admin.token.clone()), "users.read", &long,)
            ),
        ),
        (
            "AuthorizeBatchRequest.permissions",
            call!(auth(), authorize_batch, batch(&long, "")),
        ),
        (
            "AuthorizeBatchRequest.organisation_id",
            call!(auth(), authorize_batch, batch("users.read", &long)),
        ),
        (
            "GetUserRequest.user_id",
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
            call!(
                users(),
                renew_token_key,
                admin.req(proto::RenewTokenKeyRequest {
                    user_id: uid.clone(),
                    confirmation_token: long.clone(),
                })
            ),
        ),
        (
            "ListAuditEventsRequest.page_token",
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.page_token = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.actor",
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.actor = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.target_id",
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.target_id = long.clone())
            ),
        ),
        (
            "ListAuditEventsRequest.action",
            call!(
                audit(),
                list_audit_events,
                audit_req(&|r| r.action = long.clone())
            ),
        ),
        (
            "Organisation.name",
            call!(
                organisations(),
                update_organisation,
                update_org(&long, "", "name")
            ),
        ),
        (
            "Organisation.etag",
            call!(
                organisations(),
                update_organisation,
                update_org("Acme", &long, "name")
            ),
        ),
        (
            "UpdateOrganisationRequest.update_mask",
            call!(
                organisations(),
                update_organisation,
                update_org("Acme", "", &long)
            ),
        ),
        (
            "RotateApiKeyRequest.confirmation_token",
            call!(
                organisations(),
                rotate_api_key,
                admin.req(proto::RotateApiKeyRequest {
                    confirmation_token: long.clone(),
                })
            ),
        ),
        (
            "StreamList.names",
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
            call!(
                playback(),
                issue_playback_token,
                issue_scope(Scope::GroupId(long.clone()))
            ),
        ),
        (
            "PlaybackRestrictions.domain",
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.domain = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.ip",
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.ip = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.tag",
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.tag = long.clone())
            ),
        ),
        (
            "PlaybackRestrictions.user",
            call!(
                playback(),
                issue_playback_token,
                restrictions(&|r| r.user = long.clone())
            ),
        ),
        (
            "VerifyPlaybackTokenRequest.token",
            call!(playback(), verify_playback_token, verify(&long, "live", "")),
        ),
        (
            "VerifyPlaybackTokenRequest.stream",
            call!(
                playback(),
                verify_playback_token,
                verify(&genuine, &long, "")
            ),
        ),
        (
            "VerifyPlaybackTokenRequest.group_id",
            call!(
                playback(),
                verify_playback_token,
                verify(&genuine, "", &long)
            ),
        ),
        (
            "RevokePlaybackTokenRequest.token",
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
            call!(
                playback(),
                revoke_playback_token,
                admin.req(proto::RevokePlaybackTokenRequest {
                    target: Some(Target::TokenId(long.clone())),
                })
            ),
        ),
    ];

    let before = dump_all(&server.db).await;
    let count = cases.len();
    for (field, outcome) in cases {
        match outcome.await {
            Ok(()) => panic!("{field}: a 10 KiB value was accepted"),
            Err(status) => {
                eprintln!("{field}: {:?}", status.code());
                assert!(
                    matches!(status.code(), Code::InvalidArgument | Code::Unauthenticated),
                    "{field}: {status:?}"
                );
                if status.code() == Code::InvalidArgument {
                    let name = field.rsplit('.').next().unwrap_or(field);
                    let fields = violated_fields(&status);
                    assert!(
                        fields
                            .iter()
                            .any(|f| f.contains(name) || name.contains(f.as_str())),
                        "{field}: the violation names {fields:?}"
                    );
                }
            }
        }
        assert_same(&before, &dump_all(&server.db).await, field);
    }
    eprintln!("{count} string fields refused at 10 KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_names_are_stored_and_returned_verbatim() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
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
            .update_organisation(admin.req(proto::UpdateOrganisationRequest {
                organisation: Some(proto::Organisation {
                    name: name.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
            }))
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
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
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
