//! Secrets at rest: with a key-encryption key (KEK) configured, the playback
//! private keys and the generated access-token key are stored sealed; a
//! server given a KEK that does not open them refuses to start; `usermgmt
//! keys rewrap` moves them from no KEK to one and from one KEK to another
//! while every token issued before keeps verifying; a sealed value copied to
//! another row does not open; no KEK reaches a log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use usermgmt::auth::playback::sign;
use usermgmt::auth::tokens::{AccessTokens, TokenSettings};
use usermgmt::domain::playback::SigningAlgorithm;
use usermgmt::proto::{self, playback_token_service_client::PlaybackTokenServiceClient};
use usermgmt::sealing::{Kek, Keyring, Purpose};

use crate::playback::{for_streams, issue, make_secure};
use crate::support::*;

const KEK_A: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEK_B: &str = "c2VhbGVkIHNlY3JldHMgYXQgcmVzdCwga2V5IEIhISE=";
const KEK_C: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
const JWT_KEY_NAME: &str = "access_token_hs256_key";

fn kek_id(text: &str) -> String {
    Kek::parse(text).expect("a valid KEK").id().to_string()
}

fn keyring(sealing: &str) -> Keyring {
    Keyring::new(Some(Kek::parse(sealing).expect("a valid KEK")), vec![])
}

fn log_path(db: &TestDb, what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("usermgmt-sealed-{}-{what}.log", db.name))
}

/// A `usermgmt serve` process with `env`, logging to a file of `db`'s.
async fn replica(db: &TestDb, what: &str, env: &[(&str, &str)]) -> Replica {
    Replica::start_logged(&db.url, env, &log_path(db, what)).await
}

struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `usermgmt args…` on `db` with `env` until it exits (at most 60 s).
async fn run(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut child = Command::new(env!("CARGO_BIN_EXE_usermgmt"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("USERMGMT_LOG", "debug")
        .env_remove("USERMGMT_KEY_ENCRYPTION_KEY")
        .env_remove("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn usermgmt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("usermgmt {args:?} did not exit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().expect("output");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `usermgmt serve`, expected to refuse to start.
async fn serve_refused(db: &TestDb, env: &[(&str, &str)]) -> Exit {
    let exit = run(db, &["serve", "--listen", "127.0.0.1:0"], env).await;
    assert_eq!(exit.code, Some(1), "serve should refuse: {}", exit.stderr);
    exit
}

/// `usermgmt keys rewrap` with `env`; its JSON output.
async fn rewrap(db: &TestDb, env: &[(&str, &str)]) -> serde_json::Value {
    let exit = run(db, &["keys", "rewrap"], env).await;
    assert_eq!(exit.code, Some(0), "rewrap failed: {}", exit.stderr);
    serde_json::from_str(&exit.stdout).expect("rewrap prints JSON")
}

async fn stored_jwt_key(db: &TestDb) -> Vec<u8> {
    db.client()
        .await
        .query_one(
            "SELECT value FROM service_secrets WHERE name = $1",
            &[&JWT_KEY_NAME],
        )
        .await
        .expect("the access-token key is stored")
        .get(0)
}

async fn stored_private_key(db: &TestDb, kid: &str) -> Vec<u8> {
    db.client()
        .await
        .query_one(
            "SELECT private_key FROM playback_signing_keys WHERE kid = $1",
            &[&kid],
        )
        .await
        .expect("the playback key is stored")
        .get(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn access_tokens(key: &[u8]) -> AccessTokens {
    AccessTokens::new(
        key,
        TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: Duration::from_secs(3600),
        },
        1 << 20,
    )
    .expect("access tokens")
}

fn claims_of(token: &str) -> usermgmt::auth::playback::PlaybackClaims {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&json).expect("claims")
}

async fn valid(channel: &tonic::transport::Channel, token: &str) -> bool {
    PlaybackTokenServiceClient::new(channel.clone())
        .verify_playback_token(proto::VerifyPlaybackTokenRequest {
            token: token.into(),
            stream: "live".into(),
            group_id: String::new(),
        })
        .await
        .expect("verify")
        .into_inner()
        .valid
}

/// A secure organisation's admin signed in on `channel`.
async fn secure_admin(db: &TestDb, channel: &tonic::transport::Channel, name: &str) -> Session {
    let org = create_org(db, name).await;
    make_secure(db, org.id).await;
    Session::login(channel, &org.admin_email, ADMIN_PASSWORD).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_kek_the_stored_keys_are_sealed_and_the_kek_is_never_logged() {
    let db = TestDb::new().await;
    let server = replica(
        &db,
        "serve",
        &[
            ("USERMGMT_LOG", "debug"),
            ("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A),
        ],
    )
    .await;
    let channel = crate::support::channel(server.addr).await;
    let admin = secure_admin(&db, &channel, "Acme").await;
    let issued = issue(&admin, for_streams(&["live"])).await.expect("issue");
    assert!(valid(&channel, &issued.token).await);

    // The access-token key: what opens from the row verifies the admin's
    // token, and the row holds none of it.
    let stored = stored_jwt_key(&db).await;
    let jwt_key = keyring(KEK_A)
        .open(Purpose::ServiceSecret, JWT_KEY_NAME, &stored)
        .expect("the stored access-token key opens with the KEK");
    access_tokens(&jwt_key)
        .verify(&admin.token)
        .expect("the opened key verifies the admin's access token");
    assert!(
        !contains(&stored, &jwt_key[..16]),
        "the access-token key is stored in plain"
    );

    // The playback key: what opens from the row signs the very token the
    // server issued (EdDSA is deterministic), and the row holds none of it.
    let stored = stored_private_key(&db, &issued.kid).await;
    let der = keyring(KEK_A)
        .open(Purpose::PlaybackPrivateKey, &issued.kid, &stored)
        .expect("the stored private key opens with the KEK");
    let resigned = sign(
        &claims_of(&issued.token),
        &issued.kid,
        SigningAlgorithm::EdDsa,
        &der,
    )
    .expect("sign with the opened key");
    assert_eq!(resigned, issued.token, "the opened key is the signing key");
    // The last 32 bytes of an Ed25519 PKCS#8 document are the private key.
    assert!(
        !contains(&stored, &der[der.len() - 32..]),
        "the playback private key is stored in plain"
    );

    drop(server);
    let log = std::fs::read_to_string(log_path(&db, "serve")).expect("read the log");
    let _ = std::fs::remove_file(log_path(&db, "serve"));
    assert!(log.contains("DEBUG"), "the log is at debug level");
    assert!(
        log.contains(&kek_id(KEK_A)),
        "the log names the KEK by its id: {log}"
    );
    assert!(!log.contains(KEK_A), "the KEK is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_kek_does_not_open_the_stored_secrets_refuses_to_start() {
    let db = TestDb::new().await;
    let server = replica(&db, "a", &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A)]).await;
    let channel = crate::support::channel(server.addr).await;
    let admin = secure_admin(&db, &channel, "Acme").await;
    let issued = issue(&admin, for_streams(&["live"])).await.expect("issue");
    drop(server);
    let jwt_key = stored_jwt_key(&db).await;

    // Another KEK, no KEK, and the sealing KEK unknown among previous ones.
    for env in [
        vec![("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B)],
        vec![],
        vec![("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS", KEK_C)],
    ] {
        let exit = serve_refused(&db, &env).await;
        let expected = format!(
            "cannot open the service secret \"{JWT_KEY_NAME}\" (service_secrets): it is sealed \
             with key-encryption key {}, which is not configured",
            kek_id(KEK_A)
        );
        assert!(exit.stderr.contains(&expected), "{env:?}: {}", exit.stderr);
        for kek in [KEK_A, KEK_B, KEK_C] {
            assert!(!exit.stderr.contains(kek), "a KEK is in the output");
        }
    }
    // Nothing was replaced by a new key.
    assert_eq!(stored_jwt_key(&db).await, jwt_key);

    // With the access-token key configured rather than stored, the playback
    // key is named.
    db.client()
        .await
        .execute("DELETE FROM service_secrets", &[])
        .await
        .expect("forget the stored access-token key");
    let exit = serve_refused(
        &db,
        &[
            ("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B),
            (
                "USERMGMT_JWT_SECRET",
                "a configured access-token key, 32 bytes+",
            ),
        ],
    )
    .await;
    let expected = format!(
        "cannot open the private key of playback signing key \"{}\"",
        issued.kid
    );
    assert!(exit.stderr.contains(&expected), "{}", exit.stderr);
    let _ = std::fs::remove_file(log_path(&db, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_that_is_not_32_bytes_is_refused_without_being_shown() {
    let db = TestDb::new().await;
    let too_short = "c2hvcnQga2V5LCBub3QgMzIgYnl0ZXM=";
    let not_hex = "zz".repeat(32);
    for (variable, value) in [
        ("USERMGMT_KEY_ENCRYPTION_KEY", too_short),
        ("USERMGMT_KEY_ENCRYPTION_KEY", not_hex.as_str()),
        ("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS", too_short),
    ] {
        let exit = serve_refused(&db, &[(variable, value)]).await;
        assert!(
            exit.stderr.contains(variable) && exit.stderr.contains("must be exactly 32 bytes"),
            "{}",
            exit.stderr
        );
        assert!(!exit.stderr.contains(value), "the bad KEK is in the output");
    }
    let exit = run(
        &db,
        &["keys", "rewrap"],
        &[("USERMGMT_KEY_ENCRYPTION_KEY", too_short)],
    )
    .await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        !exit.stderr.contains(too_short),
        "the bad KEK is in the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_from_none_to_a_kek_and_on_to_the_next_keeps_every_token_verifying() {
    let db = TestDb::new().await;
    let (a, b) = (kek_id(KEK_A), kek_id(KEK_B));

    // No KEK: stored plain.
    let server = replica(&db, "none", &[]).await;
    let channel = crate::support::channel(server.addr).await;
    let admin = secure_admin(&db, &channel, "Acme").await;
    let plain_token = issue(&admin, for_streams(&["live"])).await.expect("issue");
    drop(server);

    // From none to A.
    let done = rewrap(&db, &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A)]).await;
    assert_eq!(
        done,
        serde_json::json!({"key_encryption_key": a, "sealed": 2, "unchanged": 0})
    );
    assert!(
        keyring(KEK_A)
            .open(
                Purpose::ServiceSecret,
                JWT_KEY_NAME,
                &stored_jwt_key(&db).await
            )
            .is_ok()
    );

    // A rolling rotation: replicas seal with B and still open A's, then
    // with B's first key a new playback key is sealed with B.
    let server = replica(
        &db,
        "b-and-a",
        &[
            ("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B),
            ("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS", KEK_A),
        ],
    )
    .await;
    let channel = crate::support::channel(server.addr).await;
    let admin = Session {
        channel: channel.clone(),
        token: admin.token,
    };
    admin
        .who_am_i()
        .await
        .expect("an access token from before still works");
    assert!(valid(&channel, &plain_token.token).await);
    let a_token = issue(&admin, for_streams(&["live"])).await.expect("issue");
    PlaybackTokenServiceClient::new(channel.clone())
        .rotate_signing_key(admin.req(proto::RotateSigningKeyRequest {
            algorithm: proto::SigningAlgorithm::Rs256 as i32,
            ..Default::default()
        }))
        .await
        .expect("rotate");
    let b_token = issue(&admin, for_streams(&["live"])).await.expect("issue");
    drop(server);

    // A replica still on A alone cannot start now; rewrap moves the rest.
    let exit = serve_refused(&db, &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A)]).await;
    assert!(exit.stderr.contains(&b), "{}", exit.stderr);
    let done = rewrap(
        &db,
        &[
            ("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B),
            ("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS", KEK_A),
        ],
    )
    .await;
    assert_eq!(
        done,
        serde_json::json!({"key_encryption_key": b, "sealed": 2, "unchanged": 1})
    );

    // B alone opens everything: every token issued before verifies.
    let server = replica(&db, "b", &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B)]).await;
    let channel = crate::support::channel(server.addr).await;
    let admin = Session {
        channel: channel.clone(),
        token: admin.token,
    };
    admin
        .who_am_i()
        .await
        .expect("the access token still works");
    for token in [&plain_token, &a_token, &b_token] {
        assert!(valid(&channel, &token.token).await, "{}", token.kid);
    }
    issue(&admin, for_streams(&["live"]))
        .await
        .expect("issue with B alone");
    drop(server);

    // Again: nothing to do. Without the previous key: refused, unchanged.
    let done = rewrap(&db, &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B)]).await;
    assert_eq!(
        done,
        serde_json::json!({"key_encryption_key": b, "sealed": 0, "unchanged": 3})
    );
    let before = stored_jwt_key(&db).await;
    let exit = run(
        &db,
        &["keys", "rewrap"],
        &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_C)],
    )
    .await;
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains(&format!(
            "it is sealed with key-encryption key {b}, which is not configured"
        )),
        "{}",
        exit.stderr
    );
    assert_eq!(
        stored_jwt_key(&db).await,
        before,
        "a failed rewrap changed rows"
    );
    for what in ["none", "b-and-a", "b"] {
        let _ = std::fs::remove_file(log_path(&db, what));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_value_copied_to_another_row_does_not_open() {
    let server = TestServer::start_with(&["--key-encryption-key", KEK_A]).await;
    let channel = server.channel().await;
    let first = secure_admin(&server.db, &channel, "First").await;
    let second = secure_admin(&server.db, &channel, "Second").await;
    let first_key = issue(&first, for_streams(&["live"])).await.expect("issue");
    let second_key = issue(&second, for_streams(&["live"])).await.expect("issue");

    // The second organisation's key row gets the first's sealed private key:
    // signing with it must fail rather than sign under the wrong kid.
    let client = server.db.client().await;
    client
        .execute(
            "UPDATE playback_signing_keys SET private_key = \
             (SELECT private_key FROM playback_signing_keys WHERE kid = $1) WHERE kid = $2",
            &[&first_key.kid, &second_key.kid],
        )
        .await
        .expect("copy the sealed key");
    let copied = issue(&second, for_streams(&["live"])).await;
    assert_status(copied, Code::Internal, None);
    issue(&first, for_streams(&["live"]))
        .await
        .expect("the first organisation still issues");

    // The access-token key copied under another name: a server refuses to
    // start, naming the row.
    client
        .execute(
            "INSERT INTO service_secrets (name, value) \
             SELECT 'copied', value FROM service_secrets WHERE name = $1",
            &[&JWT_KEY_NAME],
        )
        .await
        .expect("copy the sealed access-token key");
    let exit = serve_refused(&server.db, &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A)]).await;
    let expected = format!(
        "cannot open the service secret \"copied\" (service_secrets): it does not open with \
         key-encryption key {}",
        kek_id(KEK_A)
    );
    assert!(exit.stderr.contains(&expected), "{}", exit.stderr);
}

/// Issues tokens (and, with `rotate`, rotates the key first each time) until
/// `stop` is set, at least `at_least` of them; every call must succeed.
async fn issue_until(
    admin: Session,
    rotate: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    at_least: usize,
) -> Vec<String> {
    let mut tokens = Vec::new();
    while tokens.len() < at_least || !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if rotate {
            PlaybackTokenServiceClient::new(admin.channel.clone())
                .rotate_signing_key(admin.req(proto::RotateSigningKeyRequest {
                    algorithm: proto::SigningAlgorithm::Eddsa as i32,
                    ..Default::default()
                }))
                .await
                .expect("rotate during the rewrap");
        }
        let issued = issue(&admin, for_streams(&["live"]))
            .await
            .expect("issue during the rewrap");
        tokens.push(issued.token);
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_while_a_replica_issues_and_rotates_loses_nothing() {
    let db = TestDb::new().await;
    let server = replica(&db, "a", &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_A)]).await;
    let channel = crate::support::channel(server.addr).await;
    let steady = secure_admin(&db, &channel, "Steady").await;
    let rotating = secure_admin(&db, &channel, "Rotating").await;
    let before = issue(&steady, for_streams(&["live"])).await.expect("issue");
    drop(server);

    // Step 2 of the rotation: a replica seals with B and opens A, and keeps
    // issuing and rotating while the rewrap runs.
    let both = [
        ("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B),
        ("USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS", KEK_A),
    ];
    let server = replica(&db, "b-and-a", &both).await;
    let channel = crate::support::channel(server.addr).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on = |admin: &Session| Session {
        channel: channel.clone(),
        token: admin.token.clone(),
    };
    let steady_calls = tokio::spawn(issue_until(on(&steady), false, stop.clone(), 5));
    let rotating_calls = tokio::spawn(issue_until(on(&rotating), true, stop.clone(), 3));
    let done = rewrap(&db, &both).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut tokens = steady_calls.await.expect("steady issuer");
    tokens.extend(rotating_calls.await.expect("rotating issuer"));
    tokens.push(before.token);
    assert!(done["sealed"].as_u64() >= Some(2), "{done}");
    drop(server);

    // B alone opens everything, and every token verifies.
    let server = replica(&db, "b", &[("USERMGMT_KEY_ENCRYPTION_KEY", KEK_B)]).await;
    let channel = crate::support::channel(server.addr).await;
    for token in &tokens {
        assert!(valid(&channel, token).await, "a token stopped verifying");
    }
    let rotating = Session {
        channel: channel.clone(),
        token: rotating.token,
    };
    issue(&rotating, for_streams(&["live"]))
        .await
        .expect("issue with B alone");
    drop(server);
    for what in ["a", "b-and-a", "b"] {
        let _ = std::fs::remove_file(log_path(&db, what));
    }
}
