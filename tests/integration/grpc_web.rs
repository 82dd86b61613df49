//! gRPC-Web: a browser's call, framed by hand over HTTP/1.1, and CORS.

use std::net::SocketAddr;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use usermgmt::proto;

use crate::support::{ADMIN_PASSWORD, TestServer, create_org, login};

pub(crate) const DASHBOARD: &str = "https://dashboard.example.com";

/// One HTTP/1.1 request on a connection of its own.
pub(crate) async fn send(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> http::Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    http::Response::from_parts(parts, body)
}

/// `message` as one gRPC-Web data frame.
pub(crate) fn frame(message: &impl prost::Message) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(message.encoded_len() as u32);
    message.encode(&mut body).expect("encode");
    body.freeze()
}

/// The data frames and the trailers of a gRPC-Web response body.
pub(crate) fn unframe(mut body: Bytes) -> (Vec<Bytes>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.has_remaining() {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&payload));
        } else {
            messages.push(payload);
        }
    }
    (messages, trailers)
}

pub(crate) fn grpc_web_post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header(http::header::ORIGIN, DASHBOARD);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Full::new(body)).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_calls_who_am_i_through_grpc_web() {
    let server = TestServer::start_with(&["--cors-allowed-origins", DASHBOARD]).await;
    let org = create_org(&server.db, "Web").await;
    let token = login(&server.channel().await, &org.admin_email, ADMIN_PASSWORD).await;

    let response = send(
        server.addr,
        grpc_web_post(
            server.addr,
            "/usermgmt.v1.AuthService/WhoAmI",
            Some(&token),
            frame(&proto::WhoAmIRequest {}),
        ),
    )
    .await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii");
    assert!(
        content_type.starts_with("application/grpc-web"),
        "{content_type}"
    );
    assert_eq!(
        response.headers()[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        DASHBOARD
    );
    let (messages, trailers) = unframe(response.into_body());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let who = proto::WhoAmIResponse::decode(messages.first().expect("a message").clone())
        .expect("a WhoAmIResponse");
    assert_eq!(who.user.expect("user").email, org.admin_email);
    assert_eq!(who.role, proto::Role::NanoAdmin as i32);

    // Without credentials: refused as over gRPC.
    let response = send(
        server.addr,
        grpc_web_post(
            server.addr,
            "/usermgmt.v1.AuthService/WhoAmI",
            None,
            frame(&proto::WhoAmIRequest {}),
        ),
    )
    .await;
    let status = response
        .headers()
        .get("grpc-status")
        .map(|value| value.to_str().expect("ascii").to_owned())
        .unwrap_or_else(|| unframe(response.into_body()).1);
    assert!(status.contains("16"), "UNAUTHENTICATED expected: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_only_the_configured_origins() {
    let server = TestServer::start_with(&["--cors-allowed-origins", DASHBOARD]).await;
    let preflight = |origin: &str| {
        http::Request::builder()
            .method(http::Method::OPTIONS)
            .uri(format!(
                "http://{}/usermgmt.v1.AuthService/WhoAmI",
                server.addr
            ))
            .header(http::header::HOST, server.addr.to_string())
            .header(http::header::ORIGIN, origin)
            .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                http::header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,x-grpc-web,authorization",
            )
            .body(Full::new(Bytes::new()))
            .expect("request")
    };

    let allowed = send(server.addr, preflight(DASHBOARD)).await;
    assert!(allowed.status().is_success(), "{:?}", allowed.status());
    assert_eq!(
        allowed.headers()[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        DASHBOARD
    );
    let allowed_headers = allowed.headers()[http::header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .expect("ascii");
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let refused = send(server.addr, preflight("https://evil.example.com")).await;
    assert!(
        refused
            .headers()
            .get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{:?}",
        refused.headers()
    );
}
