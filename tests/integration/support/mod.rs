//! Shared helpers of the integration tests.

pub mod contract;
pub mod db;
pub mod dump;
pub mod fixture;
pub mod lock;
pub mod pg;
pub mod proxy;
pub mod server;
pub mod smtp;
pub mod two_step;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use usermgmt::proto;
use usermgmt::proto::auth_service_client::AuthServiceClient;
use uuid::Uuid;

pub use db::TestDb;
pub use fixture::{OneServer, TwoReplicas};
pub use server::{Replica, TestServer, channel, channel_from, free_port};
pub use two_step::{Asked, Caller, Done, TwoStep};

/// A small deterministic generator, so that a failure can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `bound` (at least 1).
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound.max(1)
    }
}

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
    pub api_key: String,
}

pub fn store(db: &TestDb) -> usermgmt::store::Store {
    usermgmt::store::Store::new(
        usermgmt::store::pool::build_pool(
            &db.url,
            &usermgmt::store::pool::PoolSettings {
                wait_timeout: std::time::Duration::from_secs(5),
                connect_timeout: std::time::Duration::from_secs(5),
                ..usermgmt::store::pool::PoolSettings::of_size(1)
            },
        )
        .expect("pool"),
    )
}

pub async fn create_org(db: &TestDb, name: &str) -> Org {
    let admin_email = format!("admin@{}.example.com", name.to_lowercase());
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .expect("passwords");
    let created = usermgmt::app::provisioning::bootstrap(
        &store(db),
        &passwords,
        name,
        &admin_email,
        ADMIN_PASSWORD,
    )
    .await
    .expect("create organisation");
    Org {
        id: created.organisation_id,
        admin_id: created.user_id,
        admin_email,
        api_key: created.api_key,
    }
}

/// Registers an internal service; returns its key.
pub async fn register_service(db: &TestDb, name: &str) -> String {
    usermgmt::app::provisioning::register_service(&store(db), name)
        .await
        .expect("register service")
}

/// Creates a user through the API, as the organisation's API key does
/// (CreateUser, password `PASSWORD`); returns its id.
pub async fn add_user(
    channel: &tonic::transport::Channel,
    org: &Org,
    email: &str,
    role: proto::Role,
) -> Uuid {
    let request = with_header(
        proto::CreateUserRequest {
            email: email.into(),
            role: role as i32,
            password: PASSWORD.into(),
        },
        "x-bintu-apikey",
        &org.api_key,
    );
    let user = proto::user_service_client::UserServiceClient::new(channel.clone())
        .create_user(request)
        .await
        .unwrap_or_else(|status| panic!("create {email}: {status:?}"))
        .into_inner()
        .user
        .expect("the created user");
    user.id.parse().expect("a user id")
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

/// The user agent every sign-in of the tests presents.
pub const USER_AGENT: &str = "session-test/1.0";

/// Signs in (Login, with `user-agent: USER_AGENT`); the whole answer. A
/// login always starts a session: its refresh token and id are there.
pub async fn sign_in(
    channel: &tonic::transport::Channel,
    email: &str,
    password: &str,
) -> proto::LoginResponse {
    let request = with_header(
        proto::LoginRequest {
            email: email.into(),
            password: password.into(),
            organisation_id: String::new(),
        },
        "user-agent",
        USER_AGENT,
    );
    let response = AuthServiceClient::new(channel.clone())
        .login(request)
        .await
        .unwrap_or_else(|status| panic!("login of {email} failed: {status:?}"))
        .into_inner();
    assert!(response.refresh_token.starts_with("umr_"));
    assert!(response.refresh_expires_at.is_some());
    assert!(!response.session_id.is_empty());
    response
}

/// Signs in; returns the access token.
pub async fn login(channel: &tonic::transport::Channel, email: &str, password: &str) -> String {
    sign_in(channel, email, password).await.access_token
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

/// A failure's stable content, for a snapshot: its code, the `ErrorInfo`
/// reason, domain and metadata keys (not their values), the `BadRequest`
/// field violations (by field) and the `ResourceInfo` type; never the
/// message, ids or times.
pub fn error_summary<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    use std::fmt::Write as _;
    let status = match result {
        Ok(value) => panic!("expected a failure, got OK: {value:?}"),
        Err(status) => status,
    };
    let mut out = format!("code: {:?}\n", status.code());
    if let Some(info) = status.get_details_error_info() {
        let mut keys: Vec<_> = info.metadata.keys().cloned().collect();
        keys.sort();
        let _ = writeln!(out, "reason: {}", info.reason);
        let _ = writeln!(out, "domain: {}", info.domain);
        let _ = writeln!(out, "metadata keys: {keys:?}");
    }
    if let Some(bad) = status.get_details_bad_request() {
        let mut violations = bad.field_violations;
        violations.sort_by(|a, b| a.field.cmp(&b.field));
        out.push_str("field violations:\n");
        for violation in violations {
            let _ = writeln!(out, "  {}: {}", violation.field, violation.description);
        }
    }
    if let Some(resource) = status.get_details_resource_info() {
        let _ = writeln!(out, "resource type: {}", resource.resource_type);
    }
    out
}

/// The field names of a `google.rpc.BadRequest` detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A signed-in caller on one server.
#[derive(Clone)]
pub struct Session {
    pub channel: tonic::transport::Channel,
    pub token: String,
}

impl Session {
    pub async fn login(channel: &tonic::transport::Channel, email: &str, password: &str) -> Self {
        Session {
            channel: channel.clone(),
            token: login(channel, email, password).await,
        }
    }

    pub fn users(
        &self,
    ) -> proto::user_service_client::UserServiceClient<tonic::transport::Channel> {
        proto::user_service_client::UserServiceClient::new(self.channel.clone())
    }

    pub fn req<T>(&self, message: T) -> Request<T> {
        authed(message, &self.token)
    }

    pub async fn create_user(&self, email: &str, role: proto::Role) -> Result<proto::User, Status> {
        let request = proto::CreateUserRequest {
            email: email.into(),
            role: role as i32,
            password: PASSWORD.into(),
        };
        let response = self.users().create_user(self.req(request)).await?;
        Ok(response.into_inner().user.expect("user"))
    }

    pub async fn set_role(
        &self,
        user_id: &str,
        role: proto::Role,
        etag: &str,
    ) -> Result<proto::UpdateUserRoleResponse, Status> {
        let request = proto::UpdateUserRoleRequest {
            user_id: user_id.into(),
            role: role as i32,
            etag: etag.into(),
        };
        Ok(self
            .users()
            .update_user_role(self.req(request))
            .await?
            .into_inner())
    }

    /// This session as a caller.
    pub fn caller(&self) -> Caller {
        Caller::Token(self.token.clone())
    }

    /// The first step of a double-confirmed action: the confirmation.
    pub async fn ask(&self, action: &TwoStep) -> Result<Asked, Status> {
        two_step::ask(&self.channel, &self.caller(), action).await
    }

    /// The second step of a double-confirmed action.
    pub async fn confirm(&self, action: &TwoStep, token: &str) -> Result<Done, Status> {
        two_step::confirm(&self.channel, &self.caller(), action, token).await
    }

    /// The first step of DeleteUser: the confirmation.
    pub async fn ask_delete(&self, user_id: &str) -> Result<Asked, Status> {
        self.ask(&TwoStep::DeleteUser(user_id.into())).await
    }

    /// The second step of DeleteUser.
    pub async fn confirm_delete(&self, user_id: &str, token: &str) -> Result<proto::User, Status> {
        let action = TwoStep::DeleteUser(user_id.into());
        Ok(self.confirm(&action, token).await?.user())
    }

    /// The first step of RenewTokenKey: the confirmation.
    pub async fn ask_renew(&self, user_id: &str) -> Result<Asked, Status> {
        self.ask(&TwoStep::RenewTokenKey(user_id.into())).await
    }

    /// The second step of RenewTokenKey.
    pub async fn confirm_renew(&self, user_id: &str, token: &str) -> Result<proto::User, Status> {
        let action = TwoStep::RenewTokenKey(user_id.into());
        Ok(self.confirm(&action, token).await?.user())
    }

    /// A cheap call that needs a valid token and users.read.
    pub async fn who_am_i(&self) -> Result<proto::WhoAmIResponse, Status> {
        let mut auth = AuthServiceClient::new(self.channel.clone());
        Ok(auth
            .who_am_i(self.req(proto::WhoAmIRequest {}))
            .await?
            .into_inner())
    }

    pub async fn audit_events(
        &self,
        request: proto::ListAuditEventsRequest,
    ) -> Result<Vec<proto::AuditEvent>, Status> {
        let mut audit = proto::audit_service_client::AuditServiceClient::new(self.channel.clone());
        let mut events = Vec::new();
        let mut request = request;
        loop {
            let page = audit
                .list_audit_events(self.req(request.clone()))
                .await?
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            request.page_token = page.next_page_token;
        }
    }
}

/// Whether an audit event is one of a call under test: not a sign-in's
/// (`login.*` and the `session.open` of each) nor the operator's (the
/// bootstrap's). As [`audit_count`] counts.
pub fn is_call_event(event: &proto::AuditEvent) -> bool {
    !event.action.starts_with("login.")
        && event.action != "session.open"
        && event.actor != "operator"
}

/// How many audit events the organisation has, straight from the database:
/// those of the calls under test, not the sign-ins' (`login.*` and the
/// `session.open` of each) nor the operator's (the bootstrap's).
pub async fn audit_count(db: &TestDb, org: Uuid) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM audit_events WHERE organisation_id = $1 \
             AND action NOT LIKE 'login.%' AND action <> 'session.open' \
             AND actor <> 'operator'",
            &[&org],
        )
        .await
        .expect("count audit events")
        .get(0)
}

/// Creates a personal API token of the signed-in user, valid for a day.
pub async fn create_api_token(
    channel: &tonic::transport::Channel,
    access_token: &str,
    permissions: &[&str],
) -> Result<proto::CreateApiTokenResponse, Status> {
    let expires_at = prost_types::Timestamp {
        seconds: now_seconds() + 86_400,
        nanos: 0,
    };
    proto::api_token_service_client::ApiTokenServiceClient::new(channel.clone())
        .create_api_token(authed(
            proto::CreateApiTokenRequest {
                name: "test token".into(),
                expires_at: Some(expires_at),
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Waits (at most 30 s) until the mail outbox is empty: every mail queued
/// so far sent or given up, every reset request done.
pub async fn wait_until_outbox_empty(db: &TestDb) {
    let client = db.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM mail_outbox", &[])
            .await
            .expect("count the mail outbox")
            .get(0);
        if rows == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mail outbox still holds {rows} rows after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A password reset token of the organisation's admin, stored as a mailed
/// link's would be (for tests whose server sends no mail).
pub async fn reset_token_of(db: &TestDb, org: &Org) -> String {
    let token = format!("ump_{}", uuid::Uuid::new_v4().simple());
    db.client()
        .await
        .execute(
            "INSERT INTO password_resets (id, organisation_id, user_id, token_hash, expires_at) \
             VALUES ($1, $2, $3, sha256(convert_to($4, 'UTF8')), now() + interval '30 minutes')",
            &[&uuid::Uuid::now_v7(), &org.id, &org.admin_id, &token],
        )
        .await
        .expect("a reset, as its mail would carry it");
    token
}

/// An `UpdateOrganisation` request that renames the caller's organisation to
/// `name` (the mask naming `name` only).
pub fn rename_organisation(name: &str) -> usermgmt::proto::UpdateOrganisationRequest {
    usermgmt::proto::UpdateOrganisationRequest {
        organisation: Some(usermgmt::proto::Organisation {
            name: name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
    }
}
