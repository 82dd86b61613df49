//! Change feed guarantee 6: who may watch what, and a watcher's own
//! revocation ends its stream, with nothing committed after the revocation
//! delivered to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto::{
    self, Role, change_service_client::ChangeServiceClient,
    organisation_service_client::OrganisationServiceClient, watch_changes_response::Event,
};
use usermgmt::store::cache::MAX_SETTLE;

use crate::cache_by_hand::poll_until;
use crate::support::two_step;
use crate::support::*;

const VICTIM: &str = "victim@acme.example.com";

fn feed(channel: &Channel) -> ChangeServiceClient<Channel> {
    ChangeServiceClient::new(channel.clone())
}

/// The sequence of the change a write's answer names.
fn change_sequence<T>(response: &tonic::Response<T>) -> i64 {
    response
        .metadata()
        .get(proto::metadata::CHANGE_SEQUENCE)
        .expect("the write names its change")
        .to_str()
        .expect("text")
        .parse()
        .expect("a number")
}

/// A watch read as fast as it sends: what it delivered so far, and how it
/// ended (its status, and when the client saw the end).
struct Watched {
    changes: Arc<Mutex<Vec<proto::Change>>>,
    ended: tokio::task::JoinHandle<(Result<(), Status>, Instant)>,
}

impl Watched {
    fn read(mut stream: tonic::Streaming<proto::WatchChangesResponse>) -> Self {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&changes);
        let ended = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        if let Some(Event::Change(change)) = message.event {
                            seen.lock().expect("not poisoned").push(change);
                        }
                    }
                    Ok(None) => return (Ok(()), Instant::now()),
                    Err(status) => return (Err(status), Instant::now()),
                }
            }
        });
        Watched { changes, ended }
    }

    fn count(&self) -> usize {
        self.changes.lock().expect("not poisoned").len()
    }
}

/// The sequences of the changes a watch delivered.
fn sequences(changes: &Mutex<Vec<proto::Change>>) -> Vec<i64> {
    let changes = changes.lock().expect("not poisoned");
    changes.iter().map(|change| change.sequence).collect()
}

/// Renames the organisation again and again (a change every watcher sees)
/// until stopped; the sequences its answers named.
struct Writer {
    sequences: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(admin: &Session) -> Self {
        let sequences = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (written, stopped, admin) = (Arc::clone(&sequences), Arc::clone(&stop), admin.clone());
        let task = tokio::spawn(async move {
            let mut organisations = OrganisationServiceClient::new(admin.channel.clone());
            let mut n = 0;
            while !stopped.load(Ordering::SeqCst) {
                n += 1;
                let answer = organisations
                    .update_organisation(admin.req(rename_organisation(&format!("Acme {n}"))))
                    .await
                    .expect("the writer renames");
                written
                    .lock()
                    .expect("not poisoned")
                    .push(change_sequence(&answer));
            }
        });
        Writer {
            sequences,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.sequences.lock().expect("not poisoned").len()
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer");
        Arc::try_unwrap(self.sequences)
            .expect("the writer is done")
            .into_inner()
            .expect("not poisoned")
    }
}

/// How a watcher is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// UpdateUserRole (which renews the tokenKey).
    RoleChange,
    DeleteUser,
    SuspendUser,
    /// The watcher's session logs out.
    Logout,
    /// An admin ends the watcher's session.
    RevokeSession,
    /// The watcher's personal API token is revoked.
    RevokeApiToken,
    /// The organisation API key (the watcher) is rotated.
    RotateApiKey,
    RenewTokenKey,
    /// The operator revokes the internal service (the watcher).
    RevokeService,
    /// The operator revokes the service and registers one of the same name
    /// again, with a new key: the old key's watch ends all the same.
    ReregisterService,
    /// The user is suspended by hand in SQL, its tokenKey kept: the state
    /// alone must end the stream, as it refuses the write path.
    SuspendedInSql,
}

/// The watcher's credential: a header and its value.
struct Credential {
    header: &'static str,
    value: String,
    /// The session of a signed-in watcher.
    session_id: Option<String>,
    /// For a service: the organisation it watches.
    organisation_id: String,
}

impl Credential {
    fn req<T>(&self, message: T) -> Request<T> {
        with_header(message, self.header, &self.value)
    }

    fn bearer(token: String) -> (&'static str, String) {
        (proto::metadata::BEARER, format!("Bearer {token}"))
    }
}

/// Who watches for `revocation`: the victim (a second nanoAdmin) signed in
/// or with a personal API token, the API key, or a service.
async fn watcher_for(
    server: &TestServer,
    channel: &Channel,
    org: &Org,
    revocation: Revocation,
) -> Credential {
    let organisation_id = String::new();
    match revocation {
        Revocation::RotateApiKey => Credential {
            header: proto::metadata::API_KEY,
            value: org.api_key.clone(),
            session_id: None,
            organisation_id,
        },
        Revocation::RevokeService | Revocation::ReregisterService => Credential {
            header: proto::metadata::SERVICE_KEY,
            value: register_service(&server.db, "feed-watcher").await,
            session_id: None,
            organisation_id: org.id.to_string(),
        },
        Revocation::RevokeApiToken => {
            let access = login(channel, VICTIM, PASSWORD).await;
            let created = create_api_token(channel, &access, &[])
                .await
                .expect("the victim's API token");
            let (header, value) = Credential::bearer(created.token);
            Credential {
                header,
                value,
                session_id: None,
                organisation_id,
            }
        }
        _ => {
            let signed_in = sign_in(channel, VICTIM, PASSWORD).await;
            let (header, value) = Credential::bearer(signed_in.access_token);
            Credential {
                header,
                value,
                session_id: Some(signed_in.session_id),
                organisation_id,
            }
        }
    }
}

/// What a revocation committed before: every change a revoked watcher was
/// sent must be below this sequence.
async fn revoke(
    server: &TestServer,
    org: &Org,
    admin: &Session,
    victim_id: &str,
    watcher: &Credential,
    revocation: Revocation,
) -> i64 {
    let channel = &admin.channel;
    let admin_caller = admin.caller();
    // The second step of a double-confirmed action, answering with its
    // change's sequence.
    let confirmed = async |action: TwoStep| -> i64 {
        let asked = two_step::ask(channel, &admin_caller, &action)
            .await
            .expect("asked");
        confirm_with_sequence(channel, &admin_caller, &action, &asked.confirmation_token).await
    };
    match revocation {
        Revocation::RoleChange => {
            let answer = admin
                .users()
                .update_user_role(admin.req(proto::UpdateUserRoleRequest {
                    user_id: victim_id.into(),
                    role: Role::NanoUser as i32,
                    etag: String::new(),
                }))
                .await
                .expect("role changed");
            change_sequence(&answer)
        }
        Revocation::DeleteUser => confirmed(TwoStep::DeleteUser(victim_id.into())).await,
        Revocation::SuspendUser => confirmed(TwoStep::SuspendUser(victim_id.into())).await,
        Revocation::RenewTokenKey => confirmed(TwoStep::RenewTokenKey(victim_id.into())).await,
        Revocation::RotateApiKey => confirmed(TwoStep::RotateApiKey).await,
        Revocation::Logout => {
            let answer = proto::auth_service_client::AuthServiceClient::new(channel.clone())
                .logout(watcher.req(proto::LogoutRequest {}))
                .await
                .expect("logged out");
            change_sequence(&answer)
        }
        Revocation::RevokeSession => {
            let answer = proto::session_service_client::SessionServiceClient::new(channel.clone())
                .revoke_session(admin.req(proto::RevokeSessionRequest {
                    session_id: watcher.session_id.clone().expect("a session"),
                }))
                .await
                .expect("session revoked");
            change_sequence(&answer)
        }
        Revocation::RevokeApiToken => {
            let mut tokens =
                proto::api_token_service_client::ApiTokenServiceClient::new(channel.clone());
            let listed = tokens
                .list_api_tokens(admin.req(proto::ListApiTokensRequest {
                    user_id: victim_id.into(),
                    ..Default::default()
                }))
                .await
                .expect("the victim's tokens")
                .into_inner();
            let answer = tokens
                .revoke_api_token(admin.req(proto::RevokeApiTokenRequest {
                    api_token_id: listed.api_tokens[0].id.clone(),
                }))
                .await
                .expect("token revoked");
            change_sequence(&answer)
        }
        // Neither is a change of the organisation's feed: hold its next
        // sequence (its row in change_heads) while revoking, so that every
        // change up to the head read then committed before the revocation
        // and every later one after it.
        Revocation::RevokeService | Revocation::ReregisterService | Revocation::SuspendedInSql => {
            let mut db = server.db.client().await;
            let tx = db.transaction().await.expect("begin");
            let head: i64 = tx
                .query_opt(
                    "SELECT head FROM change_heads WHERE organisation_id = $1 FOR UPDATE",
                    &[&org.id],
                )
                .await
                .expect("the head")
                .map_or(0, |row| row.get(0));
            if revocation == Revocation::SuspendedInSql {
                let victim: uuid::Uuid = victim_id.parse().expect("a user id");
                tx.execute(
                    "UPDATE users SET state = 'suspended', version = version + 1, \
                     updated_at = now() WHERE id = $1",
                    &[&victim],
                )
                .await
                .expect("suspended by hand");
            } else {
                store(&server.db)
                    .revoke_service("feed-watcher")
                    .await
                    .expect("service revoked");
                if revocation == Revocation::ReregisterService {
                    register_service(&server.db, "feed-watcher").await;
                }
            }
            tx.commit().await.expect("commit");
            head + 1
        }
    }
}

/// The second step of `action`, with the sequence its answer names.
async fn confirm_with_sequence(
    channel: &Channel,
    caller: &Caller,
    action: &TwoStep,
    confirmation_token: &str,
) -> i64 {
    let mut users = proto::user_service_client::UserServiceClient::new(channel.clone());
    let token = confirmation_token.to_owned();
    match action {
        TwoStep::DeleteUser(user_id) => change_sequence(
            &users
                .delete_user(caller.req(proto::DeleteUserRequest {
                    user_id: user_id.clone(),
                    confirmation_token: token,
                }))
                .await
                .expect("deleted"),
        ),
        TwoStep::SuspendUser(user_id) => change_sequence(
            &users
                .suspend_user(caller.req(proto::SuspendUserRequest {
                    user_id: user_id.clone(),
                    confirmation_token: token,
                }))
                .await
                .expect("suspended"),
        ),
        TwoStep::RenewTokenKey(user_id) => change_sequence(
            &users
                .renew_token_key(caller.req(proto::RenewTokenKeyRequest {
                    user_id: user_id.clone(),
                    confirmation_token: token,
                }))
                .await
                .expect("renewed"),
        ),
        TwoStep::RotateApiKey => change_sequence(
            &OrganisationServiceClient::new(channel.clone())
                .rotate_api_key(caller.req(proto::RotateApiKeyRequest {
                    confirmation_token: token,
                }))
                .await
                .expect("rotated"),
        ),
    }
}

/// The exact end of a watch by `revocation`: what any call with the revoked
/// credential answers.
fn ended_with(revocation: Revocation) -> (Code, &'static str) {
    match revocation {
        Revocation::RotateApiKey => (Code::Unauthenticated, "API_KEY_INVALID"),
        Revocation::RevokeService | Revocation::ReregisterService => {
            (Code::Unauthenticated, "SERVICE_CREDENTIALS_INVALID")
        }
        Revocation::RevokeApiToken => (Code::Unauthenticated, "API_TOKEN_INVALID"),
        Revocation::RoleChange
        | Revocation::DeleteUser
        | Revocation::SuspendUser
        | Revocation::Logout
        | Revocation::RevokeSession
        | Revocation::RenewTokenKey
        | Revocation::SuspendedInSql => (Code::Unauthenticated, "TOKEN_REVOKED"),
    }
}

fn reason_of(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// A watcher reads its stream while an admin renames the organisation again
/// and again; the watcher is revoked in the middle. Its stream ends, within
/// the settle bound of the revocation's answer, with what any call with its
/// credential now answers, and it was sent no change committed after the
/// revocation, although changes it would see kept committing around and
/// after it.
async fn revocation_ends_the_stream(revocation: Revocation) {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let victim = admin
        .create_user(VICTIM, Role::NanoAdmin)
        .await
        .expect("the victim");
    let watcher = watcher_for(&server, &channel, &org, revocation).await;
    let stream = feed(&channel)
        .watch_changes(watcher.req(proto::WatchChangesRequest {
            organisation_id: watcher.organisation_id.clone(),
            ..Default::default()
        }))
        .await
        .expect("watch")
        .into_inner();
    let watched = Watched::read(stream);
    let writer = Writer::start(&admin);
    assert!(
        poll_until(Duration::from_secs(10), || async { watched.count() >= 3 }).await,
        "the watcher sees the writer's changes"
    );

    let revoked = revoke(&server, &org, &admin, &victim.id, &watcher, revocation).await;
    let answered = Instant::now();
    let written = writer.count();
    assert!(
        poll_until(Duration::from_secs(10), || async {
            writer.count() >= written + 5
        })
        .await,
        "the writer goes on"
    );
    // Until the stream ends, or shows a change it must not.
    let after = |changes: &Mutex<Vec<proto::Change>>| {
        sequences(changes)
            .into_iter()
            .filter(|sequence| *sequence >= revoked)
            .collect::<Vec<_>>()
    };
    poll_until(Duration::from_secs(10), || async {
        watched.ended.is_finished() || !after(&watched.changes).is_empty()
    })
    .await;
    let written = writer.stop().await;
    assert!(
        written
            .iter()
            .filter(|sequence| **sequence > revoked)
            .count()
            >= 5,
        "{revocation:?}: changes the watcher would see committed after its revocation"
    );
    assert_eq!(
        after(&watched.changes),
        Vec::<i64>::new(),
        "{revocation:?}: delivered after the revocation (at {revoked})"
    );
    assert!(!sequences(&watched.changes).is_empty());

    assert!(
        watched.ended.is_finished(),
        "{revocation:?}: the stream ends"
    );
    let (end, ended_at) = watched.ended.await.expect("the reader");
    let (code, reason) = ended_with(revocation);
    let status = end.expect_err("the stream ends with an error");
    assert_eq!(
        (status.code(), reason_of(&status).as_str()),
        (code, reason),
        "{revocation:?}: {status:?}"
    );
    let late = ended_at.saturating_duration_since(answered);
    assert!(
        late <= MAX_SETTLE,
        "{revocation:?}: the stream ended {late:?} after the revocation's answer"
    );
    // A new call with the credential answers the same.
    let again = feed(&channel)
        .list_changes(watcher.req(proto::ListChangesRequest {
            organisation_id: watcher.organisation_id.clone(),
            ..Default::default()
        }))
        .await;
    assert_status(again, code, Some(reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RoleChange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_user_ends_the_watch() {
    revocation_ends_the_stream(Revocation::DeleteUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_the_user_ends_the_watch() {
    revocation_ends_the_stream(Revocation::SuspendUser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_in_sql_ends_the_watch() {
    revocation_ends_the_stream(Revocation::SuspendedInSql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_watch() {
    revocation_ends_the_stream(Revocation::Logout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_the_session_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RevokeSession).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_api_token_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RevokeApiToken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_api_key_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RotateApiKey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_the_token_key_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RenewTokenKey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_service_ends_the_watch() {
    revocation_ends_the_stream(Revocation::RevokeService).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_the_service_again_ends_the_old_keys_watch() {
    revocation_ends_the_stream(Revocation::ReregisterService).await;
}

/// A watcher that does not read its stream: once the client's window, the
/// server's buffers and the watch's queue are full, the watch waits for room,
/// re-checking its caller meanwhile. Its revocation ends it within the settle
/// bound (its slot, the one its user may hold, is free again), and when the
/// client reads at last, it finds only changes from before the revocation,
/// then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_ended_by_its_revocation() {
    const WRITES: usize = 80;
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start_with(&["--change-watches-per-caller", "1"]).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    admin
        .create_user(VICTIM, Role::NanoUser)
        .await
        .expect("the victim");
    let watching = login(&channel, VICTIM, PASSWORD).await;
    let other_session = login(&channel, VICTIM, PASSWORD).await;
    let narrow = Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .initial_stream_window_size(Some(4096))
        .connect()
        .await
        .expect("connect");
    let stalled = feed(&narrow)
        .watch_changes(authed(proto::WatchChangesRequest::default(), &watching))
        .await
        .expect("watch")
        .into_inner();
    let mut organisations = OrganisationServiceClient::new(channel.clone());
    for n in 0..WRITES {
        organisations
            .update_organisation(admin.req(rename_organisation(&format!("Acme {n}"))))
            .await
            .expect("renamed");
    }
    // The user's one watch is taken.
    assert_status(
        feed(&channel)
            .watch_changes(authed(
                proto::WatchChangesRequest::default(),
                &other_session,
            ))
            .await,
        Code::ResourceExhausted,
        Some("TOO_MANY_WATCHES"),
    );

    let answer = proto::auth_service_client::AuthServiceClient::new(channel.clone())
        .logout(authed(proto::LogoutRequest {}, &watching))
        .await
        .expect("logged out");
    let revoked = change_sequence(&answer);
    let answered = Instant::now();
    let freed = loop {
        match feed(&channel)
            .watch_changes(authed(
                proto::WatchChangesRequest::default(),
                &other_session,
            ))
            .await
        {
            Ok(watch) => break watch,
            Err(status)
                if status.code() == Code::ResourceExhausted && answered.elapsed() <= MAX_SETTLE =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(status) => panic!(
                "{:?} after the logout, the revoked watch still holds its slot: {status:?}",
                answered.elapsed()
            ),
        }
    };
    drop(freed);

    let watched = Watched::read(stalled);
    let (end, _) = watched.ended.await.expect("the reader");
    assert_status(end, Code::Unauthenticated, Some("TOKEN_REVOKED"));
    let delivered = sequences(&watched.changes);
    assert!(
        !delivered.is_empty() && delivered.len() < WRITES,
        "the watch waited for room: it delivered {} of {WRITES}",
        delivered.len()
    );
    assert!(
        delivered.iter().all(|sequence| *sequence < revoked),
        "delivered {delivered:?}, revoked at {revoked}"
    );
}

/// A service's revocation is no change of the organisation it watches: the
/// watch ends all the same within the settle bound, although nothing else
/// happens in the organisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_services_idle_watch_ends() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let key = register_service(&server.db, "idle-watcher").await;
    let mut stream = feed(&channel)
        .watch_changes(with_header(
            proto::WatchChangesRequest {
                organisation_id: org.id.to_string(),
                ..Default::default()
            },
            proto::metadata::SERVICE_KEY,
            &key,
        ))
        .await
        .expect("watch")
        .into_inner();
    store(&server.db)
        .revoke_service("idle-watcher")
        .await
        .expect("service revoked");
    let end = tokio::time::timeout(MAX_SETTLE, stream.message())
        .await
        .expect("the watch ends within the settle bound");
    assert_status(
        end,
        Code::Unauthenticated,
        Some("SERVICE_CREDENTIALS_INVALID"),
    );
}

/// A role changed by hand in SQL keeps the tokenKey, so the watcher's
/// credential still stands, as a new call's would; what it is sent from
/// then on is what its new role may see, as a new call would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_in_sql_narrows_what_the_watch_sends() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let victim = admin
        .create_user(VICTIM, Role::NanoAdmin)
        .await
        .expect("the victim");
    let watching = login(&channel, VICTIM, PASSWORD).await;
    let stream = feed(&channel)
        .watch_changes(authed(proto::WatchChangesRequest::default(), &watching))
        .await
        .expect("watch")
        .into_inner();
    let watched = Watched::read(stream);
    let before = admin
        .create_user("before@acme.example.com", Role::NanoUser)
        .await
        .expect("created");
    let has_target = |id: &str| {
        let changes = watched.changes.lock().expect("not poisoned");
        changes
            .iter()
            .any(|change| change.targets.iter().any(|target| target.target_id == id))
    };
    assert!(
        poll_until(Duration::from_secs(10), || async { has_target(&before.id) }).await,
        "a nanoAdmin sees a user created"
    );

    let demoted_at = {
        let mut db = server.db.client().await;
        let tx = db.transaction().await.expect("begin");
        let head: i64 = tx
            .query_one(
                "SELECT head FROM change_heads WHERE organisation_id = $1 FOR UPDATE",
                &[&org.id],
            )
            .await
            .expect("the head")
            .get(0);
        let victim_id: uuid::Uuid = victim.id.parse().expect("a user id");
        tx.execute(
            "UPDATE users SET role = 'nanoReadOnly', version = version + 1, updated_at = now() \
             WHERE id = $1",
            &[&victim_id],
        )
        .await
        .expect("demoted by hand");
        tx.commit().await.expect("commit");
        head
    };
    let after = admin
        .create_user("after@acme.example.com", Role::NanoUser)
        .await
        .expect("created");
    let renamed = OrganisationServiceClient::new(channel.clone())
        .update_organisation(with_header(
            rename_organisation("Acme renamed by its key"),
            proto::metadata::API_KEY,
            &org.api_key,
        ))
        .await
        .expect("renamed");
    let renamed = change_sequence(&renamed);
    assert!(
        poll_until(Duration::from_secs(10), || async {
            sequences(&watched.changes).contains(&renamed)
        })
        .await,
        "a nanoReadOnly sees the organisation renamed"
    );
    assert!(!watched.ended.is_finished(), "the watch goes on");
    assert!(!has_target(&after.id), "a nanoReadOnly sees no user");
    let changes = watched.changes.lock().expect("not poisoned").clone();
    for change in changes.iter().filter(|change| change.sequence > demoted_at) {
        for target in &change.targets {
            assert_eq!(target.target_type, "organisation", "{change:?}");
            let Some(proto::target_change::State::Organisation(organisation)) = &target.state
            else {
                panic!("an organisation's state: {target:?}");
            };
            assert_eq!(organisation.api_key_fingerprint, "", "{change:?}");
            assert!(organisation.role_counts.is_empty(), "{change:?}");
        }
        // Nor who made it: the API key, by its fingerprint.
        assert_eq!(change.actor, "", "{change:?}");
    }
    let before_change = changes
        .iter()
        .find(|change| change.targets.iter().any(|t| t.target_id == before.id))
        .expect("the user created before");
    assert_eq!(before_change.actor, format!("user:{}", org.admin_id));
}
