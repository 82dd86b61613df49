//! Two `usermgmt serve` processes on one database: a revocation through one
//! is seen by the other on the very next call.

use tonic::Code;
use usermgmt::proto::{self, user_service_client::UserServiceClient};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fails_on_the_next_call_on_another_replica() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        org,
        on_first,
        on_second,
        ..
    } = &replicas;

    // Replicas share the signing key: a token of one works on the other.
    let token = login(on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let mut users = UserServiceClient::new(on_second.clone());
    for _ in 0..3 {
        users
            .list_users(authed(proto::ListUsersRequest::default(), &token))
            .await
            .expect("valid on the second replica");
    }

    // Revoked through the first replica: both steps of RenewTokenKey.
    let admin = Session {
        channel: on_first.clone(),
        token: login(on_first, &org.admin_email, ADMIN_PASSWORD).await,
    };
    let user_id = org.admin_id.to_string();
    let confirmation = admin.ask_renew(&user_id).await.expect("first step");
    admin
        .confirm_renew(&user_id, &confirmation.confirmation_token)
        .await
        .expect("renew the tokenKey");
    let result = users
        .list_users(authed(proto::ListUsersRequest::default(), &token))
        .await;
    assert_status(result, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}

/// A replica that loses its notification connection stops trusting its
/// cache: a revocation through another replica still fails on it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_listener_does_not_serve_a_revoked_token() {
    let replicas = TwoReplicas::start().await;
    let TwoReplicas {
        db,
        org,
        on_first,
        on_second,
        ..
    } = &replicas;
    let admin = Session {
        channel: on_first.clone(),
        token: login(on_first, &org.admin_email, ADMIN_PASSWORD).await,
    };
    let bob = admin
        .create_user("bob@acme.example.com", usermgmt::proto::Role::NanoUser)
        .await
        .expect("create");
    let bob_on_second = Session {
        channel: on_second.clone(),
        token: login(on_second, "bob@acme.example.com", PASSWORD).await,
    };
    for _ in 0..3 {
        bob_on_second
            .who_am_i()
            .await
            .expect("cached on the second replica");
    }

    db.client()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'usermgmt-cache-listener' AND datname = current_database()",
            &[],
        )
        .await
        .expect("cut the listeners");
    let confirmation = admin.ask_renew(&bob.id).await.expect("first step");
    admin
        .confirm_renew(&bob.id, &confirmation.confirmation_token)
        .await
        .expect("renew");
    assert_status(
        bob_on_second.who_am_i().await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}
