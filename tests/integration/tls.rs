//! TLS and mTLS, with certificates made for the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::config::{Cli, Command};

use crate::support::{ADMIN_PASSWORD, Session, TestDb, assert_status, authed, create_org};
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;

/// A CA, a server certificate for `localhost` and a client certificate, as
/// PEM files in a directory of their own (removed on drop).
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("usermgmt-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = ca("usermgmt test CA");
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "a client");
        let client_cert = client_params
            .signed_by(&client_key, &ca)
            .expect("client cert");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
        Pki {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A server with `extra` flags; stops when the sender is dropped.
async fn start(db: &TestDb, extra: &[&str]) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut argv = vec![
        "usermgmt",
        "serve",
        "--database-url",
        &db.url,
        "--db-pool-size",
        "2",
    ];
    argv.extend_from_slice(extra);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("flags").command else {
        panic!("not serve");
    };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(error) = usermgmt::server::serve(args, listener, async {
            let _ = rx.await;
        })
        .await
        {
            eprintln!("test server failed: {error}");
        }
    });
    (addr, tx)
}

fn tls(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
}

/// One health check over a new connection.
async fn check(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<i32, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|response| response.into_inner().status)
        .map_err(|status| format!("{status:?}"))
}

/// A connection over TLS, with `tls`.
async fn tls_channel(addr: SocketAddr, tls: ClientTlsConfig) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect over TLS")
}

/// Over TLS with `tls`: a login, a call with its token, and a call with a
/// token that is not one: the service authenticates as over plaintext.
async fn authenticated_calls(db: &TestDb, addr: SocketAddr, tls: ClientTlsConfig) {
    let org = create_org(db, "Acme").await;
    let channel = tls_channel(addr, tls).await;
    let admin = Session::login(&channel, &org.admin_email, ADMIN_PASSWORD).await;
    let me = admin
        .who_am_i()
        .await
        .expect("an authenticated call over TLS");
    assert_eq!(me.user.expect("the caller").id, org.admin_id.to_string());
    let mut auth = AuthServiceClient::new(channel);
    assert_status(
        auth.who_am_i(authed(proto::WhoAmIRequest {}, "not a token"))
            .await,
        tonic::Code::Unauthenticated,
        Some("TOKEN_INVALID"),
    );
}

/// Waits until a health check with `tls` says SERVING.
async fn wait_serving(addr: SocketAddr, tls: ClientTlsConfig) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check(addr, Some(tls.clone())).await {
            Ok(status) if status == ServingStatus::Serving as i32 => return,
            result => assert!(
                Instant::now() < deadline,
                "not SERVING over TLS: {result:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn files(pki: &Pki) -> [String; 3] {
    [
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_answers_tls_calls_only() {
    let db = TestDb::new().await;
    let pki = Pki::new();
    let [cert, key, _] = files(&pki);
    let (addr, _stop) = start(&db, &["--tls-cert", &cert, "--tls-key", &key]).await;

    wait_serving(addr, tls(&pki)).await;
    authenticated_calls(&db, addr, tls(&pki)).await;
    assert!(
        check(addr, None).await.is_err(),
        "a plaintext call to a TLS server must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_certificate_get_in() {
    let db = TestDb::new().await;
    let pki = Pki::new();
    let [cert, key, client_ca] = files(&pki);
    let (addr, _stop) = start(
        &db,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca,
        ],
    )
    .await;

    let with_certificate = tls(&pki).identity(Identity::from_pem(
        &pki.client_cert_pem,
        &pki.client_key_pem,
    ));
    wait_serving(addr, with_certificate.clone()).await;
    authenticated_calls(&db, addr, with_certificate).await;

    let refused = check(addr, Some(tls(&pki))).await;
    assert!(refused.is_err(), "no client certificate, yet: {refused:?}");

    // A certificate from another CA is refused too.
    let stranger = ca("another CA");
    let stranger_key = KeyPair::generate().expect("key");
    let stranger_cert = CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .signed_by(&stranger_key, &stranger)
        .expect("cert");
    let refused = check(
        addr,
        Some(tls(&pki).identity(Identity::from_pem(
            stranger_cert.pem(),
            stranger_key.serialize_pem(),
        ))),
    )
    .await;
    assert!(
        refused.is_err(),
        "a stranger's certificate, yet: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_that_cannot_work_stop_the_start() {
    let db = TestDb::new().await;
    let missing = Path::new("/nonexistent/server.pem").display().to_string();
    for flags in [
        vec!["--tls-cert", missing.as_str()],
        vec!["--tls-client-ca", missing.as_str()],
        vec![
            "--tls-cert",
            missing.as_str(),
            "--tls-key",
            missing.as_str(),
        ],
    ] {
        let mut argv = vec!["usermgmt", "serve", "--database-url", &db.url];
        argv.extend_from_slice(&flags);
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("flags").command else {
            panic!("not serve");
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error = usermgmt::server::serve(args, listener, std::future::pending())
            .await
            .expect_err("must not start");
        assert!(
            error.to_string().contains("tls") || error.to_string().contains("TLS"),
            "{error}"
        );
    }
}
