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
}
