//! Shared helpers of the integration tests.

pub mod db;
pub mod server;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;
use uuid::Uuid;

pub use db::TestDb;
pub use server::{Replica, TestServer, channel};

pub const ADMIN_PASSWORD: &str = "admin password 1";
pub const PASSWORD: &str = "user password 1";

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    with_header(message, "authorization", &format!("Bearer {token}"))
}

pub fn with_header<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = value.parse().expect("header value");
    request.metadata_mut().insert(name, value);
    request
}

/// An organisation with its first nanoAdmin, created as `bootstrap` does.
pub struct Org {
    pub id: Uuid,
    pub admin_id: Uuid,
    pub admin_email: String,
}

pub async fn create_org(db: &TestDb, name: &str) -> Org {
    let store = usermgmt::store::Store::new(
        usermgmt::store::pool::build_pool(
            &db.url,
            &usermgmt::store::pool::PoolSettings {
                max_size: 1,
                wait_timeout: std::time::Duration::from_secs(5),
                connect_timeout: std::time::Duration::from_secs(5),
            },
        )
        .expect("pool"),
    );
    let admin_email = format!("admin@{}.example.com", name.to_lowercase());
    let email = usermgmt::domain::email::Email::parse("email", &admin_email).expect("email");
    let admin = store
        .create_organisation_with_admin(name, &email, &hash(ADMIN_PASSWORD).await)
        .await
        .expect("create organisation");
    Org {
        id: admin.organisation_id,
        admin_id: admin.id,
        admin_email,
    }
}

/// Inserts a user straight into the database; returns its id.
pub async fn insert_user(db: &TestDb, org: Uuid, email: &str, role: &str) -> Uuid {
    let id = Uuid::now_v7();
    db.client()
        .await
        .execute(
            "INSERT INTO users (id, organisation_id, email, role, token_key, password_hash) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &org,
                &email,
                &role,
                &Uuid::new_v4(),
                &hash(PASSWORD).await,
            ],
        )
        .await
        .expect("insert user");
    id
}

/// An argon2id hash of `password`, cached: tests reuse a few passwords.
pub async fn hash(password: &str) -> String {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    if let Some(hash) = CACHE
        .lock()
        .expect("cache")
        .get_or_insert_with(HashMap::new)
        .get(password)
    {
        return hash.clone();
    }
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    let hash = passwords.hash(password).await.expect("hash");
    CACHE
        .lock()
        .expect("cache")
        .get_or_insert_with(HashMap::new)
        .insert(password.to_owned(), hash.clone());
    hash
}

/// Logs in; returns the access token.
pub async fn login(channel: &tonic::transport::Channel, email: &str, password: &str) -> String {
    AuthServiceClient::new(channel.clone())
        .login(proto::LoginRequest {
            email: email.into(),
            password: password.into(),
            organisation_id: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("login of {email} failed: {status:?}"))
        .into_inner()
        .access_token
}

/// Asserts the code and, where given, the `ErrorInfo` reason of a failure.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: Option<&str>,
) -> Status {
    let status = match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{status:?}");
    if let Some(reason) = reason {
        let info = status.get_details_error_info();
        assert_eq!(
            info.as_ref().map(|i| i.reason.as_str()),
            Some(reason),
            "{status:?}"
        );
    }
    status
}

/// The field names of a `google.rpc.BadRequest` detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
