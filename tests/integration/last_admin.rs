//! An organisation always keeps a nanoAdmin, whatever races.

use tonic::Code;
use usermgmt::proto::Role;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_can_be_neither_demoted_nor_deleted() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let admin = Session::login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;
    let me = org.admin_id.to_string();
    let demote = admin.set_role(&me, Role::NanoUser, "").await;
    assert_status(demote, Code::FailedPrecondition, Some("LAST_ADMIN"));
    assert_status(
        admin.ask_delete(&me).await,
        Code::FailedPrecondition,
        Some("LAST_ADMIN"),
    );
    admin
        .who_am_i()
        .await
        .expect("still an admin, still signed in");
}

/// Admins demote and delete each other all at once, many times over: every
/// time, at least one admin is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demotions_and_deletions_always_leave_an_admin() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let db = server.db.client().await;
    for round in 0..8 {
        let org = create_org(&server.db, &format!("Race{round}")).await;
        let first = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
        let admin_count = if round % 2 == 0 { 2 } else { 3 };
        let mut admins = vec![(org.admin_id.to_string(), first.clone())];
        for i in 1..admin_count {
            let email = format!("admin{i}@race{round}.example.com");
            let user = first
                .create_user(&email, Role::NanoAdmin)
                .await
                .expect("create admin");
            admins.push((user.id, Session::login(&channel, &email, PASSWORD).await));
        }
        // Every admin prepares the deletion of every other admin...
        let mut confirmations = Vec::new();
        for (_, actor) in &admins {
            for (target, _) in &admins {
                let confirmation = actor.ask_delete(target).await.expect("first step");
                confirmations.push((
                    actor.clone(),
                    target.clone(),
                    confirmation.confirmation_token,
                ));
            }
        }
        // ...then all demotions and deletions are fired at the same moment.
        let mut tasks = tokio::task::JoinSet::new();
        for (actor, target, token) in confirmations {
            let demoter = actor.clone();
            let demoted = target.clone();
            tasks.spawn(async move {
                demoter
                    .set_role(&demoted, Role::NanoReadOnly, "")
                    .await
                    .map(|_| ())
            });
            tasks.spawn(async move { actor.confirm_delete(&target, &token).await.map(|_| ()) });
        }
        let mut refusals = 0;
        while let Some(joined) = tasks.join_next().await {
            if let Err(status) = joined.expect("task") {
                refusals += 1;
                assert!(
                    matches!(
                        status.code(),
                        Code::FailedPrecondition
                            | Code::Unauthenticated
                            | Code::NotFound
                            | Code::PermissionDenied
                    ),
                    "unexpected refusal: {status:?}"
                );
            }
        }
        assert!(refusals > 0, "someone must have been refused");
        let remaining: i64 = db
            .query_one(
                "SELECT count(*) FROM users WHERE organisation_id = $1 AND role = 'nanoAdmin'",
                &[&org.id],
            )
            .await
            .expect("count admins")
            .get(0);
        assert!(remaining >= 1, "round {round}: no nanoAdmin left");
    }
}
