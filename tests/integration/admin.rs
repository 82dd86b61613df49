//! User administration: create, invite, change role, delete, renew.

use tonic::Code;
use usermgmt::proto::{self, Role, auth_service_client::AuthServiceClient};
use uuid::Uuid;

use crate::support::*;

async fn admin_session(server: &TestServer) -> (Org, Session) {
    let org = create_org(&server.db, "Acme").await;
    let session = Session::login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;
    (org, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_users_with_normalised_unique_emails() {
    let server = TestServer::start().await;
    let (org, admin) = admin_session(&server).await;
    let user = admin
        .create_user("  Bob@Acme.Example.com", Role::NanoUser)
        .await
        .expect("create");
    assert_eq!(user.email, "bob@acme.example.com");
    assert_eq!(user.role, Role::NanoUser as i32);
    Session::login(&admin.channel, "bob@acme.example.com", PASSWORD).await;

    let again = admin
        .create_user("BOB@acme.example.com", Role::NanoReadOnly)
        .await;
    assert_status(again, Code::AlreadyExists, None);

    let bad = proto::CreateUserRequest {
        email: "bob".into(),
        role: Role::Unspecified as i32,
        password: "short".into(),
    };
    let status = assert_status(
        admin.users().create_user(admin.req(bad)).await,
        Code::InvalidArgument,
        None,
    );
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["email", "password", "role"]);

    // SQL-looking input is data, stored and returned verbatim.
    let odd = admin
        .create_user(
            "o'brien+\"x\";drop-table@acme.example.com",
            Role::NanoReadOnly,
        )
        .await
        .expect("odd but valid email");
    assert_eq!(odd.email, "o'brien+\"x\";drop-table@acme.example.com");
    // Two user.create, each with the organisation.members of the counts.
    assert_eq!(audit_count(&server.db, org.id).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_works_once_and_only_while_pending() {
    let server = TestServer::start().await;
    let (org, admin) = admin_session(&server).await;
    let mut auth = AuthServiceClient::new(admin.channel.clone());
    let invite = |email: &str| proto::CreateInviteRequest {
        email: email.into(),
        role: Role::NanoUser as i32,
        ttl: None,
    };
    let accept = |token: &str| proto::AcceptInviteRequest {
        invite_token: token.into(),
        password: PASSWORD.into(),
    };

    let created = admin
        .users()
        .create_invite(admin.req(invite("carol@acme.example.com")))
        .await
        .expect("invite")
        .into_inner();
    assert!(created.invite_token.starts_with("umi_"));
    let pending = admin
        .users()
        .list_invites(admin.req(proto::ListInvitesRequest::default()))
        .await
        .expect("list invites")
        .into_inner();
    assert_eq!(pending.invites.len(), 1);
    assert_eq!(pending.invites[0].email, "carol@acme.example.com");
    let duplicate = admin
        .users()
        .create_invite(admin.req(invite("carol@acme.example.com")))
        .await;
    assert_status(duplicate, Code::AlreadyExists, None);

    let joined = auth
        .accept_invite(accept(&created.invite_token))
        .await
        .expect("accept")
        .into_inner();
    assert_eq!(joined.organisation_id, org.id.to_string());
    let carol = Session {
        channel: admin.channel.clone(),
        token: joined.access_token,
    };
    let me = carol.who_am_i().await.expect("the new user is signed in");
    assert_eq!(me.role, Role::NanoUser as i32);
    assert_eq!(me.user.expect("user").email, "carol@acme.example.com");

    // Used, unknown, malformed, revoked and expired tokens fail alike.
    let used = auth.accept_invite(accept(&created.invite_token)).await;
    let used = assert_status(used, Code::Unauthenticated, Some("INVITE_INVALID"));
    let unknown = auth
        .accept_invite(accept("umi_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await;
    assert_eq!(
        assert_status(unknown, Code::Unauthenticated, Some("INVITE_INVALID")).message(),
        used.message()
    );
    assert_status(
        auth.accept_invite(accept("nonsense")).await,
        Code::Unauthenticated,
        Some("INVITE_INVALID"),
    );

    let revoked = admin
        .users()
        .create_invite(admin.req(invite("dave@acme.example.com")))
        .await
        .expect("invite")
        .into_inner();
    admin
        .users()
        .revoke_invite(admin.req(proto::RevokeInviteRequest {
            invite_id: revoked.invite.expect("invite").id,
        }))
        .await
        .expect("revoke");
    let after_revoke = auth.accept_invite(accept(&revoked.invite_token)).await;
    assert_status(after_revoke, Code::Unauthenticated, Some("INVITE_INVALID"));

    let expiring = admin
        .users()
        .create_invite(admin.req(invite("erin@acme.example.com")))
        .await
        .expect("invite")
        .into_inner();
    server
        .db
        .client()
        .await
        .execute("UPDATE invites SET expires_at = now() - interval '1 second' WHERE email = 'erin@acme.example.com'", &[])
        .await
        .expect("expire");
    let expired = auth.accept_invite(accept(&expiring.invite_token)).await;
    assert_status(expired, Code::Unauthenticated, Some("INVITE_INVALID"));

    // An existing user's email cannot be invited.
    let existing = admin
        .users()
        .create_invite(admin.req(invite("carol@acme.example.com")))
        .await;
    assert_status(existing, Code::AlreadyExists, None);
    // invite.create x3, invite.accept with the user.create of the user it
    // made and the organisation.members of its role counts, invite.revoke.
    assert_eq!(audit_count(&server.db, org.id).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_role_renews_the_token_key_on_every_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let admin = Session::login(on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create");
    let bob_on_second = Session::login(on_second, "bob@acme.example.com", PASSWORD).await;
    bob_on_second.who_am_i().await.expect("bob is signed in");

    // A downgrade from nanoAdmin to nanoReadOnly while bob is logged in.
    let changed = admin
        .set_role(&bob.id, Role::NanoReadOnly, &bob.etag)
        .await
        .expect("demote");
    assert!(changed.changed);
    let after = changed.user.expect("user");
    assert_ne!(after.token_key_fingerprint, bob.token_key_fingerprint);
    assert_ne!(after.etag, bob.etag);
    assert_status(
        bob_on_second.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );

    // Signed in again, bob has only the new role's rights.
    let bob_again = Session::login(on_second, "bob@acme.example.com", PASSWORD).await;
    let me = bob_again.who_am_i().await.expect("signed in again");
    assert_eq!(me.role, Role::NanoReadOnly as i32);
    let denied = bob_again
        .create_user("x@acme.example.com", Role::NanoUser)
        .await;
    assert_status(denied, Code::PermissionDenied, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_the_same_role_changes_nothing_and_stale_etags_abort() {
    let server = TestServer::start().await;
    let (org, admin) = admin_session(&server).await;
    let bob = admin
        .create_user("bob@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let bob_session = Session::login(&admin.channel, "bob@acme.example.com", PASSWORD).await;
    let events = audit_count(&server.db, org.id).await;

    let same = admin
        .set_role(&bob.id, Role::NanoUser, &bob.etag)
        .await
        .expect("same role");
    assert!(!same.changed);
    let same_user = same.user.expect("user");
    assert_eq!(same_user.token_key_fingerprint, bob.token_key_fingerprint);
    assert_eq!(same_user.etag, bob.etag);
    assert_eq!(
        audit_count(&server.db, org.id).await,
        events,
        "no event for no change"
    );
    bob_session
        .who_am_i()
        .await
        .expect("bob's token still works");

    let changed = admin
        .set_role(&bob.id, Role::NanoReadOnly, &bob.etag)
        .await
        .expect("change");
    assert!(changed.changed);
    // The etag read before the change is stale now.
    let stale = admin.set_role(&bob.id, Role::NanoAdmin, &bob.etag).await;
    assert_status(stale, Code::Aborted, None);
    let current = admin
        .users()
        .get_user(admin.req(proto::GetUserRequest {
            user_id: bob.id.clone(),
        }))
        .await;
    assert_eq!(
        current.expect("get").into_inner().user.expect("user").role,
        Role::NanoReadOnly as i32
    );
    // Without an etag the change applies.
    let unconditional = admin
        .set_role(&bob.id, Role::NanoAdmin, "")
        .await
        .expect("no etag");
    assert!(unconditional.changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_a_confirmation_bound_to_caller_action_and_user() {
    let server = TestServer::start().await;
    let (org, admin) = admin_session(&server).await;
    let second_admin = admin
        .create_user("root2@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create");
    let other_admin = Session::login(&admin.channel, "root2@acme.example.com", PASSWORD).await;
    let alice = admin
        .create_user("alice@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let bob = admin
        .create_user("bob@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let alice_session = Session::login(&admin.channel, "alice@acme.example.com", PASSWORD).await;
    let db = server.db.client().await;
    let user_count = || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("count")
            .get(0);
        n
    };
    let events = audit_count(&server.db, org.id).await;

    // Step one changes nothing and explains the consequences.
    let confirmation = admin.ask_delete(&alice.id).await.expect("first step");
    assert!(confirmation.confirmation_token.starts_with("umc_"));
    assert!(confirmation.warning.contains("alice@acme.example.com"));
    assert!(confirmation.warning.contains("Playback tokens"));
    assert_eq!(confirmation.action, "user.delete");
    assert_eq!(user_count().await, 4);
    alice_session.who_am_i().await.expect("alice is untouched");

    // Misuse changes nothing.
    let token = confirmation.confirmation_token.as_str();
    let for_bob = admin.confirm_delete(&bob.id, token).await;
    assert_status(
        for_bob,
        Code::FailedPrecondition,
        Some("CONFIRMATION_MISMATCH"),
    );
    let as_renew = admin.confirm_renew(&alice.id, token).await;
    assert_status(
        as_renew,
        Code::FailedPrecondition,
        Some("CONFIRMATION_MISMATCH"),
    );
    let by_other = other_admin.confirm_delete(&alice.id, token).await;
    assert_status(
        by_other,
        Code::FailedPrecondition,
        Some("CONFIRMATION_MISMATCH"),
    );
    let unknown = admin.confirm_delete(&alice.id, "umc_not-a-real-one").await;
    assert_status(
        unknown,
        Code::FailedPrecondition,
        Some("CONFIRMATION_INVALID"),
    );
    assert_eq!(user_count().await, 4);
    assert_eq!(audit_count(&server.db, org.id).await, events);

    // Step two deletes; the token is then used up.
    let deleted = admin
        .confirm_delete(&alice.id, token)
        .await
        .expect("second step");
    assert_eq!(deleted.email, "alice@acme.example.com");
    assert_eq!(user_count().await, 3);
    assert_status(
        alice_session.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let twice = admin.confirm_delete(&alice.id, token).await;
    assert_status(twice, Code::FailedPrecondition, Some("CONFIRMATION_USED"));
    let mut auth = AuthServiceClient::new(admin.channel.clone());
    let relogin = auth
        .login(proto::LoginRequest {
            email: "alice@acme.example.com".into(),
            password: PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await;
    assert_status(relogin, Code::Unauthenticated, Some("LOGIN_FAILED"));

    // An expired confirmation.
    let late = admin.ask_delete(&bob.id).await.expect("first step");
    db.execute(
        "UPDATE confirmations SET expires_at = now() - interval '1 second'",
        &[],
    )
    .await
    .expect("expire");
    let expired = admin
        .confirm_delete(&bob.id, &late.confirmation_token)
        .await;
    assert_status(
        expired,
        Code::FailedPrecondition,
        Some("CONFIRMATION_EXPIRED"),
    );
    assert_eq!(user_count().await, 3);
    // user.delete, the organisation.members of the role counts, and the
    // session.end of Alice's session.
    assert_eq!(audit_count(&server.db, org.id).await, events + 3);

    // A deleted user's email is free to invite again.
    let reinvite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "alice@acme.example.com".into(),
            role: Role::NanoReadOnly as i32,
            ttl: None,
        }))
        .await;
    reinvite.expect("the email is free again");
    let _ = second_admin;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_token_key_logs_the_user_out_everywhere() {
    let server = TestServer::start().await;
    let (_org, admin) = admin_session(&server).await;
    let viewer = admin
        .create_user("viewer@acme.example.com", Role::NanoReadOnly)
        .await
        .expect("create");
    let other = admin
        .create_user("other@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let viewer_session = Session::login(&admin.channel, "viewer@acme.example.com", PASSWORD).await;
    let second_device = Session::login(&admin.channel, "viewer@acme.example.com", PASSWORD).await;

    let confirmation = admin.ask_renew(&viewer.id).await.expect("first step");
    assert_eq!(confirmation.action, "user.renew_token_key");
    viewer_session
        .who_am_i()
        .await
        .expect("nothing changed yet");
    let renewed = admin
        .confirm_renew(&viewer.id, &confirmation.confirmation_token)
        .await
        .expect("renew");
    assert_ne!(renewed.token_key_fingerprint, viewer.token_key_fingerprint);
    for session in [&viewer_session, &second_device] {
        assert_status(
            session.who_am_i().await,
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    let fresh = Session::login(&admin.channel, "viewer@acme.example.com", PASSWORD).await;
    fresh.who_am_i().await.expect("a new login works");

    // Anyone may renew their own tokenKey, nobody else's without the permission.
    let own = fresh.ask_renew(&viewer.id).await.expect("own tokenKey");
    fresh
        .confirm_renew(&viewer.id, &own.confirmation_token)
        .await
        .expect("renew own");
    assert_status(
        fresh.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    let fresh = Session::login(&admin.channel, "viewer@acme.example.com", PASSWORD).await;
    assert_status(
        fresh.ask_renew(&other.id).await,
        Code::PermissionDenied,
        None,
    );
}

#[track_caller]
fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    assert_status(result, Code::PermissionDenied, Some("PERMISSION_MISSING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_observers_may_not_change_anything() {
    let server = TestServer::start().await;
    let (_org, admin) = admin_session(&server).await;
    let target = admin
        .create_user("target@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    admin
        .create_user("operator@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    admin
        .create_user("viewer@acme.example.com", Role::NanoReadOnly)
        .await
        .expect("create");
    let invite = admin
        .users()
        .create_invite(admin.req(proto::CreateInviteRequest {
            email: "new@acme.example.com".into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner()
        .invite
        .expect("invite");
    let confirmation = admin
        .ask_delete(&target.id)
        .await
        .expect("admin's confirmation");

    for email in ["operator@acme.example.com", "viewer@acme.example.com"] {
        let caller = Session::login(&admin.channel, email, PASSWORD).await;
        let mut users = caller.users();
        denied(
            users
                .create_user(caller.req(proto::CreateUserRequest {
                    email: "x@acme.example.com".into(),
                    role: Role::NanoAdmin as i32,
                    password: PASSWORD.into(),
                }))
                .await,
        );
        denied(
            users
                .create_invite(caller.req(proto::CreateInviteRequest {
                    email: "y@acme.example.com".into(),
                    role: Role::NanoAdmin as i32,
                    ttl: None,
                }))
                .await,
        );
        denied(
            users
                .list_invites(caller.req(proto::ListInvitesRequest::default()))
                .await,
        );
        denied(
            users
                .revoke_invite(caller.req(proto::RevokeInviteRequest {
                    invite_id: invite.id.clone(),
                }))
                .await,
        );
        denied(
            users
                .update_user_role(caller.req(proto::UpdateUserRoleRequest {
                    user_id: target.id.clone(),
                    role: Role::NanoAdmin as i32,
                    etag: String::new(),
                }))
                .await,
        );
        for token in ["", confirmation.confirmation_token.as_str()] {
            for action in [
                TwoStep::DeleteUser(target.id.clone()),
                TwoStep::RenewTokenKey(target.id.clone()),
            ] {
                denied(two_step::call(&caller.channel, &caller.caller(), &action, token).await);
            }
        }
        let audit = caller
            .audit_events(proto::ListAuditEventsRequest::default())
            .await;
        assert_status(audit, Code::PermissionDenied, Some("PERMISSION_MISSING"));
    }
    let still = admin
        .users()
        .get_user(admin.req(proto::GetUserRequest {
            user_id: target.id.clone(),
        }))
        .await;
    assert_eq!(
        still
            .expect("target exists")
            .into_inner()
            .user
            .expect("user")
            .role,
        Role::NanoUser as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_admin_finds_none_of_its_users() {
    let server = TestServer::start().await;
    let (acme, acme_admin) = admin_session(&server).await;
    let globex = create_org(&server.db, "Globex").await;
    let globex_admin =
        Session::login(&acme_admin.channel, &globex.admin_email, ADMIN_PASSWORD).await;
    let alice = acme_admin
        .create_user("alice@acme.example.com", Role::NanoUser)
        .await
        .expect("create");
    let invite = acme_admin
        .users()
        .create_invite(acme_admin.req(proto::CreateInviteRequest {
            email: "new@acme.example.com".into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .expect("invite")
        .into_inner()
        .invite
        .expect("invite");
    let acme_confirmation = acme_admin
        .ask_delete(&alice.id)
        .await
        .expect("acme's confirmation");

    for target in [acme.admin_id.to_string(), alice.id.clone()] {
        let get = globex_admin
            .users()
            .get_user(globex_admin.req(proto::GetUserRequest {
                user_id: target.clone(),
            }))
            .await;
        assert_status(get, Code::NotFound, None);
        assert_status(
            globex_admin.set_role(&target, Role::NanoReadOnly, "").await,
            Code::NotFound,
            None,
        );
        assert_status(globex_admin.ask_delete(&target).await, Code::NotFound, None);
        assert_status(globex_admin.ask_renew(&target).await, Code::NotFound, None);
    }
    // Not even with Acme's own confirmation token.
    let stolen = globex_admin
        .confirm_delete(&alice.id, &acme_confirmation.confirmation_token)
        .await;
    assert_status(
        stolen,
        Code::FailedPrecondition,
        Some("CONFIRMATION_MISMATCH"),
    );
    let revoke = globex_admin
        .users()
        .revoke_invite(globex_admin.req(proto::RevokeInviteRequest {
            invite_id: invite.id,
        }))
        .await;
    assert_status(revoke, Code::NotFound, None);
    let globex_events = globex_admin
        .audit_events(proto::ListAuditEventsRequest::default())
        .await
        .expect("audit");
    assert!(
        !globex_events.iter().any(is_call_event),
        "only Globex's own bootstrap and logins: {globex_events:?}"
    );
    let alice_now = acme_admin
        .users()
        .get_user(acme_admin.req(proto::GetUserRequest { user_id: alice.id }))
        .await;
    assert_eq!(
        alice_now
            .expect("alice")
            .into_inner()
            .user
            .expect("user")
            .etag,
        alice.etag
    );
    let _ = Uuid::nil();
}
