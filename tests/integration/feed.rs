//! The change feed: the shape of its answers, first (the guarantees have
//! files of their own: feed_*.rs).

use usermgmt::proto::{self, Role, change_service_client::ChangeServiceClient};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answers_with_its_change_and_the_feed_lists_it() {
    let OneServer {
        org,
        channel,
        server: _server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut feed = ChangeServiceClient::new(channel.clone());
    let mut users = usermgmt::proto::user_service_client::UserServiceClient::new(channel.clone());
    let created = users
        .create_user(admin.req(proto::CreateUserRequest {
            email: "watched@acme.example.com".into(),
            role: Role::NanoUser as i32,
            password: "correct horse battery".into(),
        }))
        .await
        .expect("create a user");
    let sequence: i64 = created
        .metadata()
        .get(usermgmt::proto::metadata::CHANGE_SEQUENCE)
        .expect("the write names its change")
        .to_str()
        .expect("text")
        .parse()
        .expect("a number");
    let user_id = created.into_inner().user.expect("user").id;
    let page = feed
        .list_changes(admin.req(proto::ListChangesRequest::default()))
        .await
        .expect("list changes")
        .into_inner();
    let change = page
        .changes
        .iter()
        .find(|change| change.sequence == sequence)
        .expect("the write's change is listed");
    assert_eq!(change.targets[0].target_id, user_id);
    assert_eq!(change.targets[0].action, "user.create");
    assert_eq!(page.head, sequence);
    let sequences: Vec<i64> = page.changes.iter().map(|c| c.sequence).collect();
    let dense: Vec<i64> = (1..=page.head).collect();
    assert_eq!(sequences, dense);

    let mut stream = feed
        .watch_changes(admin.req(proto::WatchChangesRequest {
            resume_token: page.changes[0].resume_token.clone(),
            ..Default::default()
        }))
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while seen.last() != Some(&sequence) {
        let message = stream.message().await.expect("a message").expect("open");
        if let Some(proto::watch_changes_response::Event::Change(change)) = message.event {
            seen.push(change.sequence);
        }
    }
    assert_eq!(seen, (2..=sequence).collect::<Vec<_>>());
    for change in &page.changes {
        assert_eq!(change.previous_sequence, change.sequence - 1);
    }
}

/// A filtered watcher skips changes, and proves it missed none of its own:
/// each change names the sequence its previous message brought it to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_watcher_can_prove_it_missed_nothing() {
    let OneServer {
        org,
        channel,
        server: _server,
    } = OneServer::start().await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut feed = ChangeServiceClient::new(channel.clone());
    let mut stream = feed
        .watch_changes(admin.req(proto::WatchChangesRequest {
            start: proto::ChangeStart::Now as i32,
            target_types: vec!["invite".into()],
            ..Default::default()
        }))
        .await
        .expect("watch")
        .into_inner();
    let mut invites = Vec::new();
    for n in 0..6 {
        // Users between the invites: changes this watcher does not get.
        admin
            .create_user(&format!("skipped{n}@acme.example.com"), Role::NanoUser)
            .await
            .expect("create a user");
        let invite = admin
            .users()
            .create_invite(admin.req(proto::CreateInviteRequest {
                email: format!("invited{n}@acme.example.com"),
                role: Role::NanoUser as i32,
                ttl: None,
            }))
            .await
            .expect("invite")
            .into_inner();
        invites.push(invite.invite.expect("invite").id);
    }
    let mut through = None;
    let mut received = Vec::new();
    while received.len() < invites.len() {
        let message = stream.message().await.expect("a message").expect("open");
        match message.event.expect("an event") {
            proto::watch_changes_response::Event::Heartbeat(beat) => through = Some(beat.sequence),
            proto::watch_changes_response::Event::Change(change) => {
                assert_eq!(
                    Some(change.previous_sequence),
                    through,
                    "each change names where the watcher's previous message left it"
                );
                through = Some(change.sequence);
                received.push(change.targets[0].target_id.clone());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, invites);
}
