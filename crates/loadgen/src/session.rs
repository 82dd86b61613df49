//! The signed-in caller, and what the scenarios need prepared before they
//! are measured (tokens, a target user, a deep page, a playback token).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Request, Status};
use usermgmt_proto as proto;
use usermgmt_proto::api_token_service_client::ApiTokenServiceClient;
use usermgmt_proto::auth_service_client::AuthServiceClient;
use usermgmt_proto::metadata::{API_KEY as API_KEY_HEADER, BEARER as BEARER_HEADER};
use usermgmt_proto::playback_token_service_client::PlaybackTokenServiceClient;
use usermgmt_proto::user_service_client::UserServiceClient;

use crate::cli::{Args, WriteCredential};
use crate::connect::error_chain;
use crate::organisations::{self, LoginUser};
use crate::scenarios::{DEEP_PAGE, LIST_PAGE_SIZE, Scenario};
use crate::{BoxError, tokens};

/// What a signed-in caller needs to build its requests.
#[derive(Debug)]
pub struct Session {
    /// The header and value the read scenarios present the token in.
    pub read_credential: (&'static str, AsciiMetadataValue),
    pub access_token: String,
    pub user_id: String,
    pub service_key: Option<AsciiMetadataValue>,
    pub api_key: Option<String>,
    pub playback_token: Option<String>,
    pub deep_page_token: Option<String>,
    pub email: String,
    pub password: String,
    pub organisation_id: String,
    /// The credential of the write scenarios.
    pub write_credential: Option<(&'static str, AsciiMetadataValue)>,
    /// The user `update_user_role` changes.
    pub target_user_id: Option<String>,
    /// How many role changes were sent (the next one's parity picks the role).
    pub role_flips: AtomicU64,
    /// How many invites were sent, for fresh emails.
    pub invite_sequence: AtomicU64,
    /// Unique to this loadgen run, so that its emails are fresh.
    pub nonce: String,
    /// `authorization` values of `--users` users, and the next one's index.
    pub user_tokens: Vec<AsciiMetadataValue>,
    pub next_user: AtomicU64,
    /// What `list_users_prefix` searches by.
    pub email_prefix: String,
    /// A personal API token of the signed-in user, and its header value.
    pub api_token: Option<String>,
    pub api_token_credential: Option<AsciiMetadataValue>,
    /// The organisation the signed-in user belongs to.
    pub signed_in_organisation_id: String,
    /// The `--token-header` values of a user of each of `--organisations`
    /// organisations (`issue_playback_orgs`).
    pub organisation_credentials: Vec<AsciiMetadataValue>,
    /// The users `login` signs in as: `--login-users` of the signed-in
    /// user's organisation.
    pub login_users: Vec<LoginUser>,
    /// The users `login_orgs` signs in as: `--login-users` of each of
    /// `--organisations` organisations, organisation by organisation in turn.
    pub login_users_orgs: Vec<LoginUser>,
    /// The password of every login user.
    pub login_password: String,
    /// The next call's turn in `issue_playback_orgs`, `login` and
    /// `login_orgs` (which never run at once).
    pub turn: AtomicU64,
}

impl Session {
    /// A request with the write scenarios' credential.
    pub fn writer<T>(&self, message: T) -> Result<Request<T>, Status> {
        let (header, value) = self.write_credential.clone().ok_or_else(|| {
            Status::invalid_argument("--write-credential api-key needs --api-key")
        })?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(header, value);
        Ok(request)
    }

    pub fn as_service<T>(&self, message: T) -> Result<Request<T>, Status> {
        let key = self.service_key.clone().ok_or_else(|| {
            Status::invalid_argument("the authorize scenarios need --service-key")
        })?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("x-usermgmt-service-key", key);
        Ok(request)
    }

    /// A request as the next of the `--users` users.
    pub fn as_next_user<T>(&self, message: T) -> Result<Request<T>, Status> {
        let count = self.user_tokens.len() as u64;
        if count == 0 {
            return Err(Status::invalid_argument("who_am_i_users needs --users"));
        }
        // The first pass (the warm-up) takes every user in turn; after it, a
        // user drawn at random: going round in a fixed order would be the
        // worst case of every cache that cannot hold them all.
        let call = self.next_user.fetch_add(1, Ordering::Relaxed);
        let next = if call < count {
            call
        } else {
            splitmix64(call) % count
        };
        let mut request = Request::new(message);
        let token = self.user_tokens[usize::try_from(next).unwrap_or_default()].clone();
        request.metadata_mut().insert(self.read_credential.0, token);
        Ok(request)
    }

    /// A request with the signed-in user's personal API token.
    pub fn with_api_token<T>(&self, message: T) -> Result<Request<T>, Status> {
        let value = self
            .api_token_credential
            .clone()
            .ok_or_else(|| Status::internal("no API token was created at start"))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(self.read_credential.0, value);
        Ok(request)
    }

    /// A request as the user of the next of the `--organisations`
    /// organisations, in turn.
    pub fn as_next_organisation<T>(&self, message: T) -> Result<Request<T>, Status> {
        let credential = self
            .next_of(&self.organisation_credentials)
            .ok_or_else(|| Status::internal("no organisations were prepared"))?;
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(self.read_credential.0, credential.clone());
        Ok(request)
    }

    /// The next item of `items`, in turn (`None` if there are none).
    pub fn next_of<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let count = u64::try_from(items.len()).ok().filter(|&n| n > 0)?;
        items.get(usize::try_from(turn % count).ok()?)
    }

    pub fn authorized<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(self.read_credential.0, self.read_credential.1.clone());
        request
    }
}

pub async fn login(endpoint: &Endpoint, args: &Args) -> Result<Session, BoxError> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", args.addr, error_chain(&e)))?;
    let response = AuthServiceClient::new(channel)
        .login(proto::LoginRequest {
            email: args.email.clone(),
            password: args.password.clone(),
            organisation_id: args.organisation_id.clone(),
        })
        .await
        .map_err(|status| {
            format!(
                "login as {} failed: {:?}: {}",
                args.email,
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    let bearer: AsciiMetadataValue =
        MetadataValue::try_from(format!("Bearer {}", response.access_token))
            .map_err(|e| format!("the access token is not a valid header value: {e}"))?;
    let service_key = args
        .service_key
        .as_deref()
        .map(MetadataValue::try_from)
        .transpose()
        .map_err(|e| format!("the service key is not a valid header value: {e}"))?;
    let write_credential = match args.write_credential {
        WriteCredential::Token => Some((BEARER_HEADER, bearer.clone())),
        WriteCredential::ApiKey => args
            .api_key
            .as_deref()
            .map(MetadataValue::try_from)
            .transpose()
            .map_err(|e| format!("the API key is not a valid header value: {e}"))?
            .map(|key| (API_KEY_HEADER, key)),
    };
    let nonce = format!(
        "{:x}-{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let read_credential = (
        args.token_header.name(),
        args.token_header.value(&response.access_token)?,
    );
    let mut session = Session {
        read_credential,
        access_token: response.access_token,
        user_id: response.user_id,
        service_key,
        api_key: args.api_key.clone(),
        playback_token: None,
        deep_page_token: None,
        email: args.email.clone(),
        password: args.password.clone(),
        organisation_id: args.organisation_id.clone(),
        write_credential,
        target_user_id: None,
        role_flips: AtomicU64::new(0),
        invite_sequence: AtomicU64::new(0),
        nonce,
        user_tokens: Vec::new(),
        next_user: AtomicU64::new(0),
        email_prefix: args.email_prefix.clone(),
        api_token: None,
        api_token_credential: None,
        signed_in_organisation_id: response.organisation_id,
        organisation_credentials: Vec::new(),
        login_users: Vec::new(),
        login_users_orgs: Vec::new(),
        login_password: args.login_password.clone(),
        turn: AtomicU64::new(0),
    };
    if args
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::GetUserApiToken | Scenario::AuthorizeApiToken))
    {
        let token = create_api_token(endpoint, &session).await?;
        session.api_token_credential = Some(args.token_header.value(&token)?);
        session.api_token = Some(token);
    }
    if args.scenarios.contains(&Scenario::WhoAmIUsers) {
        session.user_tokens = user_tokens(args).await?;
    }
    if args.scenarios.iter().any(|s| s.writes()) && session.write_credential.is_none() {
        return Err("--write-credential api-key needs --api-key".into());
    }
    if args.scenarios.contains(&Scenario::UpdateUserRole) {
        session.target_user_id = Some(role_target(endpoint, args, &session).await?);
    }
    if args.scenarios.contains(&Scenario::ListUsersDeep) {
        session.deep_page_token = Some(deep_page_token(endpoint, &session).await?);
    }
    if args.scenarios.contains(&Scenario::VerifyPlayback) {
        session.playback_token = Some(issue_playback_token(endpoint, &session).await?);
    }
    organisations::prepare(endpoint, args, &mut session).await?;
    Ok(session)
}

/// A well-mixed 64-bit function of `x` (SplitMix64's finaliser).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `authorization` values of `--users` users, from `usermgmt bench-tokens`.
pub async fn user_tokens(args: &Args) -> Result<Vec<AsciiMetadataValue>, BoxError> {
    if args.users == 0 {
        return Err("who_am_i_users needs --users N".into());
    }
    let source = token_source(args, args.users_organisation_id);
    let started = Instant::now();
    let tokens = tokens::tokens_of_users(&source, args.users).await?;
    eprintln!(
        "loadgen: tokens of {} users from usermgmt bench-tokens in {} ms",
        tokens.len(),
        started.elapsed().as_millis()
    );
    tokens
        .iter()
        .map(|token| args.token_header.value(&token.access_token))
        .collect()
}

/// Where `usermgmt bench-tokens` is and what it needs to sign as the server
/// does: users of `organisation_id`, or of every organisation.
pub fn token_source(args: &Args, organisation_id: Option<uuid::Uuid>) -> tokens::TokenSource<'_> {
    tokens::TokenSource {
        usermgmt: args
            .usermgmt_bin
            .clone()
            .unwrap_or_else(tokens::default_usermgmt),
        database_url: &args.database_url,
        key_encryption_key: args.key_encryption_key.as_deref(),
        jwt_secret: args.jwt_secret.as_deref(),
        issuer: &args.token_issuer,
        audience: &args.token_audience,
        organisation_id,
    }
}

/// The id of the user `update_user_role` changes, which is then a nanoUser:
/// `--target-user-id` (checked), or a user created for it.
pub async fn role_target(
    endpoint: &Endpoint,
    args: &Args,
    session: &Session,
) -> Result<String, BoxError> {
    let mut users = UserServiceClient::new(endpoint.connect().await?);
    let user = match &args.target_user_id {
        Some(id) => {
            if *id == session.user_id {
                return Err(
                    "--target-user-id must not be the signed-in user: a role change \
                            renews the target's tokenKey"
                        .into(),
                );
            }
            users
                .get_user(session.authorized(proto::GetUserRequest {
                    user_id: id.clone(),
                }))
                .await
                .map_err(|s| format!("--target-user-id {id}: {:?}: {}", s.code(), s.message()))?
                .into_inner()
                .user
        }
        None => {
            let request = proto::CreateUserRequest {
                email: format!("loadgen-target-{}@example.com", session.nonce),
                role: proto::Role::NanoUser as i32,
                password: format!("loadgen target {}", session.nonce),
            };
            users
                .create_user(session.writer(request)?)
                .await
                .map_err(|s| {
                    format!(
                        "creating the update_user_role target failed: {:?}: {}",
                        s.code(),
                        s.message()
                    )
                })?
                .into_inner()
                .user
        }
    }
    .ok_or("the server answered no user")?;
    let role = user.role();
    if role == proto::Role::NanoReadOnly {
        // Start from nanoUser, as the alternation assumes.
        users
            .update_user_role(session.writer(proto::UpdateUserRoleRequest {
                user_id: user.id.clone(),
                role: proto::Role::NanoUser as i32,
                etag: String::new(),
            })?)
            .await?;
    } else if role != proto::Role::NanoUser {
        return Err(format!(
            "the update_user_role target {} is a {role:?}: give a nanoUser or nanoReadOnly",
            user.id
        )
        .into());
    }
    Ok(user.id)
}

/// A personal API token of the signed-in user, valid for a day.
pub async fn create_api_token(endpoint: &Endpoint, session: &Session) -> Result<String, BoxError> {
    let expires = SystemTime::now() + Duration::from_secs(86_400);
    let seconds = expires.duration_since(UNIX_EPOCH)?.as_secs();
    let request = proto::CreateApiTokenRequest {
        name: format!("loadgen {}", session.nonce),
        expires_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(seconds)?,
            nanos: 0,
        }),
        permissions: Vec::new(),
    };
    let created = ApiTokenServiceClient::new(endpoint.connect().await?)
        .create_api_token(session.authorized(request))
        .await?
        .into_inner();
    Ok(created.token)
}

/// The page token of page [`DEEP_PAGE`], found by walking the pages.
pub async fn deep_page_token(endpoint: &Endpoint, session: &Session) -> Result<String, BoxError> {
    let mut users = UserServiceClient::new(endpoint.connect().await?);
    let mut token = String::new();
    for page in 1..DEEP_PAGE {
        let request = proto::ListUsersRequest {
            page_size: LIST_PAGE_SIZE,
            page_token: token,
            ..Default::default()
        };
        token = users
            .list_users(session.authorized(request))
            .await?
            .into_inner()
            .next_page_token;
        if token.is_empty() {
            return Err(format!(
                "the organisation has only {page} pages of {LIST_PAGE_SIZE} users; \
                 list_users_deep needs {DEEP_PAGE} (seed users: `usermgmt seed`)"
            )
            .into());
        }
    }
    Ok(token)
}

/// An organisation-wide playback token for the `verify_playback` scenario.
pub async fn issue_playback_token(
    endpoint: &Endpoint,
    session: &Session,
) -> Result<String, BoxError> {
    let channel = endpoint.connect().await?;
    let request = proto::IssuePlaybackTokenRequest {
        scope: Some(proto::PlaybackScope {
            scope: Some(proto::playback_scope::Scope::OrganisationWide(true)),
        }),
        ..Default::default()
    };
    let response = PlaybackTokenServiceClient::new(channel)
        .issue_playback_token(session.authorized(request))
        .await
        .map_err(|status| {
            format!(
                "issuing a playback token failed (is the organisation secure?): {:?}: {}",
                status.code(),
                status.message()
            )
        })?;
    Ok(response.into_inner().token)
}
