//! Prometheus metrics on their own HTTP port.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;

use crate::support::{ADMIN_PASSWORD, TestServer, assert_status, authed, create_org, free_port};

/// A plain HTTP/1.1 GET; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_authorization_and_the_pool() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let server = TestServer::start_with(&["--metrics-listen", &metrics_addr.to_string()]).await;
    let org = create_org(&server.db, "Metrics").await;
    let mut auth = AuthServiceClient::new(server.channel().await);

    let token = auth
        .login(proto::LoginRequest {
            email: org.admin_email.clone(),
            password: ADMIN_PASSWORD.into(),
            organisation_id: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    auth.who_am_i(authed(proto::WhoAmIRequest {}, &token))
        .await
        .expect("who am i");
    assert_status(
        auth.who_am_i(proto::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MISSING"),
    );

    let (status, body) = http_get(metrics_addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    for expected in [
        r#"usermgmt_grpc_requests_total{code="OK",method="Login",service="usermgmt.v1.AuthService"}"#,
        r#"usermgmt_grpc_requests_total{code="OK",method="WhoAmI",service="usermgmt.v1.AuthService"}"#,
        r#"usermgmt_grpc_requests_total{code="UNAUTHENTICATED",method="WhoAmI",service="usermgmt.v1.AuthService"}"#,
        r#"usermgmt_grpc_request_duration_seconds_bucket{method="WhoAmI",service="usermgmt.v1.AuthService",le="0.1"}"#,
        r#"usermgmt_grpc_request_duration_seconds_count{method="Login",service="usermgmt.v1.AuthService"}"#,
        r#"usermgmt_authorization_total{outcome="allowed",reason="anonymous"}"#,
        r#"usermgmt_authorization_total{outcome="allowed",reason="user"}"#,
        r#"usermgmt_authorization_total{outcome="denied",reason="CREDENTIALS_MISSING"}"#,
        r#"usermgmt_database_errors_total{kind="pool_timeout"}"#,
        "usermgmt_db_pool_connections ",
        "usermgmt_db_pool_connections_idle ",
        "usermgmt_db_pool_connections_in_use ",
        "usermgmt_db_pool_connections_max 4",
        "usermgmt_db_pool_waiting ",
    ] {
        assert!(
            body.contains(expected),
            "{expected} missing from /metrics:\n{body}"
        );
    }

    let (status, _) = http_get(metrics_addr, "/elsewhere").await;
    assert!(status.contains(" 404 "), "{status}");
}
