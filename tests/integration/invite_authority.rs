//! Invites die with their creator's authority: deleting a user, changing
//! their role to one without `users.invite`, or rotating the API key revokes
//! the pending invites they created, in the same transaction and audited
//! (`invite.revoke`, by whoever made the change). And AcceptInvite checks
//! the creator itself: an invite whose creator lost the authority behind
//! the service's back (by SQL, so nothing revoked it) is refused too.

use std::collections::BTreeSet;

use tonic::Code;
use tonic::transport::Channel;
use usermgmt::proto::{
    self, Role, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use uuid::Uuid;

use crate::support::*;

/// A pending invite: its id and its token.
#[derive(Debug, Clone)]
struct Invited {
    id: String,
    token: String,
    email: String,
}

async fn invite_as(
    channel: &Channel,
    request: tonic::Request<proto::CreateInviteRequest>,
) -> Invited {
    let email = request.get_ref().email.clone();
    let response = UserServiceClient::new(channel.clone())
        .create_invite(request)
        .await
        .unwrap_or_else(|status| panic!("invite {email}: {status:?}"))
        .into_inner();
    Invited {
        id: response.invite.expect("the invite").id,
        token: response.invite_token,
        email,
    }
}

fn invite_request(email: &str) -> proto::CreateInviteRequest {
    proto::CreateInviteRequest {
        email: email.into(),
        role: Role::NanoUser as i32,
        ttl: None,
    }
}

/// An invite created by a signed-in user.
async fn invite(session: &Session, email: &str) -> Invited {
    invite_as(&session.channel, session.req(invite_request(email))).await
}

/// An invite created with the organisation API key.
async fn invite_with_key(channel: &Channel, api_key: &str, email: &str) -> Invited {
    let request = with_header(invite_request(email), "x-bintu-apikey", api_key);
    invite_as(channel, request).await
}

async fn accept(
    channel: &Channel,
    invited: &Invited,
) -> Result<proto::AcceptInviteResponse, tonic::Status> {
    Ok(AuthServiceClient::new(channel.clone())
        .accept_invite(proto::AcceptInviteRequest {
            invite_token: invited.token.clone(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner())
}

/// The invite cannot be accepted, and no user was created for it.
async fn assert_refused(server: &TestServer, channel: &Channel, org: Uuid, invited: &Invited) {
    let result = accept(channel, invited).await;
    assert_status(result, Code::Unauthenticated, Some("INVITE_INVALID"));
    let users: i64 = server
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM users WHERE organisation_id = $1 AND email = $2",
            &[&org, &invited.email],
        )
        .await
        .expect("count users")
        .get(0);
    assert_eq!(users, 0, "{}: no user was created", invited.email);
}

/// The invite is accepted: its creator kept the authority.
async fn assert_accepted(channel: &Channel, invited: &Invited) {
    accept(channel, invited)
        .await
        .unwrap_or_else(|status| panic!("{} should join: {status:?}", invited.email));
}

/// Whether the invite row is revoked, straight from the database.
async fn revoked(server: &TestServer, invited: &Invited) -> bool {
    server
        .db
        .client()
        .await
        .query_one(
            "SELECT revoked_at IS NOT NULL FROM invites WHERE id = $1::text::uuid",
            &[&invited.id],
        )
        .await
        .expect("the invite row")
        .get(0)
}

/// The organisation's `invite.revoke` events.
async fn revocations(admin: &Session) -> Vec<proto::AuditEvent> {
    admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "invite.revoke".into(),
            ..Default::default()
        })
        .await
        .expect("list invite.revoke events")
}

/// The request id of the one `action` event about `target_id`: the call
/// that made the change.
async fn request_of(admin: &Session, action: &str, target_id: &str) -> String {
    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: action.into(),
            target_id: target_id.into(),
            ..Default::default()
        })
        .await
        .expect("list audit events");
    assert_eq!(events.len(), 1, "one {action} of {target_id}: {events:#?}");
    assert!(!events[0].request_id.is_empty(), "{:?}", events[0]);
    events[0].request_id.clone()
}

/// Exactly one `invite.revoke` event per invite of `invites`, each by
/// `actor`, about that invite, written by the call `request_id`.
#[track_caller]
fn assert_revoked_by(
    events: &[proto::AuditEvent],
    invites: &[&Invited],
    actor: &str,
    request_id: &str,
) {
    for invited in invites {
        let about: Vec<_> = events
            .iter()
            .filter(|e| e.target_id == invited.id)
            .collect();
        assert_eq!(
            about.len(),
            1,
            "one invite.revoke of {} ({}): {events:#?}",
            invited.email,
            invited.id
        );
        assert_eq!(about[0].actor, actor, "{}: {:?}", invited.email, about[0]);
        assert_eq!(about[0].target_type, "invite", "{:?}", about[0]);
        assert_eq!(about[0].action, "invite.revoke", "{:?}", about[0]);
        assert_eq!(
            about[0].request_id, request_id,
            "{}: revoked by the call that took the authority away: {:?}",
            invited.email, about[0]
        );
    }
}

/// The ids of the organisation's pending invites, as ListInvites gives them.
async fn pending(admin: &Session) -> BTreeSet<String> {
    admin
        .users()
        .list_invites(admin.req(proto::ListInvitesRequest::default()))
        .await
        .expect("list invites")
        .into_inner()
        .invites
        .into_iter()
        .map(|invite| invite.id)
        .collect()
}

/// An organisation with its first admin A signed in, and a second admin.
async fn org_with_two_admins(server: &TestServer, name: &str) -> (Org, Session, Session, String) {
    let org = create_org(&server.db, name).await;
    let channel = server.channel().await;
    let a = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let (b_id, b) = another_admin(&a, &format!("b@{}.example.com", name.to_lowercase())).await;
    (org, a, b, b_id)
}

/// A new nanoAdmin, made by `admin`, signed in.
async fn another_admin(admin: &Session, email: &str) -> (String, Session) {
    let user = admin
        .create_user(email, Role::NanoAdmin)
        .await
        .expect("create an admin");
    (
        user.id,
        Session::login(&admin.channel, email, PASSWORD).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_the_invites_they_created() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (org, a, b, b_id) = org_with_two_admins(&server, "Acme").await;
    let b1 = invite(&b, "b1@acme.example.com").await;
    let b2 = invite(&b, "b2@acme.example.com").await;
    // Revoked by B already: not pending, not revoked again.
    let b3 = invite(&b, "b3@acme.example.com").await;
    b.users()
        .revoke_invite(b.req(proto::RevokeInviteRequest {
            invite_id: b3.id.clone(),
        }))
        .await
        .expect("B revokes b3");
    let a1 = invite(&a, "a1@acme.example.com").await;
    let k1 = invite_with_key(&channel, &org.api_key, "k1@acme.example.com").await;

    let renewal = a.ask_renew(&b_id).await.expect("ask to renew B's tokenKey");
    assert_eq!(renewal.pending_invites, 0, "a renewal revokes no invite");
    let confirmation = a.ask_delete(&b_id).await.expect("ask to delete B");
    assert_eq!(confirmation.pending_invites, 2, "{confirmation:?}");
    let warning = confirmation.warning.to_lowercase();
    assert!(
        warning.contains("invite") && warning.contains('2'),
        "the warning names the 2 invites: {}",
        confirmation.warning
    );
    a.confirm_delete(&b_id, &confirmation.confirmation_token)
        .await
        .expect("delete B");

    assert!(revoked(&server, &b1).await && revoked(&server, &b2).await);
    let listed = pending(&a).await;
    assert_eq!(listed, BTreeSet::from([a1.id.clone(), k1.id.clone()]));
    let events = revocations(&a).await;
    let deletion = request_of(&a, "user.delete", &b_id).await;
    assert_revoked_by(
        &events,
        &[&b1, &b2],
        &format!("user:{}", org.admin_id),
        &deletion,
    );
    let own = request_of(&a, "invite.revoke", &b3.id).await;
    assert_revoked_by(&events, &[&b3], &format!("user:{b_id}"), &own);
    assert_eq!(events.len(), 3, "{events:#?}");
    for invited in [&b1, &b2, &b3] {
        assert_refused(&server, &channel, org.id, invited).await;
    }
    // Another admin's invites, and the API key's, are untouched.
    assert_accepted(&channel, &a1).await;
    assert_accepted(&channel, &k1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_users_invite_revokes_the_users_invites() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (org, a, b, b_id) = org_with_two_admins(&server, "Acme").await;
    let (c_id, c) = another_admin(&a, "c@acme.example.com").await;
    let b1 = invite(&b, "b1@acme.example.com").await;
    let b2 = invite(&b, "b2@acme.example.com").await;
    let c1 = invite(&c, "c1@acme.example.com").await;
    let a1 = invite(&a, "a1@acme.example.com").await;

    let to_user = a
        .set_role(&b_id, Role::NanoUser, "")
        .await
        .expect("B becomes nanoUser");
    assert!(to_user.changed);
    assert_eq!(to_user.revoked_invites, 2, "{to_user:?}");
    let to_read_only = a
        .set_role(&c_id, Role::NanoReadOnly, "")
        .await
        .expect("C becomes nanoReadOnly");
    assert_eq!(to_read_only.revoked_invites, 1, "{to_read_only:?}");
    let unchanged = a
        .set_role(&b_id, Role::NanoUser, "")
        .await
        .expect("B is nanoUser already");
    assert!(!unchanged.changed);
    assert_eq!(unchanged.revoked_invites, 0, "{unchanged:?}");

    let events = revocations(&a).await;
    let a_actor = format!("user:{}", org.admin_id);
    let b_change = request_of(&a, "user.update_role", &b_id).await;
    assert_revoked_by(&events, &[&b1, &b2], &a_actor, &b_change);
    let c_change = request_of(&a, "user.update_role", &c_id).await;
    assert_revoked_by(&events, &[&c1], &a_actor, &c_change);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(pending(&a).await, BTreeSet::from([a1.id.clone()]));
    for invited in [&b1, &b2, &c1] {
        assert_refused(&server, &channel, org.id, invited).await;
    }
    assert_accepted(&channel, &a1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_api_key_revokes_the_invites_made_with_the_old_key() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let a = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let k1 = invite_with_key(&channel, &org.api_key, "k1@acme.example.com").await;
    let k2 = invite_with_key(&channel, &org.api_key, "k2@acme.example.com").await;
    let a1 = invite(&a, "a1@acme.example.com").await;

    let confirmation = a.ask(&TwoStep::RotateApiKey).await.expect("ask to rotate");
    let rotated = a
        .confirm(&TwoStep::RotateApiKey, &confirmation.confirmation_token)
        .await
        .expect("rotate")
        .rotated();

    let events = revocations(&a).await;
    let rotation = request_of(&a, "organisation.rotate_api_key", &org.id.to_string()).await;
    assert_revoked_by(
        &events,
        &[&k1, &k2],
        &format!("user:{}", org.admin_id),
        &rotation,
    );
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(revoked(&server, &k1).await && revoked(&server, &k2).await);
    for invited in [&k1, &k2] {
        assert_refused(&server, &channel, org.id, invited).await;
    }
    assert_accepted(&channel, &a1).await;
    // The new key's invites work.
    let k3 = invite_with_key(&channel, &rotated.api_key, "k3@acme.example.com").await;
    assert_accepted(&channel, &k3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_whose_creator_lost_the_authority_by_sql_is_refused() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let (org, a, b, b_id) = org_with_two_admins(&server, "Acme").await;
    let (c_id, c) = another_admin(&a, "c@acme.example.com").await;
    let (d_id, d) = another_admin(&a, "d@acme.example.com").await;
    let demoted = invite(&b, "b1@acme.example.com").await;
    let deleted = invite(&c, "c1@acme.example.com").await;
    let renewed = invite(&d, "d1@acme.example.com").await;
    let rotated = invite_with_key(&channel, &org.api_key, "k1@acme.example.com").await;
    let a1 = invite(&a, "a1@acme.example.com").await;

    // Behind the service's back: nothing revokes the invites.
    let db = server.db.client().await;
    for (sql, id) in [
        (
            "UPDATE users SET role = 'nanoUser' WHERE id = $1::text::uuid",
            &b_id,
        ),
        ("DELETE FROM users WHERE id = $1::text::uuid", &c_id),
        (
            "UPDATE users SET token_key = gen_random_uuid() WHERE id = $1::text::uuid",
            &d_id,
        ),
        (
            "UPDATE organisations SET api_key_hash = sha256(gen_random_uuid()::text::bytea), \
             api_key_fingerprint = 'rotatedbysql' WHERE id = $1::text::uuid",
            &org.id.to_string(),
        ),
    ] {
        assert_eq!(db.execute(sql, &[id]).await.expect(sql), 1, "{sql}");
    }
    let audit_before = audit_count(&server.db, org.id).await;

    for invited in [&demoted, &deleted, &rotated] {
        assert_refused(&server, &channel, org.id, invited).await;
        let (accepted, revoked): (bool, bool) = {
            let row = db
                .query_one(
                    "SELECT accepted_at IS NOT NULL, revoked_at IS NOT NULL FROM invites \
                     WHERE id = $1::text::uuid",
                    &[&invited.id],
                )
                .await
                .expect("the invite row");
            (row.get(0), row.get(1))
        };
        assert!(!accepted, "{}: not used up", invited.email);
        assert!(!revoked, "{}: nothing revoked it", invited.email);
    }
    assert_eq!(
        audit_count(&server.db, org.id).await,
        audit_before,
        "a refused invite writes no audit event"
    );
    // A renewed tokenKey takes no authority away; another admin's invite is
    // untouched.
    assert_accepted(&channel, &renewed).await;
    assert_accepted(&channel, &a1).await;
}
