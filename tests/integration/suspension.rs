//! Suspension: SuspendUser in two steps ends every credential of the user at
//! once, on every replica, refuses their sign-in and revokes their pending
//! invites; ReactivateUser lets them sign in again with new credentials
//! only. A suspended nanoAdmin does not count as an admin: the last active
//! one can be neither suspended, demoted nor deleted.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tonic::transport::Channel;
use tonic::{Code, Status};
use usermgmt::proto::{
    self, Role, UserState, api_token_service_client::ApiTokenServiceClient,
    auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use uuid::Uuid;

use crate::support::smtp::SmtpSink;
use crate::support::*;

fn users(channel: &Channel) -> UserServiceClient<Channel> {
    UserServiceClient::new(channel.clone())
}

/// The first step of SuspendUser.
async fn ask_suspend(channel: &Channel, caller: &Caller, user_id: &str) -> Result<Asked, Status> {
    two_step::ask(channel, caller, &TwoStep::SuspendUser(user_id.into())).await
}

/// The second step of SuspendUser.
async fn confirm_suspend(
    channel: &Channel,
    caller: &Caller,
    user_id: &str,
    token: &str,
) -> Result<proto::User, Status> {
    let action = TwoStep::SuspendUser(user_id.into());
    Ok(two_step::confirm(channel, caller, &action, token)
        .await?
        .user())
}

/// Both steps of SuspendUser, expected to succeed.
async fn suspend(channel: &Channel, caller: &Caller, user_id: &str) -> proto::User {
    let confirmation = ask_suspend(channel, caller, user_id)
        .await
        .unwrap_or_else(|status| panic!("first step of suspending {user_id}: {status:?}"));
    confirm_suspend(channel, caller, user_id, &confirmation.confirmation_token)
        .await
        .unwrap_or_else(|status| panic!("second step of suspending {user_id}: {status:?}"))
}

async fn reactivate(
    channel: &Channel,
    caller: &Caller,
    user_id: &str,
    etag: &str,
) -> Result<proto::User, Status> {
    let request = proto::ReactivateUserRequest {
        user_id: user_id.into(),
        etag: etag.into(),
    };
    let response = users(channel)
        .reactivate_user(caller.req(request))
        .await?
        .into_inner();
    Ok(response.user.expect("the reactivated user"))
}

async fn get_user(
    channel: &Channel,
    caller: &Caller,
    user_id: &str,
) -> Result<proto::User, Status> {
    let request = proto::GetUserRequest {
        user_id: user_id.into(),
    };
    let response = users(channel).get_user(caller.req(request)).await?;
    Ok(response.into_inner().user.expect("the user"))
}

/// Every page of ListUsers with this role and state; the users and the
/// total_size of the first page.
async fn list_all(
    channel: &Channel,
    caller: &Caller,
    role: Role,
    state: UserState,
) -> (Vec<proto::User>, i32) {
    let mut request = proto::ListUsersRequest {
        page_size: 2,
        role: role as i32,
        state: state as i32,
        ..Default::default()
    };
    let mut listed = Vec::new();
    let mut total = None;
    loop {
        let page = users(channel)
            .list_users(caller.req(request.clone()))
            .await
            .expect("list users")
            .into_inner();
        total.get_or_insert(page.total_size);
        listed.extend(page.users);
        if page.next_page_token.is_empty() {
            return (listed, total.expect("a first page"));
        }
        request.page_token = page.next_page_token;
    }
}

fn ids(users: &[proto::User]) -> BTreeSet<String> {
    users.iter().map(|user| user.id.clone()).collect()
}

async fn who_am_i(channel: &Channel, caller: &Caller) -> Result<proto::WhoAmIResponse, Status> {
    AuthServiceClient::new(channel.clone())
        .who_am_i(caller.req(proto::WhoAmIRequest {}))
        .await
        .map(tonic::Response::into_inner)
}

fn login_request(email: &str, password: &str) -> proto::LoginRequest {
    proto::LoginRequest {
        email: email.into(),
        password: password.into(),
        organisation_id: String::new(),
    }
}

async fn refresh(channel: &Channel, token: &str) -> Result<proto::RefreshResponse, Status> {
    AuthServiceClient::new(channel.clone())
        .refresh(proto::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A personal API token of the signed-in caller, valid for a day.
async fn create_api_token(channel: &Channel, access: &str) -> String {
    let expires_at = prost_types::Timestamp::from(SystemTime::now() + Duration::from_secs(86_400));
    let response = ApiTokenServiceClient::new(channel.clone())
        .create_api_token(authed(
            proto::CreateApiTokenRequest {
                name: "deploy script".into(),
                expires_at: Some(expires_at),
                permissions: Vec::new(),
            },
            access,
        ))
        .await
        .expect("create an API token")
        .into_inner();
    assert!(response.token.starts_with("umt_"), "{}", response.token);
    response.token
}

/// A pending invite by `caller`: its id and token.
async fn invite(channel: &Channel, caller: &Caller, email: &str) -> (String, String) {
    let response = users(channel)
        .create_invite(caller.req(proto::CreateInviteRequest {
            email: email.into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .unwrap_or_else(|status| panic!("invite {email}: {status:?}"))
        .into_inner();
    (
        response.invite.expect("the invite").id,
        response.invite_token,
    )
}

async fn pending_invites(channel: &Channel, caller: &Caller) -> BTreeSet<String> {
    users(channel)
        .list_invites(caller.req(proto::ListInvitesRequest::default()))
        .await
        .expect("list invites")
        .into_inner()
        .invites
        .into_iter()
        .map(|invite| invite.id)
        .collect()
}

async fn audit(channel: &Channel, token: &str, action: &str) -> Vec<proto::AuditEvent> {
    Session {
        channel: channel.clone(),
        token: token.into(),
    }
    .audit_events(proto::ListAuditEventsRequest {
        action: action.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|status| panic!("audit events {action}: {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_ends_every_credential_at_once_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let admin = Caller::Token(login(on_first, &org.admin_email, ADMIN_PASSWORD).await);
    let bob_email = "bob@acme.example.com";
    let bob_id = add_user(on_first, org, bob_email, Role::NanoUser)
        .await
        .to_string();
    let bob = sign_in(on_second, bob_email, PASSWORD).await;
    let bob_api_token = create_api_token(on_first, &bob.access_token).await;
    let credentials = [
        ("access token", Caller::Token(bob.access_token.clone())),
        ("API token", Caller::Token(bob_api_token.clone())),
    ];
    // Every credential is in both replicas' caches, and so is bob.
    for channel in [on_first, on_second] {
        for (what, credential) in &credentials {
            for _ in 0..2 {
                who_am_i(channel, credential)
                    .await
                    .unwrap_or_else(|status| panic!("warm bob's {what}: {status:?}"));
            }
        }
        get_user(channel, &admin, &bob_id).await.expect("warm bob");
        let (listed, total) =
            list_all(channel, &admin, Role::Unspecified, UserState::Suspended).await;
        assert!(listed.is_empty(), "nobody suspended yet: {listed:?}");
        assert_eq!(total, 0);
    }
    let before = get_user(on_first, &admin, &bob_id)
        .await
        .expect("bob before");
    assert_eq!(before.state, UserState::Active as i32);

    // The first step changes nothing.
    let confirmation = ask_suspend(on_second, &admin, &bob_id)
        .await
        .expect("first step");
    assert_eq!(confirmation.action, "user.suspend");
    assert_eq!(confirmation.user_id, bob_id);
    assert_eq!(confirmation.pending_invites, 0);
    assert!(!confirmation.confirmation_token.is_empty());
    assert!(confirmation.expires_at.is_some());
    assert!(
        confirmation.warning.contains(bob_email),
        "{}",
        confirmation.warning
    );
    for channel in [on_first, on_second] {
        for (what, credential) in &credentials {
            who_am_i(channel, credential)
                .await
                .unwrap_or_else(|status| panic!("bob's {what} after step one: {status:?}"));
        }
    }
    let unchanged = get_user(on_second, &admin, &bob_id)
        .await
        .expect("bob after step one");
    assert_eq!(
        unchanged.etag, before.etag,
        "the first step changes nothing"
    );

    // The second step, through the first replica.
    let suspended = confirm_suspend(on_first, &admin, &bob_id, &confirmation.confirmation_token)
        .await
        .expect("second step");
    assert_eq!(suspended.id, bob_id);
    assert_eq!(suspended.state, UserState::Suspended as i32);
    assert_eq!(suspended.role, Role::NanoUser as i32, "the role is kept");
    assert_ne!(
        suspended.token_key_fingerprint, before.token_key_fingerprint,
        "a new tokenKey"
    );
    assert_ne!(suspended.etag, before.etag);

    // The very next call fails on either replica, the other one first.
    for channel in [on_second, on_first] {
        for (what, credential) in &credentials {
            let result = who_am_i(channel, credential).await;
            assert!(result.is_err(), "bob's {what} still works: {result:?}");
            assert_status(result, Code::Unauthenticated, Some("TOKEN_REVOKED"));
        }
        assert_status(
            refresh(channel, &bob.refresh_token).await,
            Code::Unauthenticated,
            Some("REFRESH_TOKEN_INVALID"),
        );
        let seen = get_user(channel, &admin, &bob_id)
            .await
            .expect("bob, suspended");
        assert_eq!(seen.state, UserState::Suspended as i32);
        assert_eq!(seen.etag, suspended.etag);
        let (listed, total) =
            list_all(channel, &admin, Role::Unspecified, UserState::Suspended).await;
        assert_eq!(ids(&listed), BTreeSet::from([bob_id.clone()]));
        assert_eq!(total, 1);
        assert_status(
            AuthServiceClient::new(channel.clone())
                .login(login_request(bob_email, PASSWORD))
                .await,
            Code::FailedPrecondition,
            Some("USER_SUSPENDED"),
        );
    }

    // Reactivated through the second replica: the old credentials stay dead
    // everywhere, a new sign-in works everywhere.
    let active = reactivate(on_second, &admin, &bob_id, &suspended.etag)
        .await
        .expect("reactivate");
    assert_eq!(active.state, UserState::Active as i32);
    assert_eq!(
        active.token_key_fingerprint, suspended.token_key_fingerprint,
        "reactivation brings no old tokenKey back"
    );
    for channel in [on_first, on_second] {
        for (what, credential) in &credentials {
            let result = who_am_i(channel, credential).await;
            assert!(result.is_err(), "bob's old {what} works again: {result:?}");
            assert_status(result, Code::Unauthenticated, Some("TOKEN_REVOKED"));
        }
        assert_status(
            refresh(channel, &bob.refresh_token).await,
            Code::Unauthenticated,
            Some("REFRESH_TOKEN_INVALID"),
        );
    }
    let again = sign_in(on_first, bob_email, PASSWORD).await;
    for channel in [on_first, on_second] {
        let me = who_am_i(channel, &Caller::Token(again.access_token.clone()))
            .await
            .expect("bob's new access token")
            .user
            .expect("bob");
        assert_eq!(me.id, bob_id);
        assert_eq!(me.state, UserState::Active as i32);
    }
    refresh(on_second, &again.refresh_token)
        .await
        .expect("bob's new refresh token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_admin_is_shown_refused_sign_in_and_loses_their_invites() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let a_token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let a = Caller::Token(a_token.clone());
    let a_id = org.admin_id.to_string();
    let b_email = "b@acme.example.com";
    let b_user = Session {
        channel: channel.clone(),
        token: a_token.clone(),
    }
    .create_user(b_email, Role::NanoAdmin)
    .await
    .expect("create B");
    let b_id = b_user.id.clone();
    let carol_id = add_user(&channel, &org, "carol@acme.example.com", Role::NanoUser)
        .await
        .to_string();
    let b = Caller::Token(login(&channel, b_email, PASSWORD).await);
    let (b_invite_1, b_invite_token) = invite(&channel, &b, "new1@acme.example.com").await;
    let (b_invite_2, _) = invite(&channel, &b, "new2@acme.example.com").await;
    let (a_invite, _) = invite(&channel, &a, "new3@acme.example.com").await;
    let all_invites = BTreeSet::from([b_invite_1.clone(), b_invite_2.clone(), a_invite.clone()]);
    assert_eq!(pending_invites(&channel, &a).await, all_invites);

    let confirmation = ask_suspend(&channel, &a, &b_id).await.expect("first step");
    assert_eq!(confirmation.action, "user.suspend");
    assert_eq!(confirmation.user_id, b_id);
    assert_eq!(confirmation.pending_invites, 2, "B's two invites");
    assert_eq!(
        pending_invites(&channel, &a).await,
        all_invites,
        "the first step revokes nothing"
    );
    let suspended = confirm_suspend(&channel, &a, &b_id, &confirmation.confirmation_token)
        .await
        .expect("second step");
    assert_eq!(suspended.state, UserState::Suspended as i32);
    assert_eq!(suspended.role, Role::NanoAdmin as i32);

    // The state shows in GetUser and ListUsers, and filters.
    let got = get_user(&channel, &a, &b_id).await.expect("get B");
    assert_eq!(got.state, UserState::Suspended as i32);
    assert_eq!(got.etag, suspended.etag);
    let carol = get_user(&channel, &a, &carol_id).await.expect("get carol");
    assert_eq!(carol.state, UserState::Active as i32);
    let (listed, total) = list_all(&channel, &a, Role::Unspecified, UserState::Suspended).await;
    assert_eq!(ids(&listed), BTreeSet::from([b_id.clone()]));
    assert_eq!(total, 1);
    assert!(
        listed
            .iter()
            .all(|user| user.state == UserState::Suspended as i32)
    );
    let (listed, total) = list_all(&channel, &a, Role::Unspecified, UserState::Active).await;
    assert_eq!(
        ids(&listed),
        BTreeSet::from([a_id.clone(), carol_id.clone()])
    );
    assert_eq!(total, 2);
    let (listed, total) = list_all(&channel, &a, Role::NanoAdmin, UserState::Suspended).await;
    assert_eq!(ids(&listed), BTreeSet::from([b_id.clone()]));
    assert_eq!(total, 1);
    let (listed, total) = list_all(&channel, &a, Role::NanoUser, UserState::Suspended).await;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(total, 0);
    let (listed, total) = list_all(&channel, &a, Role::Unspecified, UserState::Unspecified).await;
    assert_eq!(total, 3);
    let shown = listed
        .iter()
        .find(|user| user.id == b_id)
        .expect("B in the unfiltered list");
    assert_eq!(shown.state, UserState::Suspended as i32);

    // B's invites are revoked, A's is not.
    assert_eq!(
        pending_invites(&channel, &a).await,
        BTreeSet::from([a_invite.clone()])
    );
    assert_status(
        AuthServiceClient::new(channel.clone())
            .accept_invite(proto::AcceptInviteRequest {
                invite_token: b_invite_token,
                password: PASSWORD.into(),
            })
            .await,
        Code::Unauthenticated,
        Some("INVITE_INVALID"),
    );

    // Sign-in: the right password says why; a wrong one says nothing more.
    let mut auth = AuthServiceClient::new(channel.clone());
    assert_status(
        auth.login(login_request(b_email, PASSWORD)).await,
        Code::FailedPrecondition,
        Some("USER_SUSPENDED"),
    );
    assert_status(
        auth.login(login_request(b_email, "not B's password")).await,
        Code::Unauthenticated,
        Some("LOGIN_FAILED"),
    );
    assert_status(
        who_am_i(&channel, &b).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );

    // Suspending again changes nothing.
    let again = ask_suspend(&channel, &a, &b_id)
        .await
        .expect("first step again");
    assert_eq!(again.pending_invites, 0, "nothing left to revoke");
    let unchanged = confirm_suspend(&channel, &a, &b_id, &again.confirmation_token)
        .await
        .expect("second step again");
    assert_eq!(unchanged.state, UserState::Suspended as i32);
    assert_eq!(unchanged.etag, suspended.etag, "no new version");
    assert_eq!(
        unchanged.token_key_fingerprint,
        suspended.token_key_fingerprint
    );

    let events = audit(&channel, &a_token, "user.suspend").await;
    assert_eq!(events.len(), 1, "one suspension audited: {events:?}");
    assert_eq!(events[0].target_id, b_id);
    assert_eq!(events[0].target_type, "user");
    assert_eq!(events[0].actor, format!("user:{a_id}"));
    assert_eq!(events[0].before, "active");
    assert_eq!(events[0].after, "suspended");
    let revoked: BTreeSet<String> = audit(&channel, &a_token, "invite.revoke")
        .await
        .into_iter()
        .map(|event| event.target_id)
        .collect();
    assert_eq!(revoked, BTreeSet::from([b_invite_1, b_invite_2]));

    // Reactivation: only the version read, then active; again, nothing.
    assert_status(
        reactivate(&channel, &a, &b_id, &b_user.etag).await,
        Code::Aborted,
        Some("CONCURRENT_MODIFICATION"),
    );
    assert_eq!(
        get_user(&channel, &a, &b_id).await.expect("B").state,
        UserState::Suspended as i32,
        "a stale etag reactivates nothing"
    );
    let active = reactivate(&channel, &a, &b_id, &suspended.etag)
        .await
        .expect("reactivate");
    assert_eq!(active.state, UserState::Active as i32);
    assert_eq!(active.role, Role::NanoAdmin as i32);
    assert_ne!(active.etag, suspended.etag);
    let still = reactivate(&channel, &a, &b_id, "")
        .await
        .expect("reactivate an active user");
    assert_eq!(still.state, UserState::Active as i32);
    assert_eq!(still.etag, active.etag, "no new version");
    let events = audit(&channel, &a_token, "user.reactivate").await;
    assert_eq!(events.len(), 1, "one reactivation audited: {events:?}");
    assert_eq!(events[0].target_id, b_id);
    assert_eq!(events[0].actor, format!("user:{a_id}"));
    assert_eq!(events[0].before, "suspended");
    assert_eq!(events[0].after, "active");

    // B's old token stays dead; B signs in again; the invites stay revoked.
    assert_status(
        who_am_i(&channel, &b).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let b_again = Caller::Token(login(&channel, b_email, PASSWORD).await);
    let me = who_am_i(&channel, &b_again)
        .await
        .expect("B signed in again")
        .user
        .expect("B");
    assert_eq!(me.state, UserState::Active as i32);
    assert_eq!(
        pending_invites(&channel, &b_again).await,
        BTreeSet::from([a_invite])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_of_the_users_organisation_suspend_and_reactivate() {
    let server = TestServer::start().await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let channel = server.channel().await;
    let carol_id = add_user(&channel, &acme, "carol@acme.example.com", Role::NanoUser)
        .await
        .to_string();
    let viewer_id = add_user(
        &channel,
        &acme,
        "viewer@acme.example.com",
        Role::NanoReadOnly,
    )
    .await
    .to_string();
    let admin_token = login(&channel, &acme.admin_email, ADMIN_PASSWORD).await;
    let admin = Caller::Token(admin_token.clone());
    let carol = Caller::Token(login(&channel, "carol@acme.example.com", PASSWORD).await);
    let viewer = Caller::Token(login(&channel, "viewer@acme.example.com", PASSWORD).await);
    let outsider = Caller::Token(login(&channel, &globex.admin_email, ADMIN_PASSWORD).await);
    let outsider_key = Caller::ApiKey(globex.api_key.clone());
    let acme_key = Caller::ApiKey(acme.api_key.clone());

    // Users without users.suspend: neither step, nor reactivation, not even
    // of themselves.
    for (caller, target) in [
        (&carol, &viewer_id),
        (&carol, &carol_id),
        (&viewer, &carol_id),
    ] {
        assert_status(
            ask_suspend(&channel, caller, target).await,
            Code::PermissionDenied,
            Some("PERMISSION_MISSING"),
        );
        assert_status(
            confirm_suspend(&channel, caller, target, "umc_not_a_real_token").await,
            Code::PermissionDenied,
            Some("PERMISSION_MISSING"),
        );
        assert_status(
            reactivate(&channel, caller, target, "").await,
            Code::PermissionDenied,
            Some("PERMISSION_MISSING"),
        );
    }
    // Another organisation's admin and API key find nobody.
    for caller in [&outsider, &outsider_key] {
        for target in [&carol_id, &acme.admin_id.to_string()] {
            assert_status(
                ask_suspend(&channel, caller, target).await,
                Code::NotFound,
                None,
            );
            assert_status(
                reactivate(&channel, caller, target, "").await,
                Code::NotFound,
                None,
            );
        }
    }
    // An unknown id is not found, a malformed one is named.
    assert_status(
        ask_suspend(&channel, &admin, &Uuid::now_v7().to_string()).await,
        Code::NotFound,
        None,
    );
    let status = assert_status(
        ask_suspend(&channel, &admin, "not-a-uuid").await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["user_id"]);
    let status = assert_status(
        reactivate(&channel, &admin, "not-a-uuid", "").await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["user_id"]);

    // Nothing happened to anyone.
    for caller in [&carol, &viewer] {
        who_am_i(&channel, caller)
            .await
            .expect("untouched by the refused calls");
    }
    assert!(
        audit(&channel, &admin_token, "user.suspend")
            .await
            .is_empty()
    );

    // The organisation API key acts as an admin, and is audited as itself.
    let suspended = suspend(&channel, &acme_key, &carol_id).await;
    assert_eq!(suspended.state, UserState::Suspended as i32);
    assert_status(
        who_am_i(&channel, &carol).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let events = audit(&channel, &admin_token, "user.suspend").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].target_id, carol_id);
    assert!(
        events[0].actor.starts_with("api_key:"),
        "{}",
        events[0].actor
    );
    // The outsider cannot reactivate the suspended user either.
    for caller in [&outsider, &outsider_key] {
        assert_status(
            reactivate(&channel, caller, &carol_id, "").await,
            Code::NotFound,
            None,
        );
    }
    let active = reactivate(&channel, &acme_key, &carol_id, "")
        .await
        .expect("the API key reactivates");
    assert_eq!(active.state, UserState::Active as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_user_gets_no_password_reset_mail() {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(&[
        "--smtp-url",
        &sink.url(),
        "--public-url",
        "https://dashboard.example.com",
        "--mail-from",
        "Streaming Cloud <no-reply@example.com>",
    ])
    .await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let bob_id = insert_user(&server.db, org.id, "bob@acme.example.com", "nanoUser")
        .await
        .to_string();
    suspend(&channel, &Caller::ApiKey(org.api_key.clone()), &bob_id).await;

    let mut auth = AuthServiceClient::new(channel.clone());
    let mut answers = Vec::new();
    for email in ["bob@acme.example.com", org.admin_email.as_str()] {
        answers.push(
            auth.request_password_reset(proto::RequestPasswordResetRequest {
                email: email.into(),
                organisation_id: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("request a reset for {email}: {status:?}"))
            .into_inner(),
        );
    }
    assert_eq!(answers[0], answers[1], "the same answer");
    sink.wait_for(1).await;
    // Every request done, bob's included.
    wait_until_outbox_empty(&server.db).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "only the active user's mail");
    assert_eq!(mails[0].envelope_to, std::slice::from_ref(&org.admin_email));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_active_admin_stays_even_beside_suspended_admins() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let a = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let a_caller = Caller::Token(a.token.clone());
    let key = Caller::ApiKey(org.api_key.clone());
    let a_id = org.admin_id.to_string();
    let b = a
        .create_user("b@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create B");
    let c = a
        .create_user("c@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create C");

    // Prepared while A has active peers; confirmed once it has none.
    let late = ask_suspend(&channel, &key, &a_id)
        .await
        .expect("first step while B and C are active");

    let b_suspended = suspend(&channel, &a_caller, &b.id).await;
    assert_eq!(b_suspended.state, UserState::Suspended as i32);
    let c_suspended = suspend(&channel, &a_caller, &c.id).await;
    assert_eq!(c_suspended.role, Role::NanoAdmin as i32);

    // A is the last active admin: suspended ones do not count.
    assert_status(
        ask_suspend(&channel, &key, &a_id).await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    assert_status(
        ask_suspend(&channel, &a_caller, &a_id).await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    assert_status(
        confirm_suspend(&channel, &key, &a_id, &late.confirmation_token).await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    assert_status(
        a.set_role(&a_id, Role::NanoUser, "").await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    assert_status(
        a.ask_delete(&a_id).await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    let me = a
        .who_am_i()
        .await
        .expect("A is still signed in")
        .user
        .expect("A");
    assert_eq!(me.state, UserState::Active as i32);
    assert_eq!(me.role, Role::NanoAdmin as i32);

    // A suspended admin may be demoted and deleted: A remains.
    let demoted = a
        .set_role(&c.id, Role::NanoUser, "")
        .await
        .expect("demote the suspended C");
    assert!(demoted.changed);
    let demoted = demoted.user.expect("C");
    assert_eq!(demoted.role, Role::NanoUser as i32);
    assert_eq!(
        demoted.state,
        UserState::Suspended as i32,
        "still suspended"
    );
    let confirmation = a.ask_delete(&b.id).await.expect("ask to delete B");
    let deleted = a
        .confirm_delete(&b.id, &confirmation.confirmation_token)
        .await
        .expect("delete the suspended B");
    assert_eq!(deleted.id, b.id);
    assert_status(get_user(&channel, &key, &b.id).await, Code::NotFound, None);

    let (admins, total) = list_all(&channel, &key, Role::NanoAdmin, UserState::Unspecified).await;
    assert_eq!(ids(&admins), BTreeSet::from([a_id]));
    assert_eq!(total, 1);
}

/// Two admins confirm each other's suspension at the same moment: exactly
/// one wins, and one active admin remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_suspending_each_other_leave_exactly_one_active() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    for round in 0..5 {
        let org = create_org(&server.db, &format!("Race{round}")).await;
        let key = Caller::ApiKey(org.api_key.clone());
        let a_id = org.admin_id.to_string();
        let a_session = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
        let b_email = format!("b@race{round}.example.com");
        let b_id = a_session
            .create_user(&b_email, Role::NanoAdmin)
            .await
            .expect("create B")
            .id;
        let a = Caller::Token(a_session.token.clone());
        let b = Caller::Token(login(&channel, &b_email, PASSWORD).await);
        // Both confirmations first, while both are active...
        let a_asks = ask_suspend(&channel, &a, &b_id)
            .await
            .expect("A's first step");
        let b_asks = ask_suspend(&channel, &b, &a_id)
            .await
            .expect("B's first step");
        // ...then both second steps at once, on channels of their own.
        let (a_channel, b_channel) = (server.channel().await, server.channel().await);
        let (a_result, b_result) = tokio::join!(
            confirm_suspend(&a_channel, &a, &b_id, &a_asks.confirmation_token),
            confirm_suspend(&b_channel, &b, &a_id, &b_asks.confirmation_token),
        );
        let (winner, winner_id, loser, loser_id, suspended, refusal) = match (a_result, b_result) {
            (Ok(user), Err(status)) => (&a, &a_id, &b, &b_id, user, status),
            (Err(status), Ok(user)) => (&b, &b_id, &a, &a_id, user, status),
            (a_result, b_result) => {
                panic!("round {round}: not exactly one winner: A {a_result:?}, B {b_result:?}")
            }
        };
        let reason = tonic_types::StatusExt::get_details_error_info(&refusal)
            .map(|info| info.reason)
            .unwrap_or_default();
        assert!(
            matches!(
                (refusal.code(), reason.as_str()),
                (Code::FailedPrecondition, "LAST_ADMIN") | (Code::Unauthenticated, "TOKEN_REVOKED")
            ),
            "round {round}: unexpected refusal: {refusal:?}"
        );
        assert_eq!(&suspended.id, loser_id);
        assert_eq!(suspended.state, UserState::Suspended as i32);

        let (active, total) = list_all(&channel, &key, Role::NanoAdmin, UserState::Active).await;
        assert_eq!(
            ids(&active),
            BTreeSet::from([winner_id.clone()]),
            "round {round}: exactly the winner is an active admin"
        );
        assert_eq!(total, 1, "round {round}");
        let (inactive, total) =
            list_all(&channel, &key, Role::NanoAdmin, UserState::Suspended).await;
        assert_eq!(ids(&inactive), BTreeSet::from([loser_id.clone()]));
        assert_eq!(total, 1, "round {round}");
        who_am_i(&channel, winner)
            .await
            .unwrap_or_else(|status| panic!("round {round}: the winner is signed in: {status:?}"));
        assert_status(
            who_am_i(&channel, loser).await,
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
        // Read the log with the winner's token: the loser's is dead.
        let Caller::Token(winner_token) = winner else {
            unreachable!("the racers are signed-in users")
        };
        let events = audit(&channel, winner_token, "user.suspend").await;
        assert_eq!(events.len(), 1, "round {round}: {events:?}");
        assert_eq!(&events[0].target_id, loser_id);
    }
}
