use tonic::Code;
use usermgmt::proto::{self, user_service_client::UserServiceClient};
use uuid::Uuid;

use crate::support::*;

fn page(page_size: i32, page_token: &str, role: proto::Role) -> proto::ListUsersRequest {
    proto::ListUsersRequest {
        page_size,
        page_token: page_token.into(),
        role: role as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_pages_with_tokens_totals_and_a_role_filter() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    for i in 0..4 {
        let email = format!("user{i}@acme.example.com");
        add_user(&channel, &org, &email, proto::Role::NanoUser).await;
    }
    for i in 0..3 {
        let email = format!("viewer{i}@acme.example.com");
        add_user(&channel, &org, &email, proto::Role::NanoReadOnly).await;
    }
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut users = UserServiceClient::new(channel);

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut sizes = Vec::new();
    loop {
        let response = users
            .list_users(authed(
                page(3, &page_token, proto::Role::Unspecified),
                &token,
            ))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(response.total_size, 8);
        sizes.push(response.users.len());
        seen.extend(response.users.into_iter().map(|u| u.id));
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    assert_eq!(sizes, [3, 3, 2]);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "no user twice, none left out");
    assert_eq!(seen[0], org.admin_id.to_string(), "oldest first");

    let first = users
        .list_users(authed(page(2, "", proto::Role::NanoReadOnly), &token))
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(first.total_size, 3);
    assert!(
        first
            .users
            .iter()
            .all(|u| u.role == proto::Role::NanoReadOnly as i32)
    );
    let second = users
        .list_users(authed(
            page(2, &first.next_page_token, proto::Role::NanoReadOnly),
            &token,
        ))
        .await
        .expect("filtered, page 2")
        .into_inner();
    assert_eq!(second.users.len(), 1);
    assert!(second.next_page_token.is_empty());

    // A page token is valid only with the filter that made it.
    let mismatch = users
        .list_users(authed(
            page(2, &first.next_page_token, proto::Role::NanoUser),
            &token,
        ))
        .await;
    let status = assert_status(mismatch, Code::InvalidArgument, None);
    assert_eq!(violated_fields(&status), ["page_token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_and_get_arguments_name_their_fields() {
    let OneServer {
        server: _server,
        org,
        channel,
    } = OneServer::start().await;
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let mut users = UserServiceClient::new(channel);

    let bad_page = proto::ListUsersRequest {
        page_size: -1,
        page_token: "!!".into(),
        role: 42,
        ..Default::default()
    };
    // Code InvalidArgument; page_size, page_token and role violated.
    insta::assert_snapshot!(
        "bad_page",
        error_summary(users.list_users(authed(bad_page, &token)).await)
    );

    let bad_id = proto::GetUserRequest {
        user_id: "not-a-uuid".into(),
    };
    // Code InvalidArgument; user_id violated.
    insta::assert_snapshot!(
        "bad_id",
        error_summary(users.get_user(authed(bad_id, &token)).await)
    );

    let unknown = proto::GetUserRequest {
        user_id: Uuid::now_v7().to_string(),
    };
    assert_status(
        users.get_user(authed(unknown, &token)).await,
        Code::NotFound,
        None,
    );

    // Larger than the maximum is coerced down (AIP-158), not refused.
    let huge = proto::ListUsersRequest {
        page_size: 1_000_000,
        ..Default::default()
    };
    users
        .list_users(authed(huge, &token))
        .await
        .expect("huge page size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_users_may_not_list_users_and_operators_may() {
    let server = TestServer::start().await;
    let org = create_org(&server.db, "Acme").await;
    let channel = server.channel().await;
    let viewer = "viewer@acme.example.com";
    add_user(&channel, &org, viewer, proto::Role::NanoReadOnly).await;
    let operator = "operator@acme.example.com";
    let operator = add_user(&channel, &org, operator, proto::Role::NanoUser).await;
    let mut users = UserServiceClient::new(channel.clone());

    let viewer = login(&channel, "viewer@acme.example.com", PASSWORD).await;
    let denied = users
        .list_users(authed(proto::ListUsersRequest::default(), &viewer))
        .await;
    assert_status(denied, Code::PermissionDenied, Some("PERMISSION_MISSING"));
    let get = proto::GetUserRequest {
        user_id: operator.to_string(),
    };
    assert_status(
        users.get_user(authed(get.clone(), &viewer)).await,
        Code::PermissionDenied,
        None,
    );

    let operator_token = login(&channel, "operator@acme.example.com", PASSWORD).await;
    let listed = users
        .list_users(authed(proto::ListUsersRequest::default(), &operator_token))
        .await
        .expect("operators read the user list")
        .into_inner();
    assert_eq!(listed.total_size, 3);
    users
        .get_user(authed(get, &operator_token))
        .await
        .expect("get user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_users_are_not_found() {
    let server = TestServer::start().await;
    let acme = create_org(&server.db, "Acme").await;
    let globex = create_org(&server.db, "Globex").await;
    let channel = server.channel().await;
    let acme_user = add_user(
        &channel,
        &acme,
        "user@acme.example.com",
        proto::Role::NanoUser,
    )
    .await;
    let globex_token = login(&channel, &globex.admin_email, ADMIN_PASSWORD).await;
    let mut users = UserServiceClient::new(channel);

    for target in [acme.admin_id, acme_user] {
        let request = proto::GetUserRequest {
            user_id: target.to_string(),
        };
        assert_status(
            users.get_user(authed(request, &globex_token)).await,
            Code::NotFound,
            None,
        );
    }
    let listed = users
        .list_users(authed(proto::ListUsersRequest::default(), &globex_token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_size, 1);
    assert_eq!(listed.users[0].id, globex.admin_id.to_string());
}
