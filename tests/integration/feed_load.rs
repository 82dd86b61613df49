//! Guarantee 7 of the change feed: slow and many watchers. A watcher that
//! stops reading while 10,000 changes are written lags without being cut
//! off, ends with every sequence, and costs the server a bounded amount of
//! memory (the watch reads its changes from the database a batch at a time,
//! as its client takes them); its lag is the metric
//! `usermgmt_change_watch_lag`. A caller may hold only so many watches at
//! once.
//!
//! The slow watcher's server is a `usermgmt serve` process of its own: its
//! resident memory is its own (the test's client buffers none of it), its
//! allocator is tuned as in production, and its metrics count only its own
//! watches (the registry is process-global).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;
use usermgmt::proto::{
    self, change_service_client::ChangeServiceClient,
    organisation_service_client::OrganisationServiceClient, playback_scope::Scope,
    playback_token_service_client::PlaybackTokenServiceClient, watch_changes_response::Event,
};

use crate::cache_by_hand::poll_until;
use crate::metrics::http_get;
use crate::support::server::{spawn_serve, wait_until_serving};
use crate::support::*;

/// How many changes the slow watcher falls behind by.
const CHANGES: u64 = 10_000;
/// Writers issuing them side by side.
const WRITERS: u64 = 8;
/// The most the server's resident memory may grow while its one watcher
/// lags by `CHANGES` and catches up. Measured (a debug build): the watch as
/// built grows it by 1 to 2 MiB; holding the backlog grows it by 10 MiB (the
/// whole backlog read at once) to 15 MiB (an unbounded channel to the
/// client).
const RSS_BOUND_KIB: u64 = 6 * 1024;

/// A `usermgmt serve` process with a metrics port, killed when dropped.
struct FeedServer {
    addr: SocketAddr,
    metrics: SocketAddr,
    child: Child,
}

impl FeedServer {
    async fn start(db: &TestDb) -> Self {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let (child, addr) = spawn_serve(
            Command::new(env!("CARGO_BIN_EXE_usermgmt"))
                .args(["serve", "--listen", "127.0.0.1:0", "--db-pool-size", "6"])
                .args(["--metrics-listen", &metrics.to_string()])
                .env("DATABASE_URL", &db.url)
                .env("USERMGMT_LOG", "warn"),
        )
        .await
        .expect("usermgmt serve");
        wait_until_serving(addr).await;
        FeedServer {
            addr,
            metrics,
            child,
        }
    }

    /// The lag the server reports of its watch furthest behind.
    async fn lag(&self) -> i64 {
        let (status, body) = http_get(self.metrics, "/metrics").await;
        assert!(status.contains(" 200 "), "{status}");
        body.lines()
            .find_map(|line| line.strip_prefix("usermgmt_change_watch_lag "))
            .map(|value| value.trim().parse().expect("a number"))
            .expect("the lag gauge is exported")
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        rss_of(self.child.id()).expect("the server's VmRSS")
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel whose HTTP/2 receive windows are small (64 KiB): a client that
/// stops reading stops the server's sending after a few hundred messages,
/// rather than after the megabytes the default windows would take in.
async fn slow_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect")
}

fn for_live() -> proto::IssuePlaybackTokenRequest {
    proto::IssuePlaybackTokenRequest {
        scope: Some(proto::PlaybackScope {
            scope: Some(Scope::Streams(proto::StreamList {
                names: vec!["live".into()],
            })),
        }),
        ..Default::default()
    }
}

/// Issues a playback token (one change); the change's sequence and token.
async fn issue(admin: &Session) -> (i64, String) {
    let answer = PlaybackTokenServiceClient::new(admin.channel.clone())
        .issue_playback_token(admin.req(for_live()))
        .await
        .expect("issue a playback token");
    let header = |name: &str| {
        answer
            .metadata()
            .get(name)
            .expect("the write names its change")
            .to_str()
            .expect("text")
            .to_owned()
    };
    let sequence = header(proto::metadata::CHANGE_SEQUENCE)
        .parse()
        .expect("a number");
    (sequence, header(proto::metadata::CHANGE_TOKEN))
}

/// The next change's sequence on `stream` (heartbeats passed over); fails
/// if the stream ends or fails.
async fn next_change(stream: &mut tonic::Streaming<proto::WatchChangesResponse>) -> i64 {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap_or_else(|status| panic!("the watch was cut: {status:?}"))
            .expect("the watch is still open");
        if let Some(Event::Change(change)) = message.event {
            return change.sequence;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_lags_with_bounded_memory_and_ends_with_every_change() {
    let db = TestDb::new().await;
    let org = create_org(&db, "Acme").await;
    let server = FeedServer::start(&db).await;
    let channel = channel(server.addr).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let secure = proto::UpdateOrganisationRequest {
        organisation: Some(proto::Organisation {
            secure_playback: true,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["secure_playback".into()],
        }),
    };
    OrganisationServiceClient::new(channel.clone())
        .update_organisation(admin.req(secure))
        .await
        .expect("make playback secure");

    // The watch resumes after a change of its own, so that it starts at a
    // known sequence whenever its task runs.
    let (start, token) = issue(&admin).await;
    let watcher = Session {
        channel: slow_channel(server.addr).await,
        token: admin.token.clone(),
    };
    let mut stream = ChangeServiceClient::new(watcher.channel.clone())
        .watch_changes(watcher.req(proto::WatchChangesRequest {
            resume_token: token,
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .expect("watch")
        .into_inner();
    // Warm up: the server's pools, caches and buffers at their working size
    // before its memory is taken as the baseline.
    let mut last = start;
    for _ in 0..200 {
        let (sequence, _) = issue(&admin).await;
        assert_eq!(next_change(&mut stream).await, last + 1);
        last = sequence;
    }
    let before = server.rss_kib();

    // The watcher reads nothing while CHANGES changes are written, then
    // catches up; the server's memory is sampled all along.
    let peak = Arc::new(AtomicU64::new(before));
    let lagging = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, lagging) = (Arc::clone(&peak), Arc::clone(&lagging));
        let pid = server.child.id();
        async move {
            while lagging.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move {
                for _ in 0..CHANGES / WRITERS {
                    issue(&admin).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let head = last + i64::try_from(CHANGES).expect("small");
    let written = peak.load(Ordering::Relaxed).max(server.rss_kib());
    // While it lags, the metric says so (the server has sent the watch at
    // most its channel and the HTTP/2 windows' worth: a few hundred).
    let seen = Cell::new(0);
    let (server_ref, seen_ref) = (&server, &seen);
    assert!(
        poll_until(Duration::from_secs(10), move || async move {
            seen_ref.set(server_ref.lag().await);
            seen_ref.get() >= 5_000
        })
        .await,
        "the lag metric shows the lag of a watcher {CHANGES} changes behind: {}",
        seen.get()
    );
    let lag = seen.get();
    assert!(lag <= i64::try_from(CHANGES).expect("small"), "{lag}");

    // Then it reads everything: not cut off, every sequence, in order.
    for expected in last + 1..=head {
        assert_eq!(next_change(&mut stream).await, expected);
    }
    lagging.store(false, Ordering::Relaxed);
    sampler.await.expect("the sampler");
    let during = peak.load(Ordering::Relaxed);
    let after = server.rss_kib();
    eprintln!(
        "server RSS: {before} KiB before, {written} KiB once written, {during} KiB at most \
         while its watcher lagged and caught up, {after} KiB after"
    );
    assert!(
        during.saturating_sub(before) <= RSS_BOUND_KIB,
        "the server's memory grew by {} KiB while its watcher lagged (bound {RSS_BOUND_KIB})",
        during - before
    );
    assert!(
        after.saturating_sub(before) <= RSS_BOUND_KIB,
        "the server's memory grew by {} KiB (bound {RSS_BOUND_KIB})",
        after - before
    );
    assert!(
        poll_until(Duration::from_secs(10), move || async move {
            server_ref.lag().await == 0
        })
        .await,
        "the lag metric returns to 0 once the watcher has caught up"
    );
    // Still the same live stream.
    let (next, _) = issue(&admin).await;
    assert_eq!(next_change(&mut stream).await, next);
}

/// The resident memory of process `pid` (its VmRSS), in KiB.
fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Opens a watch from now; the stream, or the refusal.
async fn watch(
    session: &Session,
) -> Result<tonic::Streaming<proto::WatchChangesResponse>, tonic::Status> {
    ChangeServiceClient::new(session.channel.clone())
        .watch_changes(session.req(proto::WatchChangesRequest::default()))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holds_at_most_eight_watches_and_ending_one_frees_its_slot() {
    let OneServer {
        org,
        channel,
        server: _server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    admin
        .create_user("other@acme.example.com", proto::Role::NanoUser)
        .await
        .expect("another user");
    let other = Session::login(&channel, "other@acme.example.com", PASSWORD).await;

    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            watch(&admin)
                .await
                .expect("one of the caller's eight watches"),
        );
    }
    let refused = assert_status(
        watch(&admin).await,
        Code::ResourceExhausted,
        Some("TOO_MANY_WATCHES"),
    );
    assert!(
        refused.get_details_retry_info().is_some(),
        "a RetryInfo says when to try again: {refused:?}"
    );
    // Another session of the same user is the same caller.
    let again = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    assert_status(
        watch(&again).await,
        Code::ResourceExhausted,
        Some("TOO_MANY_WATCHES"),
    );
    // Another caller is not affected.
    let _others = watch(&other).await.expect("another caller's watch");

    // Ending a watch gives its slot back, once the server has seen it end.
    drop(held.pop());
    let reopened = RefCell::new(None);
    let (admin_ref, reopened_ref) = (&admin, &reopened);
    assert!(
        poll_until(Duration::from_secs(10), move || async move {
            match watch(admin_ref).await {
                Ok(stream) => {
                    *reopened_ref.borrow_mut() = Some(stream);
                    true
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    false
                }
            }
        })
        .await,
        "the ended watch's slot is free again"
    );
    held.extend(reopened.into_inner());
    assert_status(
        watch(&admin).await,
        Code::ResourceExhausted,
        Some("TOO_MANY_WATCHES"),
    );
}
