//! The change feed across replicas (guarantee 4) and a snapshot raced by
//! writes (guarantee 5), on two `usermgmt serve` replicas of one database:
//! a watcher on one replica sees what is written through the other; a client
//! that drops its stream at random points and resumes on the other replica
//! ends with exactly the uninterrupted feed; a snapshot taken while writes
//! commit, folded with the changes after it, is the organisation's state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;
use tonic::transport::Channel;
use usermgmt::proto::change_service_client::ChangeServiceClient;
use usermgmt::proto::watch_changes_response::Event;
use usermgmt::proto::{self, Role};
use uuid::Uuid;

use crate::cache_by_hand::poll_until;
use crate::support::*;

/// The longest a test waits for a message it is owed (the doorbell delivers
/// at once, the poll backstop within 500 ms, a heartbeat within a second):
/// it bounds a stuck test, it measures nothing.
const OWED: Duration = Duration::from_secs(30);

fn feed(channel: &Channel) -> ChangeServiceClient<Channel> {
    ChangeServiceClient::new(channel.clone())
}

fn every_second() -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    })
}

/// The sequence of the change a write's answer names.
fn change_sequence<T>(response: &tonic::Response<T>) -> i64 {
    response
        .metadata()
        .get(usermgmt::proto::metadata::CHANGE_SEQUENCE)
        .expect("a write names its change")
        .to_str()
        .expect("text")
        .parse()
        .expect("a number")
}

/// The organisation's head, from the database.
async fn head_of(db: &TestDb, org: Uuid) -> i64 {
    db.client()
        .await
        .query_opt(
            "SELECT head FROM change_heads WHERE organisation_id = $1",
            &[&org],
        )
        .await
        .expect("read the head")
        .map_or(0, |row| row.get(0))
}

/// The next message of a watch, which must come within [`OWED`].
async fn next_event(stream: &mut tonic::Streaming<proto::WatchChangesResponse>) -> Event {
    tokio::time::timeout(OWED, stream.message())
        .await
        .expect("a message within the bound")
        .expect("the watch does not fail")
        .expect("the watch does not end")
        .event
        .expect("an event")
}

/// Every change ListChanges lists, oldest first, every page.
async fn listed_changes(session: &Session) -> Vec<proto::Change> {
    let mut client = feed(&session.channel);
    let mut changes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_changes(session.req(proto::ListChangesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            }))
            .await
            .expect("list changes")
            .into_inner();
        changes.extend(page.changes);
        if page.next_page_token.is_empty() {
            return changes;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_what_is_written_through_the_other() {
    let replicas = TwoReplicas::start().await;
    let admin = replicas.admin().await;
    let through = [replicas.on_first.clone(), replicas.on_second.clone()];
    let mut watches = Vec::new();
    for channel in &through {
        let watch = feed(channel)
            .watch_changes(admin.req(proto::WatchChangesRequest {
                start: proto::ChangeStart::Now as i32,
                heartbeat_interval: every_second(),
                ..Default::default()
            }))
            .await
            .expect("watch from now")
            .into_inner();
        watches.push(watch);
    }
    // One write through each replica, right after the watches began.
    let mut written = Vec::new();
    for (replica, channel) in through.iter().enumerate() {
        let response = proto::user_service_client::UserServiceClient::new(channel.clone())
            .create_invite(admin.req(proto::CreateInviteRequest {
                email: format!("across{replica}@acme.example.com"),
                role: Role::NanoUser as i32,
                ttl: None,
            }))
            .await
            .expect("invite");
        let sequence = change_sequence(&response);
        let invite = response.into_inner().invite.expect("the invite").id;
        written.push((sequence, invite));
    }
    // Each watcher sees both, in commit order: the one through its own
    // replica and the one through the other.
    for (replica, watch) in watches.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + OWED;
        while seen.len() < written.len() {
            let event = tokio::time::timeout_at(deadline, next_event(watch))
                .await
                .unwrap_or_else(|_| {
                    panic!("the watcher on replica {replica} saw {seen:?} of {written:?}")
                });
            match event {
                Event::Change(change) => {
                    let invite = change
                        .targets
                        .iter()
                        .find(|target| target.target_type == "invite")
                        .map(|target| target.target_id.clone())
                        .unwrap_or_default();
                    seen.push((change.sequence, invite));
                }
                Event::Heartbeat(_) => {}
                Event::Snapshot(_) => panic!("no snapshot was asked for"),
            }
        }
        assert_eq!(seen, written, "the watcher on replica {replica}");
    }
}

/// Makes `count` writes through `writer` at random: invites created and
/// revoked, members' roles changed; returns how many changed something.
async fn write_at_random(writer: Session, members: Vec<String>, seed: u64, count: usize) -> i64 {
    let mut changes = 0;
    let mut rng = Lcg(seed);
    let mut users = writer.users();
    let mut invites: Vec<String> = Vec::new();
    let roles = [Role::NanoUser, Role::NanoReadOnly];
    for step in 0..count {
        match rng.next(3) {
            0 if !invites.is_empty() => {
                let invite = invites.swap_remove(rng.next(invites.len() as u64) as usize);
                users
                    .revoke_invite(writer.req(proto::RevokeInviteRequest { invite_id: invite }))
                    .await
                    .expect("revoke an invite");
                changes += 1;
            }
            1 => {
                let member = &members[rng.next(members.len() as u64) as usize];
                let role = roles[rng.next(2) as usize];
                let response = writer
                    .set_role(member, role, "")
                    .await
                    .expect("change a role");
                changes += i64::from(response.changed);
            }
            _ => {
                let invite = users
                    .create_invite(writer.req(proto::CreateInviteRequest {
                        email: format!("w{seed}-{step}@acme.example.com"),
                        role: Role::NanoUser as i32,
                        ttl: None,
                    }))
                    .await
                    .expect("invite")
                    .into_inner()
                    .invite
                    .expect("the invite");
                invites.push(invite.id);
                changes += 1;
            }
        }
    }
    changes
}

/// The attacker's client of guarantee 4: it drops its stream after a random
/// number of messages, acknowledges (keeps the resume token of) only some of
/// what it processed, and resumes from its last acknowledged token on the
/// other replica each time, while writers write through both. Whatever it
/// processed after its last acknowledgement it must process again (it drops
/// that), and nothing else: every change comes exactly once after the
/// acknowledged one, in order, without a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_stream_at_random_and_resumes_on_the_other_replica_misses_nothing()
{
    let replicas = TwoReplicas::start().await;
    let admin = replicas.admin().await;
    let through = [replicas.on_first.clone(), replicas.on_second.clone()];
    let mut members = Vec::new();
    for i in 0..3 {
        let email = format!("member{i}@acme.example.com");
        members.push(
            admin
                .create_user(&email, Role::NanoUser)
                .await
                .expect("member")
                .id,
        );
    }
    let writers: Vec<_> = through
        .iter()
        .enumerate()
        .map(|(replica, channel)| {
            let writer = Session {
                channel: channel.clone(),
                token: admin.token.clone(),
            };
            tokio::spawn(write_at_random(
                writer,
                members.clone(),
                7 + replica as u64,
                60,
            ))
        })
        .collect();

    // The client starts from the organisation's first change, acknowledged.
    let first = feed(&replicas.on_first)
        .list_changes(admin.req(proto::ListChangesRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .expect("the first change")
        .into_inner();
    let mut collected: Vec<proto::Change> = first.changes;
    assert_eq!(
        collected.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        [1]
    );
    // What it acknowledged: how much of `collected`, and the token.
    let mut acknowledged = (1, collected[0].resume_token.clone());
    let mut rng = Lcg(20261212);
    let mut on = 0;
    let (mut streams, mut redelivered, mut heartbeats_acknowledged) = (0, 0, 0);
    let mut streams_while_writing = 0;
    let mut final_head = None;
    loop {
        if final_head.is_none() && writers.iter().all(|writer| writer.is_finished()) {
            final_head = Some(head_of(&replicas.db, replicas.org.id).await);
        }
        if let Some(head) = final_head
            && collected[..acknowledged.0].last().map(|c| c.sequence) == Some(head)
        {
            break;
        }
        on = 1 - on;
        let after = collected[acknowledged.0 - 1].sequence;
        let mut watch = feed(&through[on])
            .watch_changes(admin.req(proto::WatchChangesRequest {
                resume_token: acknowledged.1.clone(),
                heartbeat_interval: every_second(),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|status| panic!("resume after {after} on replica {on}: {status:?}"))
            .into_inner();
        streams += 1;
        if final_head.is_none() {
            streams_while_writing += 1;
        }
        for _ in 0..rng.next(8) {
            let last = collected.last().expect("the first change").sequence;
            match next_event(&mut watch).await {
                Event::Change(change) => {
                    assert_eq!(
                        change.sequence,
                        last + 1,
                        "after {last}, resumed after {after} on replica {on}: \
                         a hole, a repeat or a reordering"
                    );
                    let token = change.resume_token.clone();
                    collected.push(change);
                    if rng.next(3) > 0 {
                        acknowledged = (collected.len(), token);
                    }
                }
                Event::Heartbeat(heartbeat) => {
                    assert_eq!(
                        heartbeat.sequence, last,
                        "an admin's heartbeat comes after everything it was sent"
                    );
                    assert!(heartbeat.head >= heartbeat.sequence, "{heartbeat:?}");
                    if rng.next(3) > 0 {
                        acknowledged = (collected.len(), heartbeat.resume_token);
                        heartbeats_acknowledged += 1;
                    }
                }
                Event::Snapshot(_) => panic!("no snapshot was asked for"),
            }
        }
        drop(watch);
        // Processed but not acknowledged: it comes again.
        redelivered += collected.len() - acknowledged.0;
        collected.truncate(acknowledged.0);
    }
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("a writer");
    }
    let head = final_head.expect("the writers finished");
    eprintln!(
        "{streams} streams ({streams_while_writing} while the writers wrote), \
         {redelivered} changes processed twice (not acknowledged), \
         {heartbeats_acknowledged} heartbeats acknowledged, head {head}"
    );
    assert!(
        head > written,
        "the writers' {written} changes and the setup's: {head}"
    );
    assert!(
        streams_while_writing >= 10,
        "the client resumed {streams_while_writing} times while the writers wrote"
    );
    assert!(
        redelivered > 0,
        "some changes were processed but not acknowledged"
    );
    let sequences: Vec<i64> = collected.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=head).collect::<Vec<_>>());
    let mut listed = listed_changes(&admin).await;
    listed.retain(|change| change.sequence <= head);
    assert!(
        collected == listed,
        "the collected changes are ListChanges' (same targets, same tokens)"
    );
}

/// What a client folds a feed into: each target's latest state, by type and
/// id.
type Folded = BTreeMap<(String, String), proto::target_change::State>;

fn fold(folded: &mut Folded, targets: Vec<proto::TargetChange>) {
    use proto::target_change::State;
    for target in targets {
        let key = (target.target_type, target.target_id);
        match target.state {
            Some(State::Tombstone(_)) => {
                folded.remove(&key);
            }
            Some(state) => {
                folded.insert(key, state);
            }
            None => panic!("a target without a state: {key:?}"),
        }
    }
}

/// The folded targets of one type, by id.
fn of_type<T>(
    folded: &Folded,
    target_type: &str,
    pick: impl Fn(&proto::target_change::State) -> Option<T>,
) -> BTreeMap<String, T> {
    folded
        .iter()
        .filter(|((kind, _), _)| kind == target_type)
        .map(|((_, id), state)| {
            let value = pick(state)
                .unwrap_or_else(|| panic!("a {target_type} of another shape: {state:?}"));
            (id.clone(), value)
        })
        .collect()
}

/// Asserts two maps are equal, naming the first keys that differ (the maps
/// are too big to print whole).
#[track_caller]
fn assert_same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    folded: &BTreeMap<String, T>,
    listed: &BTreeMap<String, T>,
) {
    let mut differences = Vec::new();
    for (id, value) in folded {
        match listed.get(id) {
            None => differences.push(format!("only folded: {id} {value:?}")),
            Some(other) if other != value => {
                differences.push(format!("{id}: folded {value:?}, listed {other:?}"));
            }
            Some(_) => {}
        }
    }
    for (id, value) in listed {
        if !folded.contains_key(id) {
            differences.push(format!("only listed: {id} {value:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{what}: {} folded, {} listed, {} differences, the first: {:#?}",
        folded.len(),
        listed.len(),
        differences.len(),
        &differences[..differences.len().min(5)]
    );
}

/// What the racing writers may act on: created through the API or seeded,
/// shared by the writers of both replicas.
#[derive(Default)]
struct Targets {
    users: Vec<String>,
    invites: Vec<String>,
    tokens: Vec<String>,
    sessions: Vec<String>,
}

impl Targets {
    fn pick(items: &mut Vec<String>, rng: &mut Lcg) -> Option<String> {
        (!items.is_empty()).then(|| items.swap_remove(rng.next(items.len() as u64) as usize))
    }
}

/// One replica's racing writer: an admin (the watcher's credential), users
/// that hold API tokens and sign in, and a second nanoAdmin whose invites a
/// demotion revokes.
struct Racer {
    admin: Session,
    /// Users that hold API tokens and sign in: their emails and sessions.
    holders: Vec<(String, Session)>,
    inviter: (String, Arc<Mutex<String>>),
    targets: Arc<Mutex<Targets>>,
    stop: Arc<AtomicBool>,
    /// Writes that committed, on both replicas.
    written: Arc<AtomicUsize>,
}

impl Racer {
    /// Writes at random until told to stop: users created, their roles
    /// changed, users deleted, invites created and revoked (some by a
    /// demotion of their creator), API tokens created and revoked, sessions
    /// opened and revoked. A write may fail (the other replica's writer took
    /// its target first); only those that commit are counted.
    async fn run(self, seed: u64) {
        let mut rng = Lcg(seed);
        let mut users = self.admin.users();
        let mut sessions =
            proto::session_service_client::SessionServiceClient::new(self.admin.channel.clone());
        let mut tokens =
            proto::api_token_service_client::ApiTokenServiceClient::new(self.admin.channel.clone());
        let roles = [Role::NanoUser, Role::NanoReadOnly, Role::NanoAdmin];
        let take = |rng: &mut Lcg, pick: fn(&mut Targets) -> &mut Vec<String>| {
            let mut targets = self.targets.lock().expect("targets");
            Targets::pick(pick(&mut targets), rng)
        };
        let add = |pick: fn(&mut Targets) -> &mut Vec<String>, id: String| {
            pick(&mut self.targets.lock().expect("targets")).push(id);
        };
        let mut step = 0;
        while !self.stop.load(Ordering::Relaxed) {
            step += 1;
            let written = match rng.next(10) {
                0 => {
                    let email = format!("race{seed}-{step}@acme.example.com");
                    let role = roles[rng.next(3) as usize];
                    self.admin
                        .create_user(&email, role)
                        .await
                        .map(|user| add(|t| &mut t.users, user.id))
                        .is_ok()
                }
                1 => match take(&mut rng, |t| &mut t.users) {
                    Some(user) => {
                        let role = roles[rng.next(3) as usize];
                        let done = self.admin.set_role(&user, role, "").await.is_ok();
                        add(|t| &mut t.users, user);
                        done
                    }
                    None => false,
                },
                2 => match take(&mut rng, |t| &mut t.users) {
                    Some(user) => match self.admin.ask_delete(&user).await {
                        Ok(asked) => self
                            .admin
                            .confirm_delete(&user, &asked.confirmation_token)
                            .await
                            .is_ok(),
                        Err(_) => false,
                    },
                    None => false,
                },
                3 => {
                    let by_inviter = rng.next(2) == 0;
                    let caller = if by_inviter {
                        Session {
                            channel: self.admin.channel.clone(),
                            token: self.inviter.1.lock().expect("inviter").clone(),
                        }
                    } else {
                        self.admin.clone()
                    };
                    users
                        .create_invite(caller.req(proto::CreateInviteRequest {
                            email: format!("invite{seed}-{step}@acme.example.com"),
                            role: Role::NanoUser as i32,
                            ttl: None,
                        }))
                        .await
                        .map(|r| add(|t| &mut t.invites, r.into_inner().invite.expect("").id))
                        .is_ok()
                }
                4 => match take(&mut rng, |t| &mut t.invites) {
                    Some(invite) => users
                        .revoke_invite(
                            self.admin
                                .req(proto::RevokeInviteRequest { invite_id: invite }),
                        )
                        .await
                        .is_ok(),
                    None => false,
                },
                5 => {
                    let (_, holder) = &self.holders[rng.next(self.holders.len() as u64) as usize];
                    create_api_token(&holder.channel, &holder.token, &[])
                        .await
                        .map(|r| add(|t| &mut t.tokens, r.api_token.expect("token").id))
                        .is_ok()
                }
                6 => match take(&mut rng, |t| &mut t.tokens) {
                    Some(token) => tokens
                        .revoke_api_token(self.admin.req(proto::RevokeApiTokenRequest {
                            api_token_id: token,
                        }))
                        .await
                        .is_ok(),
                    None => false,
                },
                7 => {
                    let (email, _) = &self.holders[rng.next(self.holders.len() as u64) as usize];
                    try_sign_in(&self.admin.channel, email)
                        .await
                        .map(|opened| add(|t| &mut t.sessions, opened.session_id))
                        .is_ok()
                }
                8 => match take(&mut rng, |t| &mut t.sessions) {
                    Some(session) => sessions
                        .revoke_session(self.admin.req(proto::RevokeSessionRequest {
                            session_id: session,
                        }))
                        .await
                        .is_ok(),
                    None => false,
                },
                _ => {
                    // The inviter's demotion revokes its pending invites; it
                    // signs in again under its new tokenKey.
                    let role = roles[rng.next(3) as usize];
                    let (inviter, token) = &self.inviter;
                    let done = self.admin.set_role(inviter, role, "").await.is_ok();
                    if let Ok(fresh) = try_sign_in(&self.admin.channel, INVITER).await {
                        *token.lock().expect("inviter") = fresh.access_token;
                    }
                    done
                }
            };
            if written {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

const INVITER: &str = "inviter@acme.example.com";

/// Signs in, or says why not.
async fn try_sign_in(channel: &Channel, email: &str) -> Result<proto::LoginResponse, Status> {
    proto::auth_service_client::AuthServiceClient::new(channel.clone())
        .login(proto::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Everything a watch sends, forwarded as it arrives, so that the server is
/// never held back by the test.
fn forward(
    mut watch: tonic::Streaming<proto::WatchChangesResponse>,
) -> mpsc::UnboundedReceiver<Result<Event, Status>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let next = match watch.message().await {
                Ok(Some(message)) => Ok(message.event.expect("an event")),
                Ok(None) => break,
                Err(status) => Err(status),
            };
            let failed = next.is_err();
            if tx.send(next).is_err() || failed {
                break;
            }
        }
    });
    rx
}

async fn next_forwarded(events: &mut mpsc::UnboundedReceiver<Result<Event, Status>>) -> Event {
    tokio::time::timeout(OWED, events.recv())
        .await
        .expect("a message within the bound")
        .expect("the watch does not end")
        .expect("the watch does not fail")
}

/// A watch's snapshot, page by page until the last: its targets, its
/// sequence and resume token, and how many pages it took. Every page names
/// the same sequence; only the last carries the token.
async fn read_snapshot(
    events: &mut mpsc::UnboundedReceiver<Result<Event, Status>>,
) -> (Vec<proto::TargetChange>, i64, String, usize) {
    let mut targets = Vec::new();
    let mut pages = 0;
    let mut sequence = None;
    loop {
        let Event::Snapshot(page) = next_forwarded(events).await else {
            panic!("the snapshot comes first, whole");
        };
        pages += 1;
        assert_eq!(
            *sequence.get_or_insert(page.sequence),
            page.sequence,
            "every page shows the state at one sequence"
        );
        targets.extend(page.targets);
        if page.last {
            assert!(!page.resume_token.is_empty(), "the last page resumes");
            return (targets, page.sequence, page.resume_token, pages);
        }
        assert!(page.resume_token.is_empty(), "only the last page resumes");
    }
}

/// Guarantee 5: the organisation (1,500 users, so the snapshot takes many
/// pages) is written to on both replicas while a watcher on the first takes
/// a snapshot and then the changes after it. To make the race certain and
/// not only likely, the test also holds the snapshot after it has read every
/// user, invite, session and API token (an exclusive lock on the table it
/// reads next, playback tokens, which none of these writes touches) and
/// writes to each of those kinds meanwhile: those writes commit after the
/// pages that show their targets were read, so only the snapshot's sequence
/// (the head read before the first page) brings them in. At the end the
/// folded users, invites, sessions and API tokens are what the List RPCs
/// say, and the organisation (its role counts) what GetOrganisation says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_raced_by_writes_folds_into_the_organisations_state() {
    // The snapshot's statement waits for the lock while the test writes:
    // longer than the usual 4 s bound on a busy machine.
    let replicas = TwoReplicas::start_with_env(&[
        ("USERMGMT_DB_STATEMENT_TIMEOUT_MS", "60000"),
        ("USERMGMT_DB_CALL_TIMEOUT_MS", "70000"),
    ])
    .await;
    let org = replicas.org.id;
    let admin = replicas.admin().await;
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    usermgmt::app::provisioning::seed_users(&store(&replicas.db), &passwords, org, 1500, 1)
        .await
        .expect("seed 1,500 users");
    let db = replicas.db.client().await;
    let mut seeded: Vec<String> = db
        .query(
            "SELECT id::text FROM users WHERE organisation_id = $1 AND id <> $2 ORDER BY id",
            &[&org, &replicas.org.admin_id],
        )
        .await
        .expect("the seeded users")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(seeded.len() >= 1500, "{}", seeded.len());
    // Kept for the writes made while the snapshot is held: a user of its
    // first page, of its last and of the middle.
    let first_page_user = seeded.remove(0);
    let last_page_user = seeded.pop().expect("a last user");
    let doomed_user = seeded.remove(seeded.len() / 2);

    let mut holders = Vec::new();
    for i in 0..3 {
        let email = format!("holder{i}@acme.example.com");
        admin
            .create_user(&email, Role::NanoUser)
            .await
            .expect("holder");
        let session = Session::login(&replicas.on_first, &email, PASSWORD).await;
        holders.push((email, session));
    }
    let inviter = admin
        .create_user(INVITER, Role::NanoAdmin)
        .await
        .expect("inviter");
    let inviter_token = Arc::new(Mutex::new(
        login(&replicas.on_first, INVITER, PASSWORD).await,
    ));
    let mut users = admin.users();
    let mut invites = Vec::new();
    for i in 0..6 {
        let invite = users
            .create_invite(admin.req(proto::CreateInviteRequest {
                email: format!("before{i}@acme.example.com"),
                role: Role::NanoReadOnly as i32,
                ttl: None,
            }))
            .await
            .expect("invite")
            .into_inner()
            .invite
            .expect("the invite");
        invites.push(invite.id);
    }
    let mut tokens = Vec::new();
    let mut extra_sessions = Vec::new();
    for (email, holder) in &holders {
        for _ in 0..2 {
            let created = create_api_token(&holder.channel, &holder.token, &[])
                .await
                .expect("an API token");
            tokens.push(created.api_token.expect("token").id);
        }
        let opened = sign_in(&replicas.on_first, email, PASSWORD).await;
        extra_sessions.push(opened.session_id);
    }
    let kept_invite = invites.pop().expect("an invite");
    let kept_token = tokens.pop().expect("a token");
    let kept_session = extra_sessions.pop().expect("a session");
    let targets = Arc::new(Mutex::new(Targets {
        users: seeded,
        invites,
        tokens,
        sessions: extra_sessions,
    }));

    // The racing writers, one through each replica.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let racers: Vec<_> = [&replicas.on_first, &replicas.on_second]
        .into_iter()
        .enumerate()
        .map(|(replica, channel)| {
            let on = |session: &Session| Session {
                channel: channel.clone(),
                token: session.token.clone(),
            };
            let racer = Racer {
                admin: on(&admin),
                holders: holders
                    .iter()
                    .map(|(email, session)| (email.clone(), on(session)))
                    .collect(),
                inviter: (inviter.id.clone(), Arc::clone(&inviter_token)),
                targets: Arc::clone(&targets),
                stop: Arc::clone(&stop),
                written: Arc::clone(&written),
            };
            tokio::spawn(racer.run(31 + replica as u64))
        })
        .collect();
    assert!(
        poll_until(OWED, || async { written.load(Ordering::Relaxed) >= 5 }).await,
        "the writers are writing"
    );

    // Hold the snapshot before playback tokens, the table after API tokens.
    let locker = replicas.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE playback_tokens IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock playback tokens");
    let watch = feed(&replicas.on_first)
        .watch_changes(admin.req(proto::WatchChangesRequest {
            start: proto::ChangeStart::Snapshot as i32,
            heartbeat_interval: every_second(),
            ..Default::default()
        }))
        .await
        .expect("watch from a snapshot")
        .into_inner();
    let mut events = forward(watch);
    let held = poll_until(OWED, || async {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'SELECT jti::text AS id FROM playback_tokens%'",
                &[],
            )
            .await
            .expect("read the waits")
            .get(0);
        waiting > 0
    })
    .await;
    assert!(held, "the snapshot reached playback tokens");

    // Meanwhile, through the other replica: a change to each kind of target
    // the snapshot has already read.
    let on_second = Session {
        channel: replicas.on_second.clone(),
        token: admin.token.clone(),
    };
    let mut during = Vec::new();
    let response = on_second
        .users()
        .create_user(on_second.req(proto::CreateUserRequest {
            email: "during@acme.example.com".into(),
            role: Role::NanoUser as i32,
            password: PASSWORD.into(),
        }))
        .await
        .expect("create a user");
    during.push(change_sequence(&response));
    for user in [&first_page_user, &last_page_user] {
        let response = on_second
            .users()
            .update_user_role(on_second.req(proto::UpdateUserRoleRequest {
                user_id: user.clone(),
                role: Role::NanoReadOnly as i32,
                etag: String::new(),
            }))
            .await
            .expect("change a role");
        if response.get_ref().changed {
            during.push(change_sequence(&response));
        }
        let response = on_second
            .users()
            .update_user_role(on_second.req(proto::UpdateUserRoleRequest {
                user_id: user.clone(),
                role: Role::NanoAdmin as i32,
                etag: String::new(),
            }))
            .await
            .expect("change a role");
        during.push(change_sequence(&response));
    }
    let asked = on_second.ask_delete(&doomed_user).await.expect("ask");
    on_second
        .confirm_delete(&doomed_user, &asked.confirmation_token)
        .await
        .expect("delete a user");
    let response = on_second
        .users()
        .create_invite(on_second.req(proto::CreateInviteRequest {
            email: "during-invite@acme.example.com".into(),
            role: Role::NanoUser as i32,
            ttl: None,
        }))
        .await
        .expect("invite");
    during.push(change_sequence(&response));
    let response = on_second
        .users()
        .revoke_invite(on_second.req(proto::RevokeInviteRequest {
            invite_id: kept_invite,
        }))
        .await
        .expect("revoke an invite");
    during.push(change_sequence(&response));
    let response =
        proto::api_token_service_client::ApiTokenServiceClient::new(replicas.on_second.clone())
            .revoke_api_token(on_second.req(proto::RevokeApiTokenRequest {
                api_token_id: kept_token,
            }))
            .await
            .expect("revoke an API token");
    during.push(change_sequence(&response));
    create_api_token(&replicas.on_second, &holders[0].1.token, &[])
        .await
        .expect("create an API token");
    let response =
        proto::session_service_client::SessionServiceClient::new(replicas.on_second.clone())
            .revoke_session(on_second.req(proto::RevokeSessionRequest {
                session_id: kept_session,
            }))
            .await
            .expect("revoke a session");
    during.push(change_sequence(&response));
    sign_in(&replicas.on_second, &holders[1].0, PASSWORD).await;
    locker.batch_execute("COMMIT").await.expect("let go");

    let (snapshot, at, _token, pages) = read_snapshot(&mut events).await;
    assert!(pages >= 8, "1,500 users take at least 8 pages: {pages}");
    assert!(
        during.iter().all(|sequence| *sequence > at),
        "the writes made while the snapshot was held ({during:?}) come after its sequence {at}"
    );
    let mut folded = Folded::new();
    fold(&mut folded, snapshot);

    // The writers go on a while after the snapshot, then stop.
    let after_snapshot = written.load(Ordering::Relaxed);
    assert!(
        poll_until(OWED, || async {
            written.load(Ordering::Relaxed) >= after_snapshot + 10
        })
        .await,
        "the writers write after the snapshot"
    );
    stop.store(true, Ordering::Relaxed);
    for racer in racers {
        racer.await.expect("a racer");
    }
    let head = head_of(&replicas.db, org).await;

    // The changes after the snapshot, folded in, until a heartbeat says the
    // watcher has reached the head.
    let mut position = at;
    let mut changes = 0;
    loop {
        match next_forwarded(&mut events).await {
            Event::Change(change) => {
                assert_eq!(change.sequence, position + 1, "dense after the snapshot");
                position = change.sequence;
                changes += 1;
                fold(&mut folded, change.targets);
            }
            Event::Heartbeat(heartbeat) => {
                assert!(heartbeat.sequence >= position, "{heartbeat:?}");
                position = heartbeat.sequence;
                if heartbeat.head == heartbeat.sequence && heartbeat.sequence >= head {
                    break;
                }
            }
            Event::Snapshot(_) => panic!("one snapshot only"),
        }
    }
    eprintln!(
        "snapshot at {at} in {pages} pages, then {changes} changes to {position}; \
         {} writes committed by the racers",
        written.load(Ordering::Relaxed)
    );

    use proto::target_change::State;
    let mut listed_users = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = users
            .list_users(admin.req(proto::ListUsersRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            }))
            .await
            .expect("list users")
            .into_inner();
        listed_users.extend(page.users.into_iter().map(|u| (u.id.clone(), u)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let folded_users = of_type(&folded, "user", |state| match state {
        State::User(user) => Some(user.clone()),
        _ => None,
    });
    assert_same("users", &folded_users, &listed_users);

    let mut listed_invites = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = users
            .list_invites(admin.req(proto::ListInvitesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
            }))
            .await
            .expect("list invites")
            .into_inner();
        listed_invites.extend(page.invites.into_iter().map(|i| (i.id.clone(), i)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let folded_invites = of_type(&folded, "invite", |state| match state {
        State::Invite(invite) => Some(invite.clone()),
        _ => None,
    });
    assert_same("invites", &folded_invites, &listed_invites);

    // Sessions and API tokens are listed per user: every user that has any
    // in the database.
    let mut session_client =
        proto::session_service_client::SessionServiceClient::new(replicas.on_first.clone());
    let mut token_client =
        proto::api_token_service_client::ApiTokenServiceClient::new(replicas.on_first.clone());
    let owners = |table: &str| {
        format!(
            "SELECT DISTINCT t.user_id::text FROM {table} t JOIN users u ON u.id = t.user_id \
             WHERE u.organisation_id = $1"
        )
    };
    let mut listed_sessions = BTreeMap::new();
    for row in db
        .query(&owners("sessions"), &[&org])
        .await
        .expect("owners")
    {
        let user_id: String = row.get(0);
        let listed = session_client
            .list_sessions(admin.req(proto::ListSessionsRequest {
                user_id,
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
            .expect("list sessions")
            .into_inner();
        assert!(listed.next_page_token.is_empty(), "one page");
        for session in listed.sessions {
            // Whether a session is the listing call's own is not a state.
            let session = proto::Session {
                current: false,
                ..session
            };
            listed_sessions.insert(session.id.clone(), session);
        }
    }
    let folded_sessions = of_type(&folded, "session", |state| match state {
        State::Session(session) => Some(session.clone()),
        _ => None,
    });
    assert_same("sessions", &folded_sessions, &listed_sessions);
    let mut listed_tokens = BTreeMap::new();
    for row in db
        .query(&owners("api_tokens"), &[&org])
        .await
        .expect("owners")
    {
        let user_id: String = row.get(0);
        let listed = token_client
            .list_api_tokens(admin.req(proto::ListApiTokensRequest {
                user_id,
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
            .expect("list API tokens")
            .into_inner();
        assert!(listed.next_page_token.is_empty(), "one page");
        listed_tokens.extend(listed.api_tokens.into_iter().map(|t| (t.id.clone(), t)));
    }
    let folded_tokens = of_type(&folded, "api_token", |state| match state {
        State::ApiToken(token) => Some(token.clone()),
        _ => None,
    });
    assert_same("API tokens", &folded_tokens, &listed_tokens);
    // And the organisation, its role counts moved by the user changes.
    let organisation = proto::organisation_service_client::OrganisationServiceClient::new(
        replicas.on_first.clone(),
    )
    .get_organisation(admin.req(proto::GetOrganisationRequest {}))
    .await
    .expect("get the organisation")
    .into_inner()
    .organisation
    .expect("the organisation");
    let folded_organisation = of_type(&folded, "organisation", |state| match state {
        State::Organisation(organisation) => Some(organisation.clone()),
        _ => None,
    });
    assert_same(
        "the organisation",
        &folded_organisation,
        &BTreeMap::from([(organisation.id.clone(), organisation)]),
    );

    // A watcher that asks for some types gets only those in its snapshot,
    // and they are the folded ones.
    let watch = feed(&replicas.on_second)
        .watch_changes(admin.req(proto::WatchChangesRequest {
            start: proto::ChangeStart::Snapshot as i32,
            target_types: vec!["invite".into(), "api_token".into()],
            ..Default::default()
        }))
        .await
        .expect("watch invites and API tokens from a snapshot")
        .into_inner();
    let (filtered, filtered_at, _, _) = read_snapshot(&mut forward(watch)).await;
    assert_eq!(filtered_at, head, "nothing was written since");
    let mut only = Folded::new();
    fold(&mut only, filtered);
    let mut expected = folded.clone();
    expected.retain(|(kind, _), _| kind == "invite" || kind == "api_token");
    assert!(!expected.is_empty());
    assert!(
        only == expected,
        "the filtered snapshot holds exactly the folded invites and API tokens: \
         {} targets, {} expected",
        only.len(),
        expected.len()
    );
}
