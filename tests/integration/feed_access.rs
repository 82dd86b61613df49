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
    // A watch from now opens with a heartbeat naming where it starts.
    let opening = stream.message().await.expect("the opening heartbeat");
    assert!(matches!(
        opening.and_then(|message| message.event),
        Some(proto::watch_changes_response::Event::Heartbeat(_))
    ));
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

/// A target of a change, or one a List or Get RPC shows: its type and id.
type Target = (String, String);

/// Someone who watches the feed, and what it is.
struct Watching {
    name: &'static str,
    credential: Credential,
    /// Whether its role (and token) holds users.read.
    reads_members: bool,
    /// Its own actor, as a change names it.
    actor: String,
}

impl Watching {
    fn token(name: &'static str, token: String, reads_members: bool, user_id: &str) -> Self {
        let (header, value) = Credential::bearer(token);
        Watching {
            name,
            credential: Credential {
                header,
                value,
                session_id: None,
                organisation_id: String::new(),
            },
            reads_members,
            actor: format!("user:{user_id}"),
        }
    }
}

/// Every target `who` can read now through the List and Get RPCs (a
/// playback token through RevokePlaybackToken's rule, as no RPC lists them),
/// of the users `user_ids` and the playback tokens `playback_tokens`.
async fn readable(
    channel: &Channel,
    who: &Credential,
    organisation_id: &str,
    user_ids: &[String],
    playback_tokens: &[String],
) -> std::collections::BTreeSet<Target> {
    use proto::api_token_service_client::ApiTokenServiceClient;
    use proto::playback_token_service_client::PlaybackTokenServiceClient;
    use proto::session_service_client::SessionServiceClient;
    use proto::user_service_client::UserServiceClient;
    let target = |kind: &str, id: &str| (kind.to_owned(), id.to_owned());
    let allowed = |status: &Status| {
        assert!(
            matches!(status.code(), Code::PermissionDenied | Code::NotFound),
            "{status:?}"
        );
    };
    let mut found = std::collections::BTreeSet::new();
    let mut users = UserServiceClient::new(channel.clone());
    match users
        .list_users(who.req(proto::ListUsersRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
    {
        Ok(page) => found.extend(
            page.into_inner()
                .users
                .iter()
                .map(|u| target("user", &u.id)),
        ),
        Err(status) => allowed(&status),
    }
    match users
        .list_invites(who.req(proto::ListInvitesRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
    {
        Ok(page) => found.extend(
            page.into_inner()
                .invites
                .iter()
                .map(|i| target("invite", &i.id)),
        ),
        Err(status) => allowed(&status),
    }
    for user_id in user_ids {
        match SessionServiceClient::new(channel.clone())
            .list_sessions(who.req(proto::ListSessionsRequest {
                user_id: user_id.clone(),
                page_size: 1000,
                ..Default::default()
            }))
            .await
        {
            Ok(page) => found.extend(
                page.into_inner()
                    .sessions
                    .iter()
                    .map(|s| target("session", &s.id)),
            ),
            Err(status) => allowed(&status),
        }
        match ApiTokenServiceClient::new(channel.clone())
            .list_api_tokens(who.req(proto::ListApiTokensRequest {
                user_id: user_id.clone(),
                page_size: 1000,
                ..Default::default()
            }))
            .await
        {
            Ok(page) => found.extend(
                page.into_inner()
                    .api_tokens
                    .iter()
                    .map(|t| target("api_token", &t.id)),
            ),
            Err(status) => allowed(&status),
        }
    }
    // Every member sees what its organisation is (WhoAmI), who is in it
    // only with users.read (GetOrganisation).
    found.insert(target("organisation", organisation_id));
    let keys = PlaybackTokenServiceClient::new(channel.clone())
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("signing keys are public")
        .into_inner();
    found.extend(
        keys.keys
            .iter()
            .filter(|key| key.organisation_id == organisation_id)
            .map(|key| target("playback_key", &key.kid)),
    );
    let revoking = PlaybackTokenServiceClient::new(channel.clone())
        .revoke_playback_token(who.req(proto::RevokePlaybackTokenRequest {
            target: Some(proto::revoke_playback_token_request::Target::TokenId(
                uuid::Uuid::now_v7().to_string(),
            )),
        }))
        .await;
    match revoking {
        Err(status) if status.code() == Code::NotFound => {
            found.extend(
                playback_tokens
                    .iter()
                    .map(|id| target("playback_token", id)),
            );
        }
        Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        Ok(answer) => panic!("revoked a token that does not exist: {answer:?}"),
    }
    found
}

/// Reads `stream` until it has gone past `last`; the changes it sent.
async fn changes_through(
    stream: &mut tonic::Streaming<proto::WatchChangesResponse>,
    last: i64,
) -> Vec<proto::Change> {
    let mut changes = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the watch goes on")
            .expect("the watch is open")
            .expect("a message");
        match message.event {
            Some(Event::Change(change)) => {
                let sequence = change.sequence;
                changes.push(change);
                if sequence >= last {
                    return changes;
                }
            }
            Some(Event::Heartbeat(heartbeat)) if heartbeat.sequence >= last => return changes,
            _ => {}
        }
    }
}

fn targets_of(changes: &[proto::Change]) -> std::collections::BTreeSet<Target> {
    changes
        .iter()
        .flat_map(|change| &change.targets)
        .map(|target| (target.target_type.clone(), target.target_id.clone()))
        .collect()
}

/// Who sees what: each watcher (a nanoAdmin, a nanoUser, a nanoReadOnly,
/// a personal API token restricted to some permissions, the API key, a
/// registered service) watches while others write; each is sent exactly
/// the targets it could read through the List and Get RPCs at some point of
/// the script (of those the script changed: a service, every one), the
/// organisation without its members or API key and no other's actor to a
/// caller without users.read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watcher_is_sent_what_the_list_and_get_rpcs_show_it() {
    use proto::api_token_service_client::ApiTokenServiceClient;
    use proto::auth_service_client::AuthServiceClient;
    use proto::playback_token_service_client::PlaybackTokenServiceClient;
    use proto::session_service_client::SessionServiceClient;
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let organisation_id = org.id.to_string();
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let user = admin
        .create_user("user@acme.example.com", Role::NanoUser)
        .await
        .expect("a nanoUser");
    let readonly = admin
        .create_user("readonly@acme.example.com", Role::NanoReadOnly)
        .await
        .expect("a nanoReadOnly");
    let other = admin
        .create_user("other@acme.example.com", Role::NanoUser)
        .await
        .expect("another nanoUser");
    let user_session = login(&channel, "user@acme.example.com", PASSWORD).await;
    let readonly_session = login(&channel, "readonly@acme.example.com", PASSWORD).await;
    let restricted = create_api_token(
        &channel,
        &user_session,
        &["users.read", "sessions.manage_own"],
    )
    .await
    .expect("a restricted token")
    .token;
    // Its first use is audited: before the feed is watched.
    AuthServiceClient::new(channel.clone())
        .who_am_i(authed(proto::WhoAmIRequest {}, &restricted))
        .await
        .expect("the token works");
    let service_key = register_service(&server.db, "feed-reader").await;

    let watchers = vec![
        Watching::token(
            "nanoAdmin",
            admin.token.clone(),
            true,
            &org.admin_id.to_string(),
        ),
        Watching::token("nanoUser", user_session.clone(), true, &user.id),
        Watching::token(
            "nanoReadOnly",
            readonly_session.clone(),
            false,
            &readonly.id,
        ),
        Watching::token("restricted API token", restricted.clone(), true, &user.id),
        Watching {
            name: "API key",
            credential: Credential {
                header: proto::metadata::API_KEY,
                value: org.api_key.clone(),
                session_id: None,
                organisation_id: String::new(),
            },
            reads_members: true,
            actor: String::new(),
        },
        Watching {
            name: "service",
            credential: Credential {
                header: proto::metadata::SERVICE_KEY,
                value: service_key,
                session_id: None,
                organisation_id: organisation_id.clone(),
            },
            reads_members: true,
            actor: String::new(),
        },
    ];
    let members = watchers.len() - 1;
    // Every watch starts after the same change.
    let start = feed(&channel)
        .list_changes(admin.req(proto::ListChangesRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .expect("the feed so far")
        .into_inner();
    assert_eq!(start.next_page_token, "");
    let mut streams = Vec::new();
    for watcher in &watchers {
        let stream = feed(&channel)
            .watch_changes(watcher.credential.req(proto::WatchChangesRequest {
                organisation_id: watcher.credential.organisation_id.clone(),
                resume_token: start.resume_token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|status| panic!("{} watches: {status:?}", watcher.name))
            .into_inner();
        streams.push(stream);
    }

    // The script: after each step, what each member can read.
    let mut user_ids: Vec<String> = [&org.admin_id.to_string(), &user.id, &readonly.id, &other.id]
        .into_iter()
        .cloned()
        .collect();
    let mut playback_tokens = Vec::new();
    let mut signed_in: Vec<String> = Vec::new();
    let mut could_read = vec![std::collections::BTreeSet::new(); members];
    let api_key = Caller::ApiKey(org.api_key.clone());
    let mut last = start.head;
    for step in 0..17 {
        let sequence = match step {
            0 => {
                let answer = admin
                    .users()
                    .create_user(admin.req(proto::CreateUserRequest {
                        email: "doomed@acme.example.com".into(),
                        role: Role::NanoUser as i32,
                        password: PASSWORD.into(),
                    }))
                    .await
                    .expect("created");
                let sequence = change_sequence(&answer);
                user_ids.push(answer.into_inner().user.expect("user").id);
                sequence
            }
            1 => change_sequence(
                &admin
                    .users()
                    .create_invite(admin.req(proto::CreateInviteRequest {
                        email: "invited@acme.example.com".into(),
                        role: Role::NanoUser as i32,
                        ttl: None,
                    }))
                    .await
                    .expect("invited"),
            ),
            2..=4 => {
                let email = ["other", "user", "readonly"][step - 2];
                let answer = AuthServiceClient::new(channel.clone())
                    .login(proto::LoginRequest {
                        email: format!("{email}@acme.example.com"),
                        password: PASSWORD.into(),
                        organisation_id: String::new(),
                    })
                    .await
                    .expect("signed in");
                let sequence = change_sequence(&answer);
                signed_in.push(answer.into_inner().access_token);
                sequence
            }
            5 | 6 => {
                // The other user's token, then the nanoUser's, each made in
                // the session its user signed in with above.
                let (email, access) = [("other", &signed_in[0]), ("user", &signed_in[1])][step - 5];
                let expires_at = prost_types::Timestamp {
                    seconds: now_seconds() + 86_400,
                    nanos: 0,
                };
                change_sequence(
                    &ApiTokenServiceClient::new(channel.clone())
                        .create_api_token(authed(
                            proto::CreateApiTokenRequest {
                                name: format!("{email}'s token"),
                                expires_at: Some(expires_at),
                                permissions: Vec::new(),
                            },
                            access,
                        ))
                        .await
                        .expect("a token"),
                )
            }
            7 => change_sequence(
                &OrganisationServiceClient::new(channel.clone())
                    .update_organisation(admin.req(proto::UpdateOrganisationRequest {
                        organisation: Some(proto::Organisation {
                            name: "Acme renamed".into(),
                            secure_playback: true,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["name".into(), "secure_playback".into()],
                        }),
                    }))
                    .await
                    .expect("renamed"),
            ),
            8 => change_sequence(
                &PlaybackTokenServiceClient::new(channel.clone())
                    .rotate_signing_key(api_key.req(proto::RotateSigningKeyRequest::default()))
                    .await
                    .expect("rotated"),
            ),
            9 => {
                let answer = PlaybackTokenServiceClient::new(channel.clone())
                    .issue_playback_token(authed(
                        proto::IssuePlaybackTokenRequest {
                            revocable: true,
                            ..crate::playback::for_streams(&["live"])
                        },
                        &user_session,
                    ))
                    .await
                    .expect("issued");
                let sequence = change_sequence(&answer);
                playback_tokens.push(answer.into_inner().token_id);
                sequence
            }
            10 => change_sequence(
                &admin
                    .users()
                    .update_user_role(admin.req(proto::UpdateUserRoleRequest {
                        user_id: user_ids[4].clone(),
                        role: Role::NanoReadOnly as i32,
                        etag: String::new(),
                    }))
                    .await
                    .expect("role changed"),
            ),
            11 => {
                let invites = admin
                    .users()
                    .list_invites(admin.req(proto::ListInvitesRequest::default()))
                    .await
                    .expect("invites")
                    .into_inner()
                    .invites;
                change_sequence(
                    &admin
                        .users()
                        .revoke_invite(admin.req(proto::RevokeInviteRequest {
                            invite_id: invites[0].id.clone(),
                        }))
                        .await
                        .expect("revoked"),
                )
            }
            12 => {
                let sessions = SessionServiceClient::new(channel.clone())
                    .list_sessions(admin.req(proto::ListSessionsRequest {
                        user_id: other.id.clone(),
                        ..Default::default()
                    }))
                    .await
                    .expect("the other user's sessions")
                    .into_inner()
                    .sessions;
                change_sequence(
                    &SessionServiceClient::new(channel.clone())
                        .revoke_session(admin.req(proto::RevokeSessionRequest {
                            session_id: sessions[0].id.clone(),
                        }))
                        .await
                        .expect("ended"),
                )
            }
            13 => change_sequence(
                &AuthServiceClient::new(channel.clone())
                    .logout(authed(proto::LogoutRequest {}, &signed_in[1]))
                    .await
                    .expect("logged out"),
            ),
            14 => {
                let tokens = ApiTokenServiceClient::new(channel.clone())
                    .list_api_tokens(admin.req(proto::ListApiTokensRequest {
                        user_id: user.id.clone(),
                        ..Default::default()
                    }))
                    .await
                    .expect("the nanoUser's tokens")
                    .into_inner()
                    .api_tokens;
                let unrestricted = tokens
                    .iter()
                    .find(|token| token.permissions.is_empty())
                    .expect("the nanoUser's whole-role token");
                change_sequence(
                    &ApiTokenServiceClient::new(channel.clone())
                        .revoke_api_token(admin.req(proto::RevokeApiTokenRequest {
                            api_token_id: unrestricted.id.clone(),
                        }))
                        .await
                        .expect("revoked"),
                )
            }
            15 => {
                let action = TwoStep::DeleteUser(user_ids[4].clone());
                let asked = two_step::ask(&channel, &admin.caller(), &action)
                    .await
                    .expect("asked");
                confirm_with_sequence(
                    &channel,
                    &admin.caller(),
                    &action,
                    &asked.confirmation_token,
                )
                .await
            }
            _ => change_sequence(
                &OrganisationServiceClient::new(channel.clone())
                    .update_organisation(api_key.req(rename_organisation("Acme by its key")))
                    .await
                    .expect("renamed by the key"),
            ),
        };
        last = last.max(sequence);
        for (watcher, readable_now) in watchers.iter().zip(could_read.iter_mut()) {
            readable_now.extend(
                readable(
                    &channel,
                    &watcher.credential,
                    &organisation_id,
                    &user_ids,
                    &playback_tokens,
                )
                .await,
            );
        }
    }
    assert_eq!(last, sequence_now(&admin).await, "nothing else changed");

    // Every target the script changed, from the database.
    let changed: std::collections::BTreeSet<Target> = server
        .db
        .client()
        .await
        .query(
            "SELECT target_type, target_id FROM audit_events \
             WHERE organisation_id = $1 AND sequence > $2 AND sequence <= $3",
            &[&org.id, &start.head, &last],
        )
        .await
        .expect("the script's targets")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for kind in [
        "user",
        "invite",
        "session",
        "api_token",
        "playback_token",
        "playback_key",
        "organisation",
    ] {
        assert!(
            changed.iter().any(|(changed, _)| changed == kind),
            "the script changes a {kind}: {changed:?}"
        );
    }
    let organisation_now = OrganisationServiceClient::new(channel.clone())
        .get_organisation(admin.req(proto::GetOrganisationRequest {}))
        .await
        .expect("the organisation")
        .into_inner()
        .organisation
        .expect("organisation");
    for (index, (watcher, stream)) in watchers.iter().zip(streams.iter_mut()).enumerate() {
        let changes = changes_through(stream, last).await;
        let sent = targets_of(&changes);
        let expected: std::collections::BTreeSet<Target> = match could_read.get(index) {
            Some(could_read) if index < members => {
                changed.intersection(could_read).cloned().collect()
            }
            _ => changed.clone(),
        };
        assert_eq!(sent, expected, "{}", watcher.name);
        // The organisation as GetOrganisation shows it, or as WhoAmI does to
        // a caller without users.read.
        let organisation = changes
            .iter()
            .flat_map(|change| &change.targets)
            .filter_map(|target| match &target.state {
                Some(proto::target_change::State::Organisation(organisation)) => {
                    Some(organisation.clone())
                }
                _ => None,
            })
            .next_back()
            .expect("the organisation's last state");
        if watcher.reads_members {
            assert_eq!(organisation, organisation_now, "{}", watcher.name);
        } else {
            assert_eq!(organisation.name, organisation_now.name);
            assert_eq!(organisation.api_key_fingerprint, "", "{}", watcher.name);
            assert_eq!(organisation.api_key_rotated_at, None, "{}", watcher.name);
            assert!(organisation.role_counts.is_empty(), "{}", watcher.name);
            assert_eq!(organisation.user_count, 0, "{}", watcher.name);
        }
        for change in &changes {
            assert!(
                watcher.reads_members || change.actor.is_empty() || change.actor == watcher.actor,
                "{}: {change:?}",
                watcher.name
            );
            assert!(change.sequence > start.head && change.sequence <= last);
        }
    }
    // Spelled out: the nanoUser and its restricted token see no session or
    // token of another user; the nanoReadOnly no user and no invite.
    let admin_sent = &could_read[0];
    assert!(admin_sent.contains(&("user".into(), user_ids[4].clone())));
    for (index, name) in [(1, "nanoUser"), (3, "restricted API token")] {
        for (kind, id) in changed.intersection(&could_read[index]) {
            if kind == "session" || kind == "api_token" {
                let owner = owner_of(&server.db, kind, id).await;
                assert_eq!(
                    owner.as_deref(),
                    Some(user.id.as_str()),
                    "{name}: {kind} {id}"
                );
            }
        }
    }
    assert!(
        changed
            .intersection(&could_read[2])
            .all(|(kind, _)| kind != "user" && kind != "invite" && kind != "api_token"),
        "nanoReadOnly"
    );
}

/// The organisation's head now.
async fn sequence_now(admin: &Session) -> i64 {
    feed(&admin.channel)
        .list_changes(admin.req(proto::ListChangesRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .expect("the head")
        .into_inner()
        .head
}

/// The user a session or API token belongs to.
async fn owner_of(db: &TestDb, kind: &str, id: &str) -> Option<String> {
    let table = if kind == "session" {
        "sessions"
    } else {
        "api_tokens"
    };
    let id: uuid::Uuid = id.parse().expect("an id");
    db.client()
        .await
        .query_opt(
            &format!("SELECT user_id FROM {table} WHERE id = $1"),
            &[&id],
        )
        .await
        .expect("the owner")
        .map(|row| row.get::<_, uuid::Uuid>(0).to_string())
}

/// A registered service watches any organisation it names, and must name
/// one; a member watches its own only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_names_the_organisation_it_watches_and_a_member_watches_its_own() {
    let OneServer {
        org,
        channel,
        server,
    } = OneServer::start().await;
    let beta = create_org(&server.db, "Beta").await;
    let key = register_service(&server.db, "feed-reader").await;
    let service = |organisation_id: &str| {
        with_header(
            proto::ListChangesRequest {
                organisation_id: organisation_id.into(),
                ..Default::default()
            },
            proto::metadata::SERVICE_KEY,
            &key,
        )
    };
    let status = assert_status(
        feed(&channel).list_changes(service("")).await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["organisation_id"]);
    let status = assert_status(
        feed(&channel)
            .watch_changes(with_header(
                proto::WatchChangesRequest::default(),
                proto::metadata::SERVICE_KEY,
                &key,
            ))
            .await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(violated_fields(&status), ["organisation_id"]);
    for organisation in [&org, &beta] {
        let page = feed(&channel)
            .list_changes(service(&organisation.id.to_string()))
            .await
            .expect("a service lists any organisation's changes")
            .into_inner();
        assert!(!page.changes.is_empty());
        assert!(
            page.changes
                .iter()
                .all(|change| change.organisation_id == organisation.id.to_string())
        );
        let mut stream = feed(&channel)
            .watch_changes(with_header(
                proto::WatchChangesRequest {
                    organisation_id: organisation.id.to_string(),
                    start: proto::ChangeStart::Snapshot as i32,
                    ..Default::default()
                },
                proto::metadata::SERVICE_KEY,
                &key,
            ))
            .await
            .expect("a service watches any organisation")
            .into_inner();
        assert!(matches!(
            stream
                .message()
                .await
                .expect("a message")
                .expect("open")
                .event,
            Some(Event::Snapshot(_))
        ));
    }

    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let beta_id = beta.id.to_string();
    assert_status(
        feed(&channel)
            .list_changes(admin.req(proto::ListChangesRequest {
                organisation_id: beta_id.clone(),
                ..Default::default()
            }))
            .await,
        Code::NotFound,
        None,
    );
    assert_status(
        feed(&channel)
            .watch_changes(with_header(
                proto::WatchChangesRequest {
                    organisation_id: beta_id,
                    ..Default::default()
                },
                proto::metadata::API_KEY,
                &org.api_key,
            ))
            .await,
        Code::NotFound,
        None,
    );
    feed(&channel)
        .list_changes(admin.req(proto::ListChangesRequest {
            organisation_id: org.id.to_string(),
            ..Default::default()
        }))
        .await
        .expect("a member names its own organisation");
}

/// A snapshot is read a page at a time; a page read after the watcher's
/// revocation (here: a user created after it, whose id sorts last) is never
/// sent: the stream ends before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sends_no_page_read_after_the_watchers_revocation() {
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
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    usermgmt::app::provisioning::seed_users(&store(&server.db), &passwords, org.id, 10_000, 1)
        .await
        .expect("seeded");
    let watching = login(&channel, VICTIM, PASSWORD).await;
    let mut stream = feed(&channel)
        .watch_changes(authed(
            proto::WatchChangesRequest {
                start: proto::ChangeStart::Snapshot as i32,
                ..Default::default()
            },
            &watching,
        ))
        .await
        .expect("watch")
        .into_inner();
    let pages = Arc::new(Mutex::new(Vec::<proto::SnapshotPage>::new()));
    let changes = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (seen_pages, seen_changes) = (Arc::clone(&pages), Arc::clone(&changes));
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(message)) => match message.event {
                    Some(Event::Snapshot(page)) => {
                        seen_pages.lock().expect("not poisoned").push(page);
                    }
                    Some(Event::Change(change)) => {
                        seen_changes
                            .lock()
                            .expect("not poisoned")
                            .push(change.sequence);
                    }
                    _ => {}
                },
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    });
    assert!(
        poll_until(Duration::from_secs(30), || async {
            !pages.lock().expect("not poisoned").is_empty()
        })
        .await,
        "the snapshot begins"
    );

    let action = TwoStep::RenewTokenKey(victim.id.clone());
    let asked = two_step::ask(&channel, &admin.caller(), &action)
        .await
        .expect("asked");
    let revoked = confirm_with_sequence(
        &channel,
        &admin.caller(),
        &action,
        &asked.confirmation_token,
    )
    .await;
    let late = admin
        .create_user("late@acme.example.com", Role::NanoUser)
        .await
        .expect("created after the revocation");

    let end = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the stream ends")
        .expect("the reader");
    let pages = pages.lock().expect("not poisoned");
    let sent: usize = pages.iter().map(|page| page.targets.len()).sum();
    assert!(
        !pages.iter().any(|page| page.last),
        "the snapshot was cut by the revocation, not finished before it ({sent} targets)"
    );
    assert!(
        !pages
            .iter()
            .flat_map(|page| &page.targets)
            .any(|target| target.target_id == late.id),
        "a page read after the revocation was sent"
    );
    let changes = changes.lock().expect("not poisoned");
    assert!(changes.iter().all(|sequence| *sequence < revoked));
    assert_status(end, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}
