//! The change feed's first two guarantees (issue 26): an organisation's
//! changes are numbered densely in commit order (a write that began first but
//! committed last comes after, with no hole, and a write that rolls back
//! leaves none), and nothing is lost silently (a token the feed cannot resume
//! from is refused with its reason; a lost notification is made up by
//! polling).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Response, Status, Streaming};
use usermgmt::proto::{
    self, Role, change_service_client::ChangeServiceClient,
    playback_token_service_client::PlaybackTokenServiceClient,
    revoke_playback_token_request::Target, watch_changes_response::Event,
};
use uuid::Uuid;

use crate::cache_by_hand::poll_until;
use crate::playback::{for_streams, make_secure};
use crate::support::*;

/// How long anything a test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Serve flags that let a write wait on a lock the test holds for longer
/// than [`PATIENCE`] (by default a statement gives up after 4 s).
const LONG_WAITS: [&str; 4] = [
    "--db-statement-timeout-ms",
    "60000",
    "--db-call-timeout-ms",
    "70000",
];

fn feed(channel: &Channel) -> ChangeServiceClient<Channel> {
    ChangeServiceClient::new(channel.clone())
}

/// The sequence of the change a write's answer names.
fn sequence_of<T>(response: &Response<T>) -> i64 {
    response
        .metadata()
        .get(proto::metadata::CHANGE_SEQUENCE)
        .expect("the write's answer names its change")
        .to_str()
        .expect("text")
        .parse()
        .expect("a number")
}

/// One page of the caller's organisation's changes after `token` (empty:
/// from the oldest held).
async fn list_after(caller: &Session, token: &str) -> Result<proto::ListChangesResponse, Status> {
    feed(&caller.channel)
        .list_changes(caller.req(proto::ListChangesRequest {
            page_token: token.into(),
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .map(Response::into_inner)
}

/// A watch of the caller's organisation resumed after `token`.
async fn watch_after(
    caller: &Session,
    token: &str,
) -> Result<Streaming<proto::WatchChangesResponse>, Status> {
    feed(&caller.channel)
        .watch_changes(caller.req(proto::WatchChangesRequest {
            resume_token: token.into(),
            ..Default::default()
        }))
        .await
        .map(Response::into_inner)
}

/// The next change a watch sends (heartbeats skipped), within `bound`.
async fn next_change(
    watch: &mut Streaming<proto::WatchChangesResponse>,
    bound: Duration,
) -> proto::Change {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let message = tokio::time::timeout_at(deadline, watch.message())
            .await
            .unwrap_or_else(|_| panic!("no change reached the watcher within {bound:?}"))
            .expect("the watch goes on")
            .expect("the watch is open");
        match message.event {
            Some(Event::Change(change)) => return change,
            Some(Event::Heartbeat(_)) => {}
            other => panic!("a change or a heartbeat, not {other:?}"),
        }
    }
}

fn sequences(changes: &[proto::Change]) -> Vec<i64> {
    changes.iter().map(|change| change.sequence).collect()
}

/// The (action, target id) of a change of one target (besides the
/// organisation's member counts, which a change of its users records too).
fn what(change: &proto::Change) -> (String, String) {
    let targets: Vec<&proto::TargetChange> = change
        .targets
        .iter()
        .filter(|target| target.action != "organisation.members")
        .collect();
    assert_eq!(targets.len(), 1, "{change:?}");
    (targets[0].action.clone(), targets[0].target_id.clone())
}

/// Asserts that the organisation's whole feed is 1..=head without a hole.
async fn assert_dense(caller: &Session) -> i64 {
    let page = list_after(caller, "").await.expect("the whole feed");
    assert!(page.next_page_token.is_empty(), "one page holds it");
    assert_eq!(
        sequences(&page.changes),
        (1..=page.head).collect::<Vec<_>>(),
        "every committed sequence, each once, in order"
    );
    page.head
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0)
}

/// The backend that waits on a lock `holder` holds, once one does (the
/// write `call` made); panics if `call` ends first or nothing waits within
/// [`PATIENCE`].
async fn waiter_on<T: std::fmt::Debug>(
    observer: &tokio_postgres::Client,
    holder: i32,
    call: &mut JoinHandle<T>,
) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND $1 = ANY (pg_blocking_pids(pid))",
                &[&holder],
            )
            .await
            .expect("read pg_stat_activity");
        if let Some(row) = waiting {
            return row.get(0);
        }
        if call.is_finished() {
            panic!("the write ended without waiting: {:?}", call.await);
        }
        assert!(Instant::now() < deadline, "the write never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issues a revocable playback token; its id and its change's sequence.
async fn issue(admin: &Session) -> Result<(String, i64), Status> {
    let response = PlaybackTokenServiceClient::new(admin.channel.clone())
        .issue_playback_token(admin.req(proto::IssuePlaybackTokenRequest {
            revocable: true,
            ..for_streams(&["live"])
        }))
        .await?;
    let sequence = sequence_of(&response);
    Ok((response.into_inner().token_id, sequence))
}

/// Revokes the playback token `token_id`; its change's sequence.
async fn revoke(admin: Session, token_id: String) -> Result<i64, Status> {
    let response = PlaybackTokenServiceClient::new(admin.channel.clone())
        .revoke_playback_token(admin.req(proto::RevokePlaybackTokenRequest {
            target: Some(Target::TokenId(token_id)),
        }))
        .await?;
    Ok(sequence_of(&response))
}

/// Creates a nanoUser; its id and its change's sequence.
async fn create_user(admin: &Session, email: &str) -> Result<(String, i64), Status> {
    let response = admin
        .users()
        .create_user(admin.req(proto::CreateUserRequest {
            email: email.into(),
            role: Role::NanoUser as i32,
            password: PASSWORD.into(),
        }))
        .await?;
    let sequence = sequence_of(&response);
    let user = response.into_inner().user.expect("the created user");
    Ok((user.id, sequence))
}

/// Guarantee 1. Two writes of one organisation that run side by side
/// (revoking and issuing playback tokens take the organisation's row only
/// shared): the revocation begins first and waits for its token's row, which
/// the test holds; the issue begins after it and commits while it waits. The
/// feed numbers them in commit order, the issue first, and shows the issue
/// at once, without waiting for the revocation: the watcher and ListChanges
/// see `next == last + 1` throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_began_first_but_committed_last_comes_after_without_a_hole() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start_with(&LONG_WAITS).await;
    make_secure(&server.db, org.id).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let (held_token, _) = issue(&admin).await.expect("a token to revoke");
    let before = list_after(&admin, "").await.expect("the feed so far");
    let head = before.head;
    let mut watch = watch_after(&admin, &before.resume_token)
        .await
        .expect("watch from the head");

    // The revocation begins first, and waits for its token's row.
    let holder = server.db.client().await;
    let holder_pid = backend_pid(&holder).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let jti: Uuid = held_token.parse().expect("a token id");
    holder
        .execute(
            "SELECT 1 FROM playback_tokens WHERE jti = $1 FOR UPDATE",
            &[&jti],
        )
        .await
        .expect("hold the token's row");
    let observer = server.db.client().await;
    let mut began_first = tokio::spawn(revoke(admin.clone(), held_token.clone()));
    waiter_on(&observer, holder_pid, &mut began_first).await;

    // The issue begins after it, and commits while it waits.
    let (issued, began_last) = tokio::time::timeout(PATIENCE, issue(&admin))
        .await
        .expect("a write that began later commits while the first waits")
        .expect("issue");
    assert!(
        !began_first.is_finished(),
        "the revocation still waits: the issue did not wait for it"
    );
    assert_eq!(
        began_last,
        head + 1,
        "the first to commit takes the next number"
    );
    let seen = next_change(&mut watch, PATIENCE).await;
    assert_eq!(seen.sequence, head + 1);
    assert_eq!(what(&seen), ("playback_token.issue".into(), issued.clone()));
    let listed = list_after(&admin, &before.resume_token)
        .await
        .expect("list");
    assert_eq!(sequences(&listed.changes), [head + 1]);
    assert_eq!(listed.head, head + 1);
    assert!(
        !began_first.is_finished(),
        "the revocation still waits: the feed showed the issue without waiting for it"
    );

    // The revocation commits last and comes after, with no hole.
    holder.batch_execute("ROLLBACK").await.expect("release");
    let committed_last = began_first
        .await
        .expect("the revocation's task")
        .expect("revoke");
    assert_eq!(committed_last, head + 2);
    let seen = next_change(&mut watch, PATIENCE).await;
    assert_eq!(seen.sequence, head + 2);
    assert_eq!(
        what(&seen),
        ("playback_token.revoke".into(), held_token.clone())
    );
    let listed = list_after(&admin, &before.resume_token)
        .await
        .expect("list");
    assert_eq!(sequences(&listed.changes), [head + 1, head + 2]);
    assert_eq!(
        listed.changes.iter().map(what).collect::<Vec<_>>(),
        [
            ("playback_token.issue".into(), issued),
            ("playback_token.revoke".into(), held_token),
        ]
    );
    assert_eq!(assert_dense(&admin).await, head + 2);
}

/// Guarantee 1, rollbacks: a write that fails in its change (ALREADY_EXISTS)
/// and one whose connection dies after it took its number (it waits to
/// write its audit events behind a lock the test holds, and the test ends
/// its backend) both give their numbers back: the next change takes the
/// number after the head, and the feed stays 1..head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_rolls_back_leaves_no_hole() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start_with(&LONG_WAITS).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let head = assert_dense(&admin).await;

    let taken = create_user(&admin, &org.admin_email).await;
    let status = assert_status(taken, Code::AlreadyExists, None);
    assert!(
        error_summary::<()>(Err(status)).contains("resource type: user"),
        "the user exists"
    );

    let locker = server.db.client().await;
    let locker_pid = backend_pid(&locker).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE audit_events IN SHARE MODE")
        .await
        .expect("hold back every audit event");
    let observer = server.db.client().await;
    let mut doomed = tokio::spawn({
        let admin = admin.clone();
        async move { create_user(&admin, "doomed@acme.example.com").await }
    });
    let writer = waiter_on(&observer, locker_pid, &mut doomed).await;
    let holds_a_number: bool = observer
        .query_one(
            "SELECT coalesce(bool_or(relation = 'change_heads'::regclass AND granted) \
                AND bool_or(relation = 'audit_events'::regclass AND NOT granted), false) \
             FROM pg_locks WHERE pid = $1",
            &[&writer],
        )
        .await
        .expect("read pg_locks")
        .get(0);
    assert!(
        holds_a_number,
        "the write took its number (it holds change_heads) and waits to write its audit events"
    );
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&writer])
        .await
        .expect("end the write's backend");
    let ended = doomed.await.expect("the write's task");
    assert_status(ended, Code::Unavailable, None);
    locker.batch_execute("ROLLBACK").await.expect("release");
    let created: i64 = observer
        .query_one(
            "SELECT count(*) FROM users WHERE email = 'doomed@acme.example.com'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(created, 0, "the ended write changed nothing");

    let (_, next) = create_user(&admin, "next@acme.example.com")
        .await
        .expect("the next write");
    assert_eq!(next, head + 1, "the failed writes' numbers were given back");
    assert_eq!(assert_dense(&admin).await, head + 1);
}

/// Guarantee 2: a token older than the retention window (pruning simulated
/// by hand) is refused with CHANGE_TOKEN_EXPIRED by both RPCs, never
/// continued from silently; the oldest token still held resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_older_than_the_retention_window_is_refused_as_expired() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    for name in ["one", "two", "three"] {
        create_user(&admin, &format!("{name}@acme.example.com"))
            .await
            .expect("create");
    }
    let page = list_after(&admin, "").await.expect("the feed");
    let [.., before_window, pruned_at, last_held] = &page.changes[..] else {
        panic!("at least three changes: {page:?}");
    };
    server
        .db
        .client()
        .await
        .execute(
            "UPDATE change_heads SET pruned_through = $2 WHERE organisation_id = $1",
            &[&org.id, &pruned_at.sequence],
        )
        .await
        .expect("prune by hand");

    for token in [&before_window.resume_token, &page.changes[0].resume_token] {
        assert_status(
            list_after(&admin, token).await,
            Code::FailedPrecondition,
            Some("CHANGE_TOKEN_EXPIRED"),
        );
        assert_status(
            watch_after(&admin, token).await,
            Code::FailedPrecondition,
            Some("CHANGE_TOKEN_EXPIRED"),
        );
    }

    // At the window's edge: resumed, with the first change still held.
    let listed = list_after(&admin, &pruned_at.resume_token)
        .await
        .expect("the oldest token held resumes");
    assert_eq!(sequences(&listed.changes), [last_held.sequence]);
    let from_oldest = list_after(&admin, "").await.expect("from the oldest held");
    assert_eq!(sequences(&from_oldest.changes), [last_held.sequence]);
    let mut watch = watch_after(&admin, &pruned_at.resume_token)
        .await
        .expect("the oldest token held resumes");
    assert_eq!(
        next_change(&mut watch, PATIENCE).await.sequence,
        last_held.sequence
    );
}

/// Guarantee 2: a token this database cannot have issued is refused with
/// CHANGE_TOKEN_UNKNOWN by both RPCs: one ahead of the head (the database
/// was restored from a backup taken before its change), and, once the
/// restored database has numbered another change the same, one naming that
/// number with another commit time. A token of another organisation, or no
/// token at all, is INVALID_ARGUMENT naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_history_is_refused_as_unknown() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    create_user(&admin, "kept@acme.example.com")
        .await
        .expect("create");
    let (lost_user, lost) = create_user(&admin, "lost@acme.example.com")
        .await
        .expect("create");
    let page = list_after(&admin, "").await.expect("the feed");
    let lost_change = page.changes.last().expect("the last change");
    assert_eq!(lost_change.sequence, lost);
    let kept_token = page.changes[page.changes.len() - 2].resume_token.clone();
    let lost_token = lost_change.resume_token.clone();

    // Restored from a backup taken before the last change.
    let db = server.db.client().await;
    let lost_user: Uuid = lost_user.parse().expect("a user id");
    db.batch_execute("BEGIN").await.expect("begin");
    db.execute(
        "DELETE FROM audit_events WHERE organisation_id = $1 AND sequence = $2",
        &[&org.id, &lost],
    )
    .await
    .expect("forget the change");
    db.execute("DELETE FROM users WHERE id = $1", &[&lost_user])
        .await
        .expect("forget its user");
    db.execute(
        "UPDATE change_heads SET head = $2::bigint - 1 WHERE organisation_id = $1",
        &[&org.id, &lost],
    )
    .await
    .expect("the head as it was");
    db.batch_execute("COMMIT").await.expect("commit");

    unknown(list_after(&admin, &lost_token).await.map(|_| ()));
    unknown(watch_after(&admin, &lost_token).await.map(|_| ()));
    let resumed = list_after(&admin, &kept_token)
        .await
        .expect("a token the restored database holds resumes");
    assert!(resumed.changes.is_empty());
    assert_eq!(resumed.head, lost - 1);

    // The restored database numbers its next change as the lost one was.
    let (_, renumbered) = create_user(&admin, "new@acme.example.com")
        .await
        .expect("create");
    assert_eq!(renumbered, lost);
    unknown(list_after(&admin, &lost_token).await.map(|_| ()));
    unknown(watch_after(&admin, &lost_token).await.map(|_| ()));
    let resumed = list_after(&admin, &kept_token).await.expect("resume");
    assert_eq!(sequences(&resumed.changes), [lost]);
    assert_eq!(what(&resumed.changes[0]).0, "user.create");

    // Not a token of this organisation's feed.
    let other = create_org(&server.db, "Other").await;
    let other_admin = Session::login(&channel, &other.admin_email, ADMIN_PASSWORD).await;
    let other_token = list_after(&other_admin, "")
        .await
        .expect("the other organisation's feed")
        .resume_token;
    // The token's length, but not its format (version 0).
    let zeroed = lost_token.replace(|c: char| c.is_ascii_alphanumeric(), "A");
    for token in [other_token.as_str(), "not a token", "AAAA", zeroed.as_str()] {
        let status = assert_status(list_after(&admin, token).await, Code::InvalidArgument, None);
        assert_eq!(
            violated_fields(&status),
            ["page_token"],
            "{token}: {status:?}"
        );
        let status = assert_status(
            watch_after(&admin, token).await,
            Code::InvalidArgument,
            None,
        );
        assert_eq!(
            violated_fields(&status),
            ["resume_token"],
            "{token}: {status:?}"
        );
    }
}

/// FAILED_PRECONDITION, CHANGE_TOKEN_UNKNOWN.
#[track_caller]
fn unknown(result: Result<(), Status>) {
    assert_status(
        result,
        Code::FailedPrecondition,
        Some("CHANGE_TOKEN_UNKNOWN"),
    );
}

/// How often the replicas of the doorbell test poll the heads.
const POLL: Duration = Duration::from_millis(100);

/// The most a change may take to reach a watcher without its notification:
/// the poll interval and generous room for a loaded test machine.
const BACKSTOP: Duration = Duration::from_secs(2);

/// Guarantee 2: notifications are only a doorbell. Both replicas' change
/// listeners are cut from the database side for the whole test (their
/// backends terminated as soon as they come back), and every change made
/// through one replica still reaches a watcher on the other, by polling,
/// within [`BACKSTOP`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_a_watcher_by_polling_when_the_doorbell_is_cut() {
    let poll = POLL.as_millis().to_string();
    let replicas = TwoReplicas::start_with_env(&[("USERMGMT_CHANGE_POLL_MS", &poll)]).await;
    let writer = replicas.admin().await;
    let watcher = Session {
        channel: replicas.on_second.clone(),
        token: writer.token.clone(),
    };
    let observer = replicas.db.client().await;
    let listeners = || async {
        let count: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'usermgmt-change-listener'",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        count
    };
    assert!(
        poll_until(PATIENCE, || async { listeners().await == 2 }).await,
        "both replicas listen for changes"
    );

    let cutting = Arc::new(AtomicBool::new(true));
    let cut = Arc::new(AtomicI64::new(0));
    let cutter = tokio::spawn({
        let (cutting, cut) = (Arc::clone(&cutting), Arc::clone(&cut));
        let client = replicas.db.client().await;
        async move {
            while cutting.load(Ordering::Relaxed) {
                let ended: i64 = client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                         FROM pg_stat_activity WHERE datname = current_database() \
                         AND application_name = 'usermgmt-change-listener'",
                        &[],
                    )
                    .await
                    .expect("end the change listeners")
                    .get(0);
                cut.fetch_add(ended, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    let start = list_after(&watcher, "").await.expect("the feed so far");
    let mut watch = watch_after(&watcher, &start.resume_token)
        .await
        .expect("watch on the second replica");
    let mut latencies = Vec::new();
    for n in 0..5 {
        assert!(
            poll_until(PATIENCE, || async { listeners().await == 0 }).await,
            "the listeners stay cut"
        );
        let (user, sequence) = create_user(&writer, &format!("user{n}@acme.example.com"))
            .await
            .expect("create through the first replica");
        let answered = Instant::now();
        let seen = next_change(&mut watch, BACKSTOP).await;
        latencies.push(answered.elapsed());
        assert_eq!(seen.sequence, sequence);
        assert_eq!(what(&seen), ("user.create".into(), user));
    }
    cutting.store(false, Ordering::Relaxed);
    cutter.await.expect("the cutter");
    assert!(
        cut.load(Ordering::Relaxed) >= 2,
        "both listeners were cut at least once"
    );
    eprintln!(
        "doorbell cut {} times; changes arrived {latencies:?} after their write's answer",
        cut.load(Ordering::Relaxed)
    );
}
