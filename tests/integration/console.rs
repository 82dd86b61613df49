//! The web console on the gRPC listener: its pages and files over HTTP/1.1
//! with their headers, nothing outside its directory, and the API beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE,
};
use http::{Method, StatusCode};
use http_body_util::Full;
use prost::Message as _;
use tonic::Code;
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;

use crate::grpc_web::{DASHBOARD, frame, grpc_web_post, send, unframe};
use crate::support::{
    ADMIN_PASSWORD, OneServer, Replica, TestDb, TestServer, assert_status, login,
};

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const INDEX: &str =
    "<!doctype html><title>usermgmt</title><script src=\"/assets/app-ABCDEF12.js\"></script>";
const HASHED: &str = "console.log('hashed');";
const PLAIN: &str = "console.log('plain');";
/// In the files beside the console's directory, which no request may read.
const SECRET: &str = "not for browsers";

/// A console build in `root/dist` (`index.html`, a hashed and an unhashed
/// asset), with files that must stay unreachable: beside it
/// (`root/secret.txt`, `root/Cargo.toml`) and in it but neither the page nor
/// an asset (`root/dist/stray.txt`); removed on drop.
struct Build {
    root: PathBuf,
}

impl Build {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("usermgmt-console-{}", uuid::Uuid::new_v4()));
        let assets = root.join("dist").join("assets");
        std::fs::create_dir_all(&assets).expect("create the console's directory");
        for (path, content) in [
            (root.join("dist").join("index.html"), INDEX),
            (assets.join("app-ABCDEF12.js"), HASHED),
            (assets.join("plain.js"), PLAIN),
            (root.join("dist").join("stray.txt"), SECRET),
            (root.join("secret.txt"), SECRET),
            (root.join("Cargo.toml"), SECRET),
        ] {
            std::fs::write(path, content).expect("write a console file");
        }
        Build { root }
    }

    fn dir(&self) -> String {
        self.root.join("dist").display().to_string()
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `method path` as a browser sends it, on a connection of its own.
async fn request(addr: SocketAddr, method: Method, path: &str) -> http::Response<Bytes> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(addr, request).await
}

async fn get(addr: SocketAddr, path: &str) -> http::Response<Bytes> {
    request(addr, Method::GET, path).await
}

fn header(response: &http::Response<Bytes>, name: impl http::header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("ascii header"))
        .unwrap_or("")
}

/// The headers every answer of the console carries, whatever its status.
#[track_caller]
fn assert_console_headers(response: &http::Response<Bytes>, cache_control: &str) {
    assert_eq!(header(response, CONTENT_SECURITY_POLICY), POLICY);
    assert_eq!(header(response, "x-frame-options"), "DENY");
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    assert_eq!(header(response, "referrer-policy"), "no-referrer");
    assert_eq!(
        header(response, "cross-origin-opener-policy"),
        "same-origin"
    );
    assert_eq!(header(response, CACHE_CONTROL), cache_control);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_carry_the_console_headers() {
    let build = Build::new();
    let server = TestServer::start_with(&["--console-dir", &build.dir()]).await;

    for path in ["/", "/index.html", "/?next=%2Fusers"] {
        let page = get(server.addr, path).await;
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert!(
            header(&page, CONTENT_TYPE).starts_with("text/html"),
            "{path}"
        );
        assert_console_headers(&page, "no-store");
        assert_eq!(page.body(), INDEX, "{path}");
    }

    let hashed = get(server.addr, "/assets/app-ABCDEF12.js").await;
    assert_eq!(hashed.status(), StatusCode::OK);
    assert!(
        header(&hashed, CONTENT_TYPE).contains("javascript"),
        "{hashed:?}"
    );
    assert_console_headers(&hashed, IMMUTABLE);
    assert_eq!(hashed.body(), HASHED);

    let plain = get(server.addr, "/assets/plain.js").await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(
        header(&plain, CONTENT_TYPE).contains("javascript"),
        "{plain:?}"
    );
    assert_console_headers(&plain, "no-store");
    assert_eq!(plain.body(), PLAIN);

    // Not found, hashed name or not, is never kept.
    for path in [
        "/assets/app-ABCDEF99.js",
        "/assets/",
        "/assets",
        "/favicon.ico",
        "/users",
        "/usermgmt.v1.AuthService/WhoAmI",
    ] {
        let missing = get(server.addr, path).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
        assert_console_headers(&missing, "no-store");
    }

    let head = request(server.addr, Method::HEAD, "/").await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, CONTENT_LENGTH), INDEX.len().to_string());
    assert!(head.body().is_empty());
    assert_console_headers(&head, "no-store");
    let head = request(server.addr, Method::HEAD, "/assets/app-ABCDEF12.js").await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_console_headers(&head, IMMUTABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_reads_outside_the_console() {
    let build = Build::new();
    let server = TestServer::start_with(&["--console-dir", &build.dir()]).await;

    for path in [
        "/../Cargo.toml",
        "/../secret.txt",
        "/assets/../../Cargo.toml",
        "/assets/../../secret.txt",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/%2E%2E/%2E%2E/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/assets/..%5c..%5csecret.txt",
        "/%2e%2e/secret.txt",
        "/stray.txt",
        "/assets/../stray.txt",
        "/assets//etc/passwd",
        "/assets/%2fetc%2fpasswd",
    ] {
        for method in [Method::GET, Method::HEAD] {
            let response = request(server.addr, method.clone(), path).await;
            assert!(
                matches!(
                    response.status(),
                    StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
                ),
                "{method} {path}: {:?}",
                response.status()
            );
            let body = String::from_utf8_lossy(response.body());
            assert!(!body.contains(SECRET), "{method} {path} read {body:?}");
            assert!(!body.contains("root:"), "{method} {path} read {body:?}");
            assert_console_headers(&response, "no-store");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_beside_the_console() {
    let build = Build::new();
    let OneServer {
        channel,
        org,
        server: _server,
    } = OneServer::start_with(&[
        "--console-dir",
        &build.dir(),
        "--cors-allowed-origins",
        DASHBOARD,
    ])
    .await;
    let addr = _server.addr;

    // gRPC (HTTP/2 POST).
    assert_status(
        AuthServiceClient::new(channel.clone())
            .who_am_i(proto::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MISSING"),
    );

    // gRPC-Web (HTTP/1.1 POST).
    let token = login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let response = send(
        addr,
        grpc_web_post(
            addr,
            "/usermgmt.v1.AuthService/WhoAmI",
            Some(&token),
            frame(&proto::WhoAmIRequest {}),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, CONTENT_TYPE).starts_with("application/grpc-web"));
    assert_eq!(header(&response, CONTENT_SECURITY_POLICY), "");
    let (messages, trailers) = unframe(response.into_body());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let who = proto::WhoAmIResponse::decode(messages.first().expect("a message").clone())
        .expect("a WhoAmIResponse");
    assert_eq!(who.user.expect("user").email, org.admin_email);

    // A CORS preflight is answered by CORS, not by the console.
    let preflight = http::Request::builder()
        .method(Method::OPTIONS)
        .uri("/usermgmt.v1.AuthService/WhoAmI")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ORIGIN, DASHBOARD)
        .header(http::header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            http::header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,x-grpc-web,authorization",
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    let preflight = send(addr, preflight).await;
    assert!(preflight.status().is_success(), "{preflight:?}");
    assert_eq!(header(&preflight, ACCESS_CONTROL_ALLOW_ORIGIN), DASHBOARD);
    assert_eq!(header(&preflight, CONTENT_SECURITY_POLICY), "");

    // And the console on the same listener.
    let page = get(addr, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.body(), INDEX);
}

/// How the console is built, as the server says it when it is not.
fn not_built(dir: &Path) -> String {
    format!(
        "the console is not built (no {}): build it with \
         `npm ci --prefix console && npm run --prefix console build` (docs/console.md); \
         serving the API only",
        dir.join("index.html").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_build_a_page_says_how_to_build_it_and_the_api_answers() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("usermgmt-no-console-{}", db.name));
    let log_path = std::env::temp_dir().join(format!("usermgmt-console-{}.log", db.name));
    let dir_setting = dir.display().to_string();
    let replica = Replica::start_logged(
        &db.url,
        &[
            ("USERMGMT_LOG", "info"),
            ("USERMGMT_CONSOLE_DIR", dir_setting.as_str()),
        ],
        &log_path,
    )
    .await;
    let how_to = not_built(&dir);

    for path in ["/", "/index.html", "/assets/app-ABCDEF12.js"] {
        let page = get(replica.addr, path).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(header(&page, CONTENT_TYPE), "text/plain; charset=utf-8");
        assert_console_headers(&page, "no-store");
        assert_eq!(String::from_utf8_lossy(page.body()), how_to, "{path}");
    }
    let head = request(replica.addr, Method::HEAD, "/").await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);

    assert_status(
        AuthServiceClient::new(crate::support::channel(replica.addr).await)
            .who_am_i(proto::WhoAmIRequest {})
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MISSING"),
    );

    drop(replica);
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.lines()
            .any(|line| line.contains(" INFO ") && line.contains(&how_to)),
        "{log}"
    );
    assert!(!log.contains("usermgmt console at"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_says_where_the_console_is() {
    let build = Build::new();
    let db = TestDb::new().await;
    let log_path = std::env::temp_dir().join(format!("usermgmt-console-{}.log", db.name));
    let log = std::fs::File::create(&log_path).expect("create the log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usermgmt"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db-pool-size", "2"])
        .env("DATABASE_URL", &db.url)
        .env("USERMGMT_LOG", "info")
        .env("USERMGMT_LOG_FORMAT", "json")
        .env("USERMGMT_CONSOLE_DIR", build.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn usermgmt serve");
    let stdout = child.stdout.take().expect("piped stdout");
    // Its first two lines: where it listens, then where the console is.
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(2)
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines).await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    let lines = lines.expect("two lines within 60 s").expect("read stdout");
    let addr: SocketAddr = lines[0]
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .parse()
        .expect("an address");
    let url = format!("http://{addr}/");
    assert_eq!(lines[1], format!("usermgmt console at {url}"));
    let record = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| record["fields"]["console_url"].is_string())
        .unwrap_or_else(|| panic!("no console_url in the log: {log}"));
    assert_eq!(record["level"], "INFO");
    assert_eq!(record["fields"]["console_url"], url.as_str());
    assert_eq!(
        record["fields"]["message"],
        format!("usermgmt console at {url}").as_str()
    );
}
