//! Two `usermgmt serve` processes on one database: a revocation through one
//! is seen by the other on the very next call.

use tonic::Code;
use usermgmt::proto::{self, user_service_client::UserServiceClient};
use uuid::Uuid;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fails_on_the_next_call_on_another_replica() {
    let db = TestDb::new().await;
    let first = Replica::start(&db.url).await;
    let second = Replica::start(&db.url).await;
    let org = create_org(&db, "Acme").await;
    let on_first = channel(first.addr).await;
    let on_second = channel(second.addr).await;

    // Replicas share the signing key: a token of one works on the other.
    let token = login(&on_first, &org.admin_email, ADMIN_PASSWORD).await;
    let mut users = UserServiceClient::new(on_second);
    for _ in 0..3 {
        users
            .list_users(authed(proto::ListUsersRequest::default(), &token))
            .await
            .expect("valid on the second replica");
    }

    db.client()
        .await
        .execute(
            "UPDATE users SET token_key = $1 WHERE id = $2",
            &[&Uuid::new_v4(), &org.admin_id],
        )
        .await
        .expect("renew the tokenKey");
    let result = users
        .list_users(authed(proto::ListUsersRequest::default(), &token))
        .await;
    assert_status(result, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}
