//! An organisation always keeps a nanoAdmin, whatever races.

use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto::Role;

use crate::support::dump::{assert_same, dump_org, dump_org_on};
use crate::support::lock::OrgLock;
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

/// A's demotion of B waits for the organisation's lock; meanwhile A is
/// demoted exactly as the service demotes (role and tokenKey in one new
/// version). A's call must then fail as a revoked caller, not as the last
/// admin's guard, and B stays nanoAdmin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_queued_behind_its_callers_own_demotion_fails_as_revoked() {
    let OneServer {
        server,
        org,
        channel,
    } = OneServer::start().await;
    let a = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let b = a
        .create_user("b@acme.example.com", Role::NanoAdmin)
        .await
        .expect("create B");

    let lock = OrgLock::take(&server.db, org.id).await;
    let mut demotion = tokio::spawn({
        let (a, b) = (a.clone(), b.id.clone());
        async move { a.set_role(&b, Role::NanoReadOnly, "").await }
    });
    lock.until_queued(&mut demotion, "A demotes B").await;
    let demoted = lock
        .tx()
        .execute(
            "UPDATE users SET role = 'nanoReadOnly', token_key = gen_random_uuid(), \
             version = version + 1 WHERE id = $1",
            &[&org.admin_id],
        )
        .await
        .expect("demote A");
    assert_eq!(demoted, 1);
    let expected = dump_org_on(lock.tx(), org.id).await;
    lock.commit().await;

    let result = tokio::time::timeout(std::time::Duration::from_secs(20), demotion)
        .await
        .expect("the demotion ends")
        .expect("the demotion's task");
    assert_status(result, Code::Unauthenticated, Some("TOKEN_REVOKED"));
    let role: String = server
        .db
        .client()
        .await
        .query_one("SELECT role FROM users WHERE id = $1::text::uuid", &[&b.id])
        .await
        .expect("B's role")
        .get(0);
    assert_eq!(role, "nanoAdmin", "B is still the organisation's admin");
    assert_same(
        &expected,
        &dump_org(&server.db, org.id).await,
        "A's refused demotion of B",
    );
}

/// The refusals the race below may see, each for its own reason: the last
/// admin's guard, a caller demoted or deleted before its call ran, a target
/// already deleted, and (for the second step of DeleteUser) a confirmation
/// refused by `domain::invariants::confirmation_valid`. Never
/// PERMISSION_DENIED: a demotion through the service renews the tokenKey.
fn expected_refusal(status: &Status, deletion: bool) -> bool {
    let reason = status.get_details_error_info().map(|info| info.reason);
    match (status.code(), reason.as_deref()) {
        (Code::FailedPrecondition, Some("LAST_ADMIN")) => true,
        (Code::Unauthenticated, Some("TOKEN_REVOKED")) => true,
        (Code::NotFound, _) => true,
        (
            Code::FailedPrecondition,
            Some(
                "CONFIRMATION_INVALID"
                | "CONFIRMATION_USED"
                | "CONFIRMATION_EXPIRED"
                | "CONFIRMATION_MISMATCH",
            ),
        ) => deletion,
        _ => false,
    }
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
                let result = demoter.set_role(&demoted, Role::NanoReadOnly, "").await;
                (false, result.map(|_| ()))
            });
            tasks.spawn(async move {
                let result = actor.confirm_delete(&target, &token).await;
                (true, result.map(|_| ()))
            });
        }
        let mut refusals = 0;
        while let Some(joined) = tasks.join_next().await {
            let (deletion, result) = joined.expect("task");
            if let Err(status) = result {
                refusals += 1;
                assert!(
                    expected_refusal(&status, deletion),
                    "round {round}: unexpected refusal of a {}: {status:?}",
                    if deletion { "deletion" } else { "demotion" }
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
