//! Every change has exactly one audit event, written with it.

use tonic::Code;
use usermgmt::proto::{self, Role, auth_service_client::AuthServiceClient};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_match_changes_one_to_one() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut rng = Lcg(20261128);
    let mut users: Vec<String> = Vec::new();
    let mut invites: Vec<(String, String)> = Vec::new();
    // The live session of each user that joined by an invite (accepting
    // signs in): a change that renews the user's tokenKey ends it, with an
    // event of its own.
    let mut sessions: std::collections::HashMap<String, String> = Default::default();
    // Each change the test made, as its event must say it: action, actor
    // and target, in the order made.
    let mut changes: Vec<(&str, String, String)> = Vec::new();
    let by_admin = format!("user:{}", org.admin_id);
    // A change of the organisation's members changes its role counts too.
    let org_id = org.id.to_string();
    let mut made = |action: &'static str, actor: &str, target: &str| {
        changes.push((action, actor.to_owned(), target.to_owned()));
    };
    let roles = [Role::NanoAdmin, Role::NanoUser, Role::NanoReadOnly];

    for step in 0..60 {
        let pick = |rng: &mut Lcg, items: usize| rng.next(items.max(1) as u64) as usize;
        match rng.next(7) {
            0 | 1 => {
                let role = roles[pick(&mut rng, 3)];
                if let Ok(user) = admin
                    .create_user(&format!("u{step}@acme.example.com"), role)
                    .await
                {
                    made("user.create", &by_admin, &user.id);
                    made("organisation.members", &by_admin, &org_id);
                    users.push(user.id);
                }
            }
            2 if !users.is_empty() => {
                let target = users[pick(&mut rng, users.len())].clone();
                let role = roles[pick(&mut rng, 3)];
                if let Ok(response) = admin.set_role(&target, role, "").await
                    && response.changed
                {
                    made("user.update_role", &by_admin, &target);
                    made("organisation.members", &by_admin, &org_id);
                    if let Some(session) = sessions.remove(&target) {
                        made("session.end", &by_admin, &session);
                    }
                }
            }
            3 if !users.is_empty() => {
                let target = users.remove(pick(&mut rng, users.len()));
                let confirmation = admin.ask_delete(&target).await.expect("first step");
                admin
                    .confirm_delete(&target, &confirmation.confirmation_token)
                    .await
                    .expect("delete");
                made("user.delete", &by_admin, &target);
                made("organisation.members", &by_admin, &org_id);
                if let Some(session) = sessions.remove(&target) {
                    made("session.end", &by_admin, &session);
                }
            }
            4 if !users.is_empty() => {
                let target = users[pick(&mut rng, users.len())].clone();
                let confirmation = admin.ask_renew(&target).await.expect("first step");
                admin
                    .confirm_renew(&target, &confirmation.confirmation_token)
                    .await
                    .expect("renew");
                made("user.renew_token_key", &by_admin, &target);
                if let Some(session) = sessions.remove(&target) {
                    made("session.end", &by_admin, &session);
                }
            }
            5 => {
                let request = proto::CreateInviteRequest {
                    email: format!("i{step}@acme.example.com"),
                    role: Role::NanoUser as i32,
                    ttl: None,
                };
                let created = admin
                    .users()
                    .create_invite(admin.req(request))
                    .await
                    .expect("invite")
                    .into_inner();
                let id = created.invite.expect("invite").id;
                made("invite.create", &by_admin, &id);
                invites.push((id, created.invite_token));
            }
            _ if !invites.is_empty() => {
                let (id, token) = invites.remove(pick(&mut rng, invites.len()));
                if rng.next(2) == 0 {
                    let revoke = proto::RevokeInviteRequest {
                        invite_id: id.clone(),
                    };
                    admin
                        .users()
                        .revoke_invite(admin.req(revoke))
                        .await
                        .expect("revoke");
                    made("invite.revoke", &by_admin, &id);
                } else {
                    let accept = proto::AcceptInviteRequest {
                        invite_token: token,
                        password: PASSWORD.into(),
                    };
                    let joined = auth
                        .accept_invite(accept)
                        .await
                        .expect("accept")
                        .into_inner();
                    // The new user accepts, as itself, and is created.
                    let joiner = format!("user:{}", joined.user_id);
                    made("invite.accept", &joiner, &id);
                    made("user.create", &joiner, &joined.user_id);
                    made("organisation.members", &joiner, &org_id);
                    sessions.insert(joined.user_id.clone(), joined.session_id.clone());
                    users.push(joined.user_id);
                }
            }
            _ => {
                // A refused change writes no event either.
                let refused = admin
                    .set_role(&org.admin_id.to_string(), Role::NanoUser, "\"0\"")
                    .await;
                assert_status(refused, Code::Aborted, None);
            }
        }
    }

    assert_eq!(audit_count(&server.db, org.id).await, changes.len() as i64);
    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            page_size: 7,
            ..Default::default()
        })
        .await
        .expect("list audit events");
    let recorded: Vec<(&str, String, String)> = events
        .iter()
        .rev()
        .filter(|e| is_call_event(e))
        .map(|e| (e.action.as_str(), e.actor.clone(), e.target_id.clone()))
        .collect();
    assert_eq!(recorded, changes, "one event per change, oldest first");
    let times: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "newest first");
    for event in &events {
        let text = format!("{event:?}");
        for secret in ["umi_", "umc_", "eyJ", "$argon2"] {
            assert!(
                !text.contains(secret),
                "an audit event holds a secret: {text}"
            );
        }
        // An operator's command is no call: it has no request id.
        assert!(event.actor == "operator" || !event.request_id.is_empty());
    }

    // Filters by action, actor and target.
    let deletions = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "user.delete".into(),
            ..Default::default()
        })
        .await
        .expect("by action");
    assert_eq!(
        deletions.len(),
        events.iter().filter(|e| e.action == "user.delete").count()
    );
    let by_admin = admin
        .audit_events(proto::ListAuditEventsRequest {
            actor: format!("user:{}", org.admin_id),
            ..Default::default()
        })
        .await
        .expect("by actor");
    assert_eq!(
        by_admin.len(),
        events
            .iter()
            .filter(|e| e.actor == format!("user:{}", org.admin_id))
            .count()
    );
    if let Some(first) = events.last() {
        let about = admin
            .audit_events(proto::ListAuditEventsRequest {
                target_id: first.target_id.clone(),
                ..Default::default()
            })
            .await
            .expect("by target");
        assert!(about.iter().all(|e| e.target_id == first.target_id));
        assert!(!about.is_empty());
    }
    let future = admin
        .audit_events(proto::ListAuditEventsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("by time");
    assert!(future.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_records_before_and_after_with_the_request_id() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let admin = Session::login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;
    let bob = admin
        .create_user("bob@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create");
    let mut request = admin.req(proto::UpdateUserRoleRequest {
        user_id: bob.id.clone(),
        role: Role::NanoReadOnly as i32,
        etag: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().expect("value"));
    admin
        .users()
        .update_user_role(request)
        .await
        .expect("demote");
    let events = admin
        .audit_events(proto::ListAuditEventsRequest {
            action: "user.update_role".into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.actor, format!("user:{}", org.admin_id));
    assert_eq!(event.target_id, bob.id);
    assert_eq!(event.target_label, "bob@acme.example.com");
    assert_eq!(
        (event.before.as_str(), event.after.as_str()),
        ("nanoAdmin", "nanoReadOnly")
    );
    assert_eq!(event.request_id, "req-42");
}
