//! Deterministic interleavings: the test holds an organisation's row lock in
//! a transaction of its own, lets a call queue behind it, changes rows in
//! that same transaction, then commits. The call then runs on exactly the
//! rows the test left, whatever the timing.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use uuid::Uuid;

use super::db::TestDb;

/// How long a call may take to queue behind the lock.
pub const QUEUE_DEADLINE: Duration = Duration::from_secs(10);

/// An open transaction holding `SELECT … FOR UPDATE` on one organisation's
/// row. Dropped without [`OrgLock::commit`], it rolls back (its connection
/// closes).
pub struct OrgLock {
    tx: tokio_postgres::Client,
    pid: i32,
    /// A second connection, to watch the first one's waiters from outside
    /// its transaction (pg_stat_activity is read once per transaction).
    watcher: tokio_postgres::Client,
}

impl OrgLock {
    pub async fn take(db: &TestDb, org: Uuid) -> Self {
        let tx = db.client().await;
        let pid: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("the lock holder's backend pid")
            .get(0);
        tx.batch_execute("BEGIN").await.expect("begin");
        let locked = tx
            .execute(
                "SELECT 1 FROM organisations WHERE id = $1 FOR UPDATE",
                &[&org],
            )
            .await
            .expect("lock the organisation's row");
        assert_eq!(locked, 1, "organisation {org} exists");
        OrgLock {
            tx,
            pid,
            watcher: db.client().await,
        }
    }

    /// The transaction holding the lock: what it changes, the queued call
    /// sees once it gets the lock.
    pub fn tx(&self) -> &tokio_postgres::Client {
        &self.tx
    }

    /// Returns once a backend of this database waits on a lock this
    /// transaction holds (polling pg_stat_activity). Panics if `call` ends
    /// first (it did not wait for the organisation's row lock), or when
    /// nothing queued within [`QUEUE_DEADLINE`].
    pub async fn until_queued<T: Debug>(&self, call: &mut JoinHandle<T>, what: &str) {
        let deadline = Instant::now() + QUEUE_DEADLINE;
        loop {
            if self.waiters().await >= 1 {
                return;
            }
            if call.is_finished() {
                let result = call.await;
                panic!(
                    "{what}: the call ended without waiting for the organisation's row lock: {result:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the call did not queue on the organisation's row lock within {QUEUE_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many backends of this database wait on a lock this transaction
    /// holds now.
    pub async fn waiters(&self) -> i64 {
        self.watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND $1 = ANY (pg_blocking_pids(pid))",
                &[&self.pid],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0)
    }

    /// Commits what the transaction changed and releases the lock.
    pub async fn commit(self) {
        self.tx.batch_execute("COMMIT").await.expect("commit");
    }
}

/// A write admitted with `credential` and held after its commit re-check,
/// against the end of that credential by a call that takes the
/// organisation's lock only shared, as `end` does (ending a session,
/// revoking a personal API token).
///
/// The write revokes a revocable playback token whose row the test holds: it
/// passes its re-check, then waits for the row. Then `end` runs. It must
/// queue behind the write (which read the credential `FOR SHARE`), never be
/// answered first; once the row is released, the write commits, then the
/// end. Returns the write's and the end's results.
pub async fn end_while_a_write_waits<E, T>(
    db: &TestDb,
    channel: &tonic::transport::Channel,
    organisation: Uuid,
    credential: &str,
    end: E,
) -> (Result<(), tonic::Status>, T)
where
    E: Future<Output = T> + Send + 'static,
    T: Debug + Send + 'static,
{
    use usermgmt::proto::{
        self, playback_token_service_client::PlaybackTokenServiceClient,
        revoke_playback_token_request::Target,
    };
    crate::playback::make_secure(db, organisation).await;
    let issued = PlaybackTokenServiceClient::new(channel.clone())
        .issue_playback_token(super::authed(
            proto::IssuePlaybackTokenRequest {
                revocable: true,
                ..crate::playback::for_streams(&["live"])
            },
            credential,
        ))
        .await
        .expect("issue a revocable playback token")
        .into_inner();
    let holder = db.client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    let jti: Uuid = issued.token_id.parse().expect("a token id");
    holder
        .execute(
            "SELECT 1 FROM playback_tokens WHERE jti = $1 FOR UPDATE",
            &[&jti],
        )
        .await
        .expect("hold the playback token's row");
    let watcher = db.client().await;
    let lock_waiters = || async {
        let count: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .get(0);
        count
    };
    let mut write = tokio::spawn({
        let (channel, credential) = (channel.clone(), credential.to_owned());
        async move {
            PlaybackTokenServiceClient::new(channel)
                .revoke_playback_token(super::authed(
                    proto::RevokePlaybackTokenRequest {
                        target: Some(Target::TokenId(jti.to_string())),
                    },
                    &credential,
                ))
                .await
                .map(|_| ())
        }
    });
    let deadline = Instant::now() + QUEUE_DEADLINE;
    while lock_waiters().await < 1 {
        assert!(!write.is_finished(), "the write did not wait for the row");
        assert!(Instant::now() < deadline, "the write never queued");
        tokio::task::yield_now().await;
    }
    let mut ended = tokio::spawn(end);
    while lock_waiters().await < 2 {
        if ended.is_finished() {
            let answered = (&mut ended).await.expect("the end's task");
            panic!(
                "the end was acknowledged ({answered:?}) while a write admitted with the \
                 credential had yet to commit"
            );
        }
        assert!(Instant::now() < deadline, "the end never queued");
        tokio::task::yield_now().await;
    }
    holder
        .batch_execute("COMMIT")
        .await
        .expect("release the row");
    let written = (&mut write).await.expect("the write's task");
    let ended = (&mut ended).await.expect("the end's task");
    (written, ended)
}
