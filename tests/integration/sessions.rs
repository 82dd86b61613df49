//! Sessions: refresh rotation and reuse detection, logout, one session's
//! revocation across replicas, admins and other organisations, and the
//! changes that end every session of a user.

use tonic::Code;
use usermgmt::proto::{
    self, auth_service_client::AuthServiceClient, session_service_client::SessionServiceClient,
};

use crate::support::*;

async fn refresh(
    channel: &tonic::transport::Channel,
    token: &str,
) -> Result<proto::RefreshResponse, tonic::Status> {
    AuthServiceClient::new(channel.clone())
        .refresh(proto::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn who_am_i(channel: &tonic::transport::Channel, token: &str) -> Result<(), tonic::Status> {
    AuthServiceClient::new(channel.clone())
        .who_am_i(authed(proto::WhoAmIRequest {}, token))
        .await
        .map(|_| ())
}

async fn list_sessions(
    channel: &tonic::transport::Channel,
    token: &str,
    user_id: &str,
) -> Result<Vec<proto::Session>, tonic::Status> {
    SessionServiceClient::new(channel.clone())
        .list_sessions(authed(
            proto::ListSessionsRequest {
                user_id: user_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().sessions)
}

async fn revoke(
    channel: &tonic::transport::Channel,
    token: &str,
    session_id: &str,
) -> Result<(), tonic::Status> {
    SessionServiceClient::new(channel.clone())
        .revoke_session(authed(
            proto::RevokeSessionRequest {
                session_id: session_id.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_refresh_token_ends_the_session() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let first = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let other = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;

    let rotated = refresh(&channel, &first.refresh_token)
        .await
        .expect("refresh");
    assert!(rotated.refresh_token.starts_with("umr_"));
    assert_ne!(rotated.refresh_token, first.refresh_token, "rotated");
    who_am_i(&channel, &rotated.access_token)
        .await
        .expect("the new access token works");
    who_am_i(&channel, &first.access_token)
        .await
        .expect("the session's earlier access token too: same session");

    // The used one again: somebody holds a copy. The session ends.
    assert_status(
        refresh(&channel, &first.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_REUSED"),
    );
    assert_status(
        who_am_i(&channel, &rotated.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    assert_status(
        refresh(&channel, &rotated.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
    who_am_i(&channel, &other.access_token)
        .await
        .expect("the user's other session is untouched");

    let admin = Session {
        channel: channel.clone(),
        token: other.access_token.clone(),
    };
    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "session.refresh_token_reused".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].target_id, first.session_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_let_at_most_one_through_and_end_the_session() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let signed = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let channel = channel.clone();
            let token = signed.refresh_token.clone();
            tokio::spawn(async move { refresh(&channel, &token).await })
        })
        .collect();
    let mut won = Vec::new();
    let mut reused = 0;
    for racer in racers {
        match racer.await.expect("join") {
            Ok(response) => won.push(response),
            Err(status) => {
                assert_status::<()>(Err(status), Code::Unauthenticated, None);
                reused += 1;
            }
        }
    }
    assert!(won.len() <= 1, "a refresh token works once: {}", won.len());
    assert!(reused >= 7);
    // Whoever won, the session is over: the reuse ended it.
    for response in won {
        assert_status(
            who_am_i(&channel, &response.access_token).await,
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
        assert_status(
            refresh(&channel, &response.refresh_token).await,
            Code::Unauthenticated,
            Some("REFRESH_TOKEN_INVALID"),
        );
    }
    assert_status(
        who_am_i(&channel, &signed.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_one_session_revocation_hold_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let laptop = sign_in(on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let phone = sign_in(on_second, &org.admin_email, ADMIN_PASSWORD).await;
    let tablet = sign_in(on_second, &org.admin_email, ADMIN_PASSWORD).await;
    // Every session is in both replicas' caches.
    for channel in [on_first, on_second] {
        for signed in [&laptop, &phone, &tablet] {
            who_am_i(channel, &signed.access_token).await.expect("warm");
            who_am_i(channel, &signed.access_token)
                .await
                .expect("cached");
        }
    }

    AuthServiceClient::new(on_first.clone())
        .logout(authed(proto::LogoutRequest {}, &laptop.access_token))
        .await
        .expect("logout");
    assert_status(
        who_am_i(on_second, &laptop.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    assert_status(
        refresh(on_second, &laptop.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );

    // One session ended through the second replica; the first refuses it.
    revoke(on_second, &tablet.access_token, &phone.session_id)
        .await
        .expect("revoke one's own other session");
    assert_status(
        who_am_i(on_first, &phone.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    // The remaining session keeps working everywhere.
    for channel in [on_first, on_second] {
        who_am_i(channel, &tablet.access_token)
            .await
            .expect("the other session works");
    }
    let listed = list_sessions(on_first, &tablet.access_token, "")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "only the live session: {listed:?}");
    assert_eq!(listed[0].id, tablet.session_id);
    assert!(listed[0].current);
    assert_eq!(
        listed[0].user_agent.split(' ').next(),
        Some("session-test/1.0")
    );
    assert_eq!(listed[0].client_address, "127.0.0.1");
    // Ended is ended: a second revocation finds nothing.
    assert_status(
        revoke(on_first, &tablet.access_token, &phone.session_id).await,
        Code::NotFound,
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_and_end_sessions_of_their_organisation_only() {
    let server = TestServer::start().await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let channel = server.channel().await;
    let admin = sign_in(&channel, &acme.admin_email, ADMIN_PASSWORD).await;
    let bob_id = add_user(
        &channel,
        &acme,
        "bob@acme.example.com",
        proto::Role::NanoUser,
    )
    .await;
    let bob_laptop = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    let bob_phone = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    let outsider = sign_in(&channel, &globex.admin_email, ADMIN_PASSWORD).await;

    // Paged, oldest first; not the admin's own, so none is current.
    let mut sessions = SessionServiceClient::new(channel.clone());
    let first_page = sessions
        .list_sessions(authed(
            proto::ListSessionsRequest {
                user_id: bob_id.to_string(),
                page_size: 1,
                page_token: String::new(),
            },
            &admin.access_token,
        ))
        .await
        .expect("admin lists bob's sessions")
        .into_inner();
    assert_eq!(first_page.sessions.len(), 1);
    assert_eq!(first_page.sessions[0].id, bob_laptop.session_id);
    assert!(!first_page.sessions[0].current);
    assert_eq!(first_page.sessions[0].user_id, bob_id.to_string());
    let second_page = sessions
        .list_sessions(authed(
            proto::ListSessionsRequest {
                user_id: bob_id.to_string(),
                page_size: 1,
                page_token: first_page.next_page_token,
            },
            &admin.access_token,
        ))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second_page.sessions.len(), 1);
    assert_eq!(second_page.sessions[0].id, bob_phone.session_id);

    // A nanoUser may not look at or end others' sessions.
    assert_status(
        list_sessions(
            &channel,
            &bob_laptop.access_token,
            &acme.admin_id.to_string(),
        )
        .await,
        Code::PermissionDenied,
        None,
    );
    assert_status(
        revoke(&channel, &bob_laptop.access_token, &admin.session_id).await,
        Code::PermissionDenied,
        None,
    );
    // Another organisation's admin finds nothing.
    assert_status(
        list_sessions(&channel, &outsider.access_token, &bob_id.to_string()).await,
        Code::NotFound,
        None,
    );
    assert_status(
        revoke(&channel, &outsider.access_token, &bob_phone.session_id).await,
        Code::NotFound,
        None,
    );
    who_am_i(&channel, &bob_phone.access_token)
        .await
        .expect("untouched by the outsider");

    // The admin ends one of bob's sessions; the other keeps working.
    revoke(&channel, &admin.access_token, &bob_phone.session_id)
        .await
        .expect("admin revokes");
    assert_status(
        who_am_i(&channel, &bob_phone.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    who_am_i(&channel, &bob_laptop.access_token)
        .await
        .expect("bob's other session");

    // The API key acts with admin rights, but has no session of its own.
    let listed = sessions
        .list_sessions(with_header(
            proto::ListSessionsRequest {
                user_id: bob_id.to_string(),
                ..Default::default()
            },
            "x-bintu-apikey",
            &acme.api_key,
        ))
        .await
        .expect("the API key lists")
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    assert_status(
        AuthServiceClient::new(channel.clone())
            .logout(with_header(
                proto::LogoutRequest {},
                "x-bintu-apikey",
                &acme.api_key,
            ))
            .await,
        Code::FailedPrecondition,
        Some("SESSION_REQUIRED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let here = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let elsewhere = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let change = |current: &str, new: &str| {
        authed(
            proto::ChangePasswordRequest {
                current_password: current.into(),
                new_password: new.into(),
            },
            &here.access_token,
        )
    };

    let wrong = assert_status(
        auth.change_password(change("not it at all", "a new password 2"))
            .await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&wrong), ["current_password"]);
    let short = assert_status(
        auth.change_password(change(ADMIN_PASSWORD, "short")).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&short), ["new_password"]);
    who_am_i(&channel, &elsewhere.access_token)
        .await
        .expect("a refused change ends nothing");

    auth.change_password(change(ADMIN_PASSWORD, "a new password 2"))
        .await
        .expect("change");
    who_am_i(&channel, &here.access_token)
        .await
        .expect("the current session stays");
    assert_status(
        who_am_i(&channel, &elsewhere.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    assert_status(
        refresh(&channel, &elsewhere.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
    refresh(&channel, &here.refresh_token)
        .await
        .expect("the current session refreshes");
    assert_status(
        auth.login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: ADMIN_PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await,
        Code::Unauthenticated,
        Some("LOGIN_FAILED"),
    );
    sign_in(&channel, &org.admin_email, "a new password 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_a_renewal_and_a_deletion_end_every_session() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("create");
    let bob_session = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    admin
        .set_role(&bob.id, proto::Role::NanoReadOnly, &bob.etag)
        .await
        .expect("demote");
    assert_status(
        refresh(&channel, &bob_session.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
    assert!(
        list_sessions(&channel, &admin.token, &bob.id)
            .await
            .expect("list")
            .is_empty()
    );

    let bob_session = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    let confirmation = admin.ask_renew(&bob.id).await.expect("ask");
    admin
        .confirm_renew(&bob.id, &confirmation.confirmation_token)
        .await
        .expect("renew");
    assert_status(
        refresh(&channel, &bob_session.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );

    let bob_session = sign_in(&channel, "bob@acme.example.com", PASSWORD).await;
    let confirmation = admin.ask_delete(&bob.id).await.expect("ask");
    admin
        .confirm_delete(&bob.id, &confirmation.confirmation_token)
        .await
        .expect("delete");
    assert_status(
        refresh(&channel, &bob_session.refresh_token).await,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
    assert_status(
        who_am_i(&channel, &bob_session.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_audited_and_shown_on_the_user() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let mut auth = AuthServiceClient::new(channel.clone());
    assert_status(
        auth.login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: "a wrong guess".into(),
            organisation_id: String::new(),
        })
        .await,
        Code::Unauthenticated,
        Some("LOGIN_FAILED"),
    );
    assert_status(
        auth.login(proto::LoginRequest {
            email: "nobody@acme.example.com".into(),
            password: "a wrong guess".into(),
            organisation_id: String::new(),
        })
        .await,
        Code::Unauthenticated,
        Some("LOGIN_FAILED"),
    );
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let me = admin.who_am_i().await.expect("who am i");
    assert!(me.user.expect("user").last_login_at.is_some());

    let failed = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "login.failed".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        failed.len(),
        1,
        "the unknown email is not audited: {failed:?}"
    );
    assert_eq!(failed[0].target_id, org.admin_id.to_string());
    assert!(
        failed[0].after.contains("peer 127.0.0.1"),
        "{:?}",
        failed[0]
    );
    assert!(!failed[0].after.contains("a wrong guess"));
    let succeeded = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "login.succeeded".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(succeeded.len(), 1);
}

/// A write admitted with a session and already past its commit re-check
/// (here: waiting for a row the test holds) when the session is ended by a
/// call that, like it, takes the organisation's lock only shared. The end
/// must not be acknowledged before the write commits: the write re-read the
/// session `FOR SHARE`, so ending it waits. Otherwise the write would land
/// after the session's end was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_waits_for_a_write_already_past_its_recheck() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let writer = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let ender = sign_in(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let end = {
        let (channel, access, session) = (
            channel.clone(),
            ender.access_token.clone(),
            writer.session_id.clone(),
        );
        async move { revoke(&channel, &access, &session).await }
    };
    let (written, ended) = crate::support::lock::end_while_a_write_waits(
        &server.db,
        &channel,
        org.id,
        &writer.access_token,
        end,
    )
    .await;
    written.expect("the write, admitted before the end, commits");
    ended.expect("then the session ends");
    assert_status(
        who_am_i(&channel, &writer.access_token).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}
