//! `loadgen`: a bounded, loopback-only load generator for a running
//! `usermgmt serve`.
//!
//! It signs in once, then, for each in-flight level, measures every scenario
//! in turn against the same server: `grpc.health.v1.Health/Check` first (the
//! no-auth baseline), then the authenticated calls. Each measurement opens its
//! own connections, warms up, then records the latency of every call for a
//! fixed time. With `--rounds N` the whole sequence runs N times and each
//! scenario's rounds are pooled, so that a change in the shared machine's
//! speed during the run touches the baseline and the scenarios alike. It
//! prints req/s, p50 and p99 per scenario, and each scenario's ratio to the
//! baseline measured at the same in-flight level in the same run.
//!
//! The write scenarios (`update_user_role`, `invite_cycle`) change the
//! database and wait for every replica's cache to settle; run them at a small
//! in-flight level (e.g. `--in-flight 4`). With `--other-replicas`, loadgen
//! also waits for the other replicas of the same database to be SERVING
//! before it measures (the load still goes to `--addr` only).
//!
//! ```text
//! cargo build --release --bin usermgmt --bin loadgen
//! target/release/loadgen --addr http://127.0.0.1:50051 \
//!     --email admin@example.com --password '...'
//! ```
//!
//! Adding a scenario is one variant of [`Scenario`] and one arm of
//! [`Scenario::call`].

use std::collections::BTreeMap;
use std::error::Error;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use usermgmt_proto as proto;
use usermgmt_proto::api_token_service_client::ApiTokenServiceClient;
use usermgmt_proto::auth_service_client::AuthServiceClient;
use usermgmt_proto::metadata::{
    API_KEY as API_KEY_HEADER, BEARER as BEARER_HEADER, BINTU_TOKEN as BINTU_TOKEN_HEADER,
};
use usermgmt_proto::playback_token_service_client::PlaybackTokenServiceClient;
use usermgmt_proto::user_service_client::UserServiceClient;

type BoxError = Box<dyn Error + Send + Sync>;

mod tokens;

/// How long one call may take before it counts as an error; keeps every
/// measurement bounded in time even if the server stalls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Loopback load generator for usermgmt: req/s, p50 and p99 of each RPC, \
             as ratios to grpc.health.v1.Health/Check measured in the same run"
)]
struct Args {
    /// Server address. Loopback only (127.0.0.0/8, ::1 or localhost).
    #[arg(long, env = "LOADGEN_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,

    /// Email of the user to sign in as.
    #[arg(long, env = "LOADGEN_EMAIL")]
    email: String,

    /// Password of that user.
    #[arg(long, env = "LOADGEN_PASSWORD", hide_env_values = true)]
    password: String,

    /// Organisation to sign in to (only needed when the email and password
    /// belong to users of several organisations).
    #[arg(long, env = "LOADGEN_ORGANISATION_ID", default_value = "")]
    organisation_id: String,

    /// Measured seconds per scenario and in-flight level.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,

    /// Times to measure the whole sequence of scenarios, interleaved
    /// (health, a, b, health, a, b, …); each scenario's rounds are pooled.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,

    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    warmup_secs: u64,

    /// HTTP/2 connections per measurement (one tonic Channel each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,

    /// Requests in flight, comma-separated; one table per level.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,64",
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    in_flight: Vec<u32>,

    /// Scenarios, comma-separated. `health` (the baseline) always runs first.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "health,get_user,who_am_i"
    )]
    scenarios: Vec<Scenario>,

    /// Key of a registered service (`usermgmt service register`), for the
    /// `authorize_*` scenarios.
    #[arg(long, env = "LOADGEN_SERVICE_KEY", hide_env_values = true)]
    service_key: Option<String>,

    /// The organisation API key (from `usermgmt bootstrap`), for
    /// `authorize_api_key`.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Worker threads of the load generator's own runtime (default: one per
    /// core). On a small machine the load generator competes with the server.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Process ids of the server and of its other replicas, comma-separated,
    /// to report their CPU use (summed) and RSS (the largest) from Linux /proc.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,

    /// First wait until the server is SERVING, and say how long that took
    /// (start loadgen right after the server to measure its startup).
    #[arg(long)]
    wait_serving: bool,

    /// The other replicas of the same database, comma-separated (loopback
    /// only). No load goes to them; with --wait-serving, loadgen waits until
    /// each of them is SERVING too, so that every writer waits for their
    /// cache acknowledgements from the first measurement on.
    #[arg(long, value_delimiter = ',')]
    other_replicas: Vec<String>,

    /// The credential of the write scenarios: the signed-in user's access
    /// token or the organisation API key (`--api-key`). Either must hold
    /// `users.update_role` and `users.invite` (a nanoAdmin does).
    #[arg(long, value_enum, default_value = "token")]
    write_credential: WriteCredential,

    /// The user whose role `update_user_role` alternates between nanoUser
    /// and nanoReadOnly: not the signed-in user, and not a nanoAdmin. Unset:
    /// loadgen creates one (`UserService.CreateUser`) before measuring.
    #[arg(long)]
    target_user_id: Option<String>,

    /// Also print one JSON object per measurement on stdout.
    #[arg(long)]
    json: bool,

    /// How many users `who_am_i_users` spreads its calls over (each user
    /// once before measuring, then a user drawn at random for each call).
    /// Their tokens come from `usermgmt bench-tokens` (see --usermgmt-bin),
    /// run on `--database-url`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    users: u32,

    /// Mint tokens only for users of this organisation (default: the first
    /// `--users` users of every organisation, by id).
    #[arg(long)]
    users_organisation_id: Option<uuid::Uuid>,

    /// The `usermgmt` binary that issues the tokens of `--users`
    /// (`usermgmt bench-tokens`). Default: the one beside loadgen's own
    /// executable, or else the one on the PATH.
    #[arg(long, env = "LOADGEN_USERMGMT_BIN")]
    usermgmt_bin: Option<std::path::PathBuf>,

    /// The server's database, for `--users`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/usermgmt"
    )]
    database_url: String,

    /// The server's key-encryption key, when its secrets are sealed.
    #[arg(long, env = "USERMGMT_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    key_encryption_key: Option<String>,

    /// The server's access-token key, when it is configured rather than stored.
    #[arg(long, env = "USERMGMT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,

    /// The header the read scenarios present the access token in:
    /// `authorization` (`Bearer …`; HTTP/2 never adds it to its header
    /// table, so every call carries and decodes the whole token) or
    /// `x-bintu-token` (HPACK indexes it: after a connection's first call,
    /// a call carries an index of a byte or two).
    #[arg(long, value_enum, default_value = "authorization")]
    token_header: TokenHeader,

    /// The email prefix `list_users_prefix` searches by.
    #[arg(long, default_value = "seed-")]
    email_prefix: String,

    /// The server's metrics listener (`usermgmt serve --metrics-listen`),
    /// loopback only: the users cache's hit rate of each measurement is
    /// read from it.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,

    /// The server's token issuer and audience.
    #[arg(long, env = "USERMGMT_TOKEN_ISSUER", default_value = "usermgmt")]
    token_issuer: String,
    #[arg(long, env = "USERMGMT_TOKEN_AUDIENCE", default_value = "usermgmt")]
    token_audience: String,
}

/// One kind of call to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Scenario {
    /// `grpc.health.v1.Health/Check` of the whole server: no credentials, no
    /// database; the baseline every other scenario is compared with.
    Health,
    /// `UserService/GetUser` of the signed-in user.
    GetUser,
    /// `AuthService/WhoAmI`.
    WhoAmI,
    /// `AuthService/WhoAmI`, each call as the next of `--users` users.
    WhoAmIUsers,
    /// `AuthService/Authorize` of the signed-in user's access token
    /// (needs `--service-key`).
    AuthorizeToken,
    /// `AuthService/Authorize` of the organisation API key (needs
    /// `--service-key` and `--api-key`).
    AuthorizeApiKey,
    /// `PlaybackTokenService/VerifyPlaybackToken` of a token issued at start
    /// (the signed-in user's organisation must be a secure organisation).
    VerifyPlayback,
    /// `AuthService/Authorize` (token) while 32 more tasks log in back to
    /// back (argon2id), which are not measured.
    AuthorizeDuringLogins,
    /// `UserService/ListUsers`, first page of 100.
    ListUsersFirst,
    /// `UserService/ListUsers`, page 1000 of 100 (its token is found once,
    /// before measuring, by walking the pages).
    ListUsersDeep,
    /// `UserService/ListUsers`, first page of 100 nanoUsers (role filter).
    ListUsersRole,
    /// `UserService/ListUsers`, first page of 100 users whose email starts
    /// with `--email-prefix`.
    ListUsersPrefix,
    /// `UserService/GetUser` of the signed-in user, with a personal API token
    /// it created at start (in the `--token-header` header).
    GetUserApiToken,
    /// `AuthService/Authorize` of that personal API token (needs
    /// `--service-key`).
    AuthorizeApiToken,
    /// `UserService/UpdateUserRole` of one target user (see
    /// `--target-user-id`), alternately to nanoReadOnly and to nanoUser. A
    /// write: it takes the organisation's row lock, renews the target's
    /// tokenKey and waits for every replica's cache to settle. A call that
    /// changes nothing (a concurrent call had set that role first) is counted
    /// apart, not as ok.
    UpdateUserRole,
    /// `UserService/CreateInvite` of a fresh email, then
    /// `UserService/RevokeInvite` of that invite: one iteration is both calls
    /// (each call's latency is reported too).
    InviteCycle,
}

/// Where the read scenarios put the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
enum TokenHeader {
    Authorization,
    XBintuToken,
}

impl TokenHeader {
    fn name(self) -> &'static str {
        match self {
            TokenHeader::Authorization => BEARER_HEADER,
            TokenHeader::XBintuToken => BINTU_TOKEN_HEADER,
        }
    }

    fn value(self, token: &str) -> Result<AsciiMetadataValue, BoxError> {
        let text = match self {
            TokenHeader::Authorization => format!("Bearer {token}"),
            TokenHeader::XBintuToken => token.to_owned(),
        };
        Ok(AsciiMetadataValue::try_from(text)?)
    }
}

/// Which credential the write scenarios present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
enum WriteCredential {
    /// The signed-in user's access token.
    Token,
    /// The organisation API key (`--api-key`).
    ApiKey,
}

/// What one successful call (or iteration) of a scenario was.
#[derive(Debug)]
enum Outcome {
    Done,
    /// A write that changed nothing; not counted as ok.
    Unchanged,
    /// Done; the latency of each of its calls, in nanoseconds, in the order
    /// of [`Scenario::parts`].
    Parts([u64; 2]),
}

/// How many logins run during `authorize_during_logins`.
const LOGIN_STORM: usize = 32;
/// The page `list_users_deep` measures, and the page size of the list scenarios.
const DEEP_PAGE: usize = 1000;
const LIST_PAGE_SIZE: i32 = 100;

impl Scenario {
    /// The calls of one iteration, where it makes more than one.
    fn parts(self) -> &'static [&'static str] {
        match self {
            Scenario::InviteCycle => &["create_invite", "revoke_invite"],
            _ => &[],
        }
    }

    fn writes(self) -> bool {
        matches!(self, Scenario::UpdateUserRole | Scenario::InviteCycle)
    }

    /// Sends one request (or one iteration's requests); `Ok` only for OK
    /// responses.
    async fn call(self, channel: &Channel, session: &Session) -> Result<Outcome, Status> {
        match self {
            Scenario::Health => {
                let response = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?
                    .into_inner();
                if response.status() != ServingStatus::Serving {
                    return Err(Status::unavailable(format!(
                        "health check answered {:?}",
                        response.status()
                    )));
                }
            }
            Scenario::GetUser => {
                UserServiceClient::new(channel.clone())
                    .get_user(session.authorized(proto::GetUserRequest {
                        user_id: session.user_id.clone(),
                    }))
                    .await?;
            }
            Scenario::WhoAmI => {
                AuthServiceClient::new(channel.clone())
                    .who_am_i(session.authorized(proto::WhoAmIRequest {}))
                    .await?;
            }
            Scenario::WhoAmIUsers => {
                AuthServiceClient::new(channel.clone())
                    .who_am_i(session.as_next_user(proto::WhoAmIRequest {})?)
                    .await?;
            }
            Scenario::GetUserApiToken => {
                UserServiceClient::new(channel.clone())
                    .get_user(session.with_api_token(proto::GetUserRequest {
                        user_id: session.user_id.clone(),
                    })?)
                    .await?;
            }
            Scenario::AuthorizeToken
            | Scenario::AuthorizeApiKey
            | Scenario::AuthorizeApiToken
            | Scenario::AuthorizeDuringLogins => {
                let kind = match self {
                    Scenario::AuthorizeApiKey => {
                        proto::credential::Kind::ApiKey(session.api_key.clone().unwrap_or_default())
                    }
                    Scenario::AuthorizeApiToken => proto::credential::Kind::AccessToken(
                        session.api_token.clone().unwrap_or_default(),
                    ),
                    _ => proto::credential::Kind::AccessToken(session.access_token.clone()),
                };
                let request = proto::AuthorizeRequest {
                    credential: Some(proto::Credential { kind: Some(kind) }),
                    permission: "streams.create".into(),
                    organisation_id: String::new(),
                };
                let answer = AuthServiceClient::new(channel.clone())
                    .authorize(session.as_service(request)?)
                    .await?
                    .into_inner();
                if !answer.allowed {
                    return Err(Status::permission_denied(answer.message));
                }
            }
            Scenario::ListUsersFirst
            | Scenario::ListUsersDeep
            | Scenario::ListUsersRole
            | Scenario::ListUsersPrefix => {
                let request = proto::ListUsersRequest {
                    page_size: LIST_PAGE_SIZE,
                    page_token: if self == Scenario::ListUsersDeep {
                        session.deep_page_token.clone().unwrap_or_default()
                    } else {
                        String::new()
                    },
                    role: if self == Scenario::ListUsersRole {
                        proto::Role::NanoUser as i32
                    } else {
                        proto::Role::Unspecified as i32
                    },
                    email_prefix: if self == Scenario::ListUsersPrefix {
                        session.email_prefix.clone()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                };
                UserServiceClient::new(channel.clone())
                    .list_users(session.authorized(request))
                    .await?;
            }
            Scenario::VerifyPlayback => {
                let request = proto::VerifyPlaybackTokenRequest {
                    token: session.playback_token.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let answer = PlaybackTokenServiceClient::new(channel.clone())
                    .verify_playback_token(request)
                    .await?
                    .into_inner();
                if !answer.valid {
                    return Err(Status::failed_precondition(
                        "the playback token did not verify",
                    ));
                }
            }
            Scenario::UpdateUserRole => {
                // The target starts as nanoUser: even flips demote it to
                // nanoReadOnly, odd ones promote it back.
                let flip = session.role_flips.fetch_add(1, Ordering::Relaxed);
                let role = if flip.is_multiple_of(2) {
                    proto::Role::NanoReadOnly
                } else {
                    proto::Role::NanoUser
                };
                let request = proto::UpdateUserRoleRequest {
                    user_id: session.target_user_id.clone().unwrap_or_default(),
                    role: role as i32,
                    etag: String::new(),
                };
                let answer = UserServiceClient::new(channel.clone())
                    .update_user_role(session.writer(request)?)
                    .await?
                    .into_inner();
                if !answer.changed {
                    return Ok(Outcome::Unchanged);
                }
            }
            Scenario::InviteCycle => {
                let mut users = UserServiceClient::new(channel.clone());
                let sequence = session.invite_sequence.fetch_add(1, Ordering::Relaxed);
                let request = proto::CreateInviteRequest {
                    email: format!("loadgen-{}-{sequence}@example.com", session.nonce),
                    role: proto::Role::NanoReadOnly as i32,
                    ttl: None,
                };
                let started = Instant::now();
                let invite = users
                    .create_invite(session.writer(request)?)
                    .await?
                    .into_inner()
                    .invite
                    .ok_or_else(|| Status::internal("CreateInvite answered no invite"))?;
                let created = Instant::now();
                users
                    .revoke_invite(session.writer(proto::RevokeInviteRequest {
                        invite_id: invite.id,
                    })?)
                    .await?;
                let revoked = Instant::now();
                return Ok(Outcome::Parts([
                    nanos(created.duration_since(started)),
                    nanos(revoked.duration_since(created)),
                ]));
            }
        }
        Ok(Outcome::Done)
    }

    fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_else(|| format!("{self:?}"))
    }
}

/// What a signed-in caller needs to build its requests.
#[derive(Debug)]
struct Session {
    /// The header and value the read scenarios present the token in.
    read_credential: (&'static str, AsciiMetadataValue),
    access_token: String,
    user_id: String,
    service_key: Option<AsciiMetadataValue>,
    api_key: Option<String>,
    playback_token: Option<String>,
    deep_page_token: Option<String>,
    email: String,
    password: String,
    organisation_id: String,
    /// The credential of the write scenarios.
    write_credential: Option<(&'static str, AsciiMetadataValue)>,
    /// The user `update_user_role` changes.
    target_user_id: Option<String>,
    /// How many role changes were sent (the next one's parity picks the role).
    role_flips: AtomicU64,
    /// How many invites were sent, for fresh emails.
    invite_sequence: AtomicU64,
    /// Unique to this loadgen run, so that its emails are fresh.
    nonce: String,
    /// `authorization` values of `--users` users, and the next one's index.
    user_tokens: Vec<AsciiMetadataValue>,
    next_user: AtomicU64,
    /// What `list_users_prefix` searches by.
    email_prefix: String,
    /// A personal API token of the signed-in user, and its header value.
    api_token: Option<String>,
    api_token_credential: Option<AsciiMetadataValue>,
}

impl Session {
    /// A request with the write scenarios' credential.
    fn writer<T>(&self, message: T) -> Result<Request<T>, Status> {
        let (header, value) = self.write_credential.clone().ok_or_else(|| {
            Status::invalid_argument("--write-credential api-key needs --api-key")
        })?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(header, value);
        Ok(request)
    }

    fn as_service<T>(&self, message: T) -> Result<Request<T>, Status> {
        let key = self.service_key.clone().ok_or_else(|| {
            Status::invalid_argument("the authorize scenarios need --service-key")
        })?;
        let mut request = Request::new(message);
        request.metadata_mut().insert("x-usermgmt-service-key", key);
        Ok(request)
    }

    /// A request as the next of the `--users` users.
    fn as_next_user<T>(&self, message: T) -> Result<Request<T>, Status> {
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
    fn with_api_token<T>(&self, message: T) -> Result<Request<T>, Status> {
        let value = self
            .api_token_credential
            .clone()
            .ok_or_else(|| Status::internal("no API token was created at start"))?;
        let mut request = Request::new(message);
        request.metadata_mut().insert(self.read_credential.0, value);
        Ok(request)
    }

    fn authorized<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(self.read_credential.0, self.read_credential.1.clone());
        request
    }
}

/// What one worker saw during the measured window.
#[derive(Debug, Default)]
struct WorkerStats {
    /// Latency of each OK call, in nanoseconds.
    latencies: Vec<u64>,
    /// Latency of each call of the OK iterations, per [`Scenario::parts`].
    parts: Vec<Vec<u64>>,
    /// Writes that changed nothing.
    unchanged: u64,
    errors: Errors,
}

/// Errors by status code: how many, and the first message seen.
#[derive(Debug, Default)]
struct Errors(BTreeMap<i32, (u64, String)>);

impl Errors {
    fn record(&mut self, status: &Status) {
        let entry = self
            .0
            .entry(status.code() as i32)
            .or_insert_with(|| (0, status.message().to_owned()));
        entry.0 += 1;
    }

    fn merge(&mut self, other: Errors) {
        for (code, (count, message)) in other.0 {
            self.0.entry(code).or_insert((0, message)).0 += count;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }

    fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(code, (count, message))| {
                format!("{count} × {:?} (first: {message:?})", Code::from(*code))
            })
            .collect()
    }
}

/// What one round of one scenario saw.
#[derive(Debug)]
struct Round {
    /// Latency of each OK call, in nanoseconds (unsorted).
    latencies: Vec<u64>,
    parts: Vec<Vec<u64>>,
    unchanged: u64,
    errors: Errors,
    seconds: f64,
    cpu: Option<CpuUse>,
    /// The users cache's hits and misses during the measured window.
    user_cache: Option<(u64, u64)>,
}

/// The result of one scenario at one in-flight level, all rounds pooled.
#[derive(Debug)]
struct Measurement {
    scenario: Scenario,
    in_flight: u32,
    seconds: f64,
    ok: u64,
    errors: Errors,
    unchanged: u64,
    req_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Per call of a many-call iteration: name, p50 and p99 in µs.
    parts: Vec<(&'static str, f64, f64)>,
    cpu: Option<CpuUse>,
    /// Hits of the server's users cache per lookup, when its metrics are read.
    user_cache_hit_rate: Option<f64>,
}

impl Measurement {
    fn pooled(scenario: Scenario, in_flight: u32, rounds: Vec<Round>) -> Measurement {
        let cpu = CpuUse::pooled(
            rounds
                .iter()
                .filter_map(|r| Some((r.cpu.as_ref()?, r.seconds))),
        );
        let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
        let user_cache = rounds
            .iter()
            .map(|r| r.user_cache)
            .try_fold((0u64, 0u64), |(h, m), counts| {
                counts.map(|(hits, misses)| (h + hits, m + misses))
            });
        let user_cache_hit_rate = user_cache
            .filter(|(hits, misses)| hits + misses > 0)
            .map(|(hits, misses)| hits as f64 / (hits + misses) as f64);
        let mut latencies = Vec::new();
        let mut parts: Vec<Vec<u64>> = scenario.parts().iter().map(|_| Vec::new()).collect();
        let mut errors = Errors::default();
        let mut unchanged = 0;
        for round in rounds {
            latencies.extend(round.latencies);
            for (pooled, part) in parts.iter_mut().zip(round.parts) {
                pooled.extend(part);
            }
            errors.merge(round.errors);
            unchanged += round.unchanged;
        }
        latencies.sort_unstable();
        let ok = latencies.len() as u64;
        let parts = scenario
            .parts()
            .iter()
            .zip(parts)
            .map(|(&name, mut part)| {
                part.sort_unstable();
                (name, percentile_us(&part, 0.50), percentile_us(&part, 0.99))
            })
            .collect();
        Measurement {
            scenario,
            in_flight,
            seconds,
            ok,
            errors,
            unchanged,
            req_per_s: ok as f64 / seconds,
            p50_us: percentile_us(&latencies, 0.50),
            p99_us: percentile_us(&latencies, 0.99),
            max_us: latencies.last().map_or(f64::NAN, |&ns| ns as f64 / 1e3),
            parts,
            cpu,
            user_cache_hit_rate,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn loopback_endpoint(addr: &str) -> Result<Endpoint, BoxError> {
    require_loopback(addr)?;
    Ok(Endpoint::from_shared(addr.to_owned())
        .map_err(|e| format!("invalid address {addr:?}: {}", error_chain(&e)))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let endpoint = loopback_endpoint(&args.addr)?;
    let others = args
        .other_replicas
        .iter()
        .map(|addr| loopback_endpoint(addr))
        .collect::<Result<Vec<_>, _>>()?;

    let scenarios = ordered_scenarios(&args.scenarios);
    let levels = dedup(&args.in_flight);
    if args.wait_serving {
        let took = wait_serving(&endpoint).await?;
        println!(
            "startup: SERVING {} ms after loadgen started",
            took.as_millis()
        );
        for (addr, other) in args.other_replicas.iter().zip(&others) {
            let took = wait_serving(other).await?;
            println!(
                "replica {addr}: SERVING (waited {} ms more)",
                took.as_millis()
            );
        }
    }
    let session = Arc::new(login(&endpoint, &args).await?);
    if scenarios.contains(&Scenario::WhoAmIUsers) {
        warm_every_user(&endpoint, &session, &args).await?;
    }
    if scenarios.iter().any(|s| s.writes()) {
        eprintln!(
            "loadgen: write scenarios as {} · {} replica(s)",
            match args.write_credential {
                WriteCredential::Token => "the signed-in user",
                WriteCredential::ApiKey => "the organisation API key",
            },
            1 + args.other_replicas.len()
        );
    }

    let per_measurement = args.warmup_secs + args.duration_secs;
    let total =
        levels.len() as u64 * scenarios.len() as u64 * u64::from(args.rounds) * per_measurement;
    eprintln!(
        "loadgen: {} · {} connection(s) · in flight {:?} · scenarios {} · {} round(s) · \
         {}s warm-up + {}s measured each · about {}s in all",
        args.addr,
        args.connections,
        levels,
        scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        args.rounds,
        args.warmup_secs,
        args.duration_secs,
        total
    );
    if !scenarios.contains(&Scenario::Health) {
        eprintln!("loadgen: `health` is not among the scenarios; no ratios to the baseline");
    }

    for &in_flight in &levels {
        let mut rounds: Vec<Vec<Round>> = scenarios.iter().map(|_| Vec::new()).collect();
        for round in 1..=args.rounds {
            for (&scenario, pooled) in scenarios.iter().zip(&mut rounds) {
                eprintln!(
                    "  measuring {} at {in_flight} in flight (round {round}/{}) …",
                    scenario.name(),
                    args.rounds
                );
                pooled.push(measure(&endpoint, &session, &args, scenario, in_flight).await?);
            }
        }
        let results: Vec<Measurement> = scenarios
            .iter()
            .zip(rounds)
            .map(|(&scenario, rounds)| Measurement::pooled(scenario, in_flight, rounds))
            .collect();
        print_table(&args, in_flight, &results);
        if args.json {
            print_json(&args, &results);
        }
    }
    Ok(())
}

/// Refuses anything but a plain-HTTP loopback address.
fn require_loopback(addr: &str) -> Result<(), BoxError> {
    let uri: http::Uri = addr
        .parse()
        .map_err(|e| format!("invalid --addr {addr:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--addr {addr:?} must start with http:// (loopback, no TLS)").into());
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--addr {addr:?} has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "--addr {addr:?}: refusing to load a non-loopback host ({host}); \
             use 127.0.0.1, ::1 or localhost"
        )
        .into());
    }
    Ok(())
}

/// The requested scenarios without repeats, the baseline first.
fn ordered_scenarios(requested: &[Scenario]) -> Vec<Scenario> {
    let mut ordered = Vec::new();
    if requested.contains(&Scenario::Health) {
        ordered.push(Scenario::Health);
    }
    for &scenario in requested {
        if !ordered.contains(&scenario) {
            ordered.push(scenario);
        }
    }
    ordered
}

fn dedup(levels: &[u32]) -> Vec<u32> {
    let mut unique = Vec::new();
    for &level in levels {
        if !unique.contains(&level) {
            unique.push(level);
        }
    }
    unique
}

async fn login(endpoint: &Endpoint, args: &Args) -> Result<Session, BoxError> {
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
    Ok(session)
}

/// The hits and misses of the server's users cache, from its metrics.
async fn user_cache_counts(addr: Option<std::net::SocketAddr>) -> Option<(u64, u64)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = addr.filter(|a| a.ip().is_loopback())?;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let value = |family: &str| -> Option<u64> {
        let prefix = format!("{family}{{cache=\"users\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some((
        value("usermgmt_cache_hits_total")?,
        value("usermgmt_cache_misses_total")?,
    ))
}

/// A well-mixed 64-bit function of `x` (SplitMix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Calls WhoAmI once as each of the `--users` users before measuring, so
/// that the measurements see the server with every one of them active.
async fn warm_every_user(
    endpoint: &Endpoint,
    session: &Arc<Session>,
    args: &Args,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let channels = open_channels(endpoint, args).await?;
    let users = session.user_tokens.len() as u64;
    let mut workers = Vec::new();
    for index in 0..64 {
        let channel = channels[index % channels.len()].clone();
        let session = Arc::clone(session);
        workers.push(tokio::spawn(async move {
            while session.next_user.load(Ordering::Relaxed) < users {
                Scenario::WhoAmIUsers.call(&channel, &session).await?;
            }
            Ok::<(), Status>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    eprintln!(
        "loadgen: every one of {users} users called once in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// `--connections` channels: each `connect` opens its own HTTP/2
/// connection, and clones of a Channel share it.
async fn open_channels(endpoint: &Endpoint, args: &Args) -> Result<Vec<Channel>, BoxError> {
    let mut channels = Vec::with_capacity(args.connections as usize);
    for index in 0..args.connections {
        let channel = endpoint.connect().await.map_err(|e| {
            format!(
                "cannot open connection {} to {}: {}",
                index + 1,
                args.addr,
                error_chain(&e)
            )
        })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// The `authorization` values of `--users` users, from `usermgmt bench-tokens`.
async fn user_tokens(args: &Args) -> Result<Vec<AsciiMetadataValue>, BoxError> {
    if args.users == 0 {
        return Err("who_am_i_users needs --users N".into());
    }
    let usermgmt = args
        .usermgmt_bin
        .clone()
        .unwrap_or_else(tokens::default_usermgmt);
    let source = tokens::TokenSource {
        usermgmt: &usermgmt,
        database_url: &args.database_url,
        key_encryption_key: args.key_encryption_key.as_deref(),
        jwt_secret: args.jwt_secret.as_deref(),
        issuer: &args.token_issuer,
        audience: &args.token_audience,
        organisation_id: args.users_organisation_id,
    };
    let started = Instant::now();
    let tokens = tokens::tokens_of_users(&source, args.users).await?;
    eprintln!(
        "loadgen: tokens of {} users from usermgmt bench-tokens in {} ms",
        tokens.len(),
        started.elapsed().as_millis()
    );
    tokens
        .iter()
        .map(|token| args.token_header.value(token))
        .collect()
}

/// The id of the user `update_user_role` changes, which is then a nanoUser:
/// `--target-user-id` (checked), or a user created for it.
async fn role_target(
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
async fn create_api_token(endpoint: &Endpoint, session: &Session) -> Result<String, BoxError> {
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
async fn deep_page_token(endpoint: &Endpoint, session: &Session) -> Result<String, BoxError> {
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

/// Logs in back to back until `end` (the storm of `authorize_during_logins`).
async fn log_in_until(channel: Channel, session: Arc<Session>, end: Instant) {
    let mut auth = AuthServiceClient::new(channel);
    while Instant::now() < end {
        let request = proto::LoginRequest {
            email: session.email.clone(),
            password: session.password.clone(),
            organisation_id: session.organisation_id.clone(),
        };
        if auth.login(request).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits until the server reports SERVING; returns how long that took.
async fn wait_serving(endpoint: &Endpoint) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|response| response.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return Ok(started.elapsed());
            }
        }
        if Instant::now() > deadline {
            return Err("the server did not become SERVING within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An organisation-wide playback token for the `verify_playback` scenario.
async fn issue_playback_token(endpoint: &Endpoint, session: &Session) -> Result<String, BoxError> {
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

/// Runs one scenario at one in-flight level on fresh connections, once.
async fn measure(
    endpoint: &Endpoint,
    session: &Arc<Session>,
    args: &Args,
    scenario: Scenario,
    in_flight: u32,
) -> Result<Round, BoxError> {
    let channels = open_channels(endpoint, args).await?;

    let warmup_end = Instant::now() + Duration::from_secs(args.warmup_secs);
    let end = warmup_end + Duration::from_secs(args.duration_secs);
    let workers: Vec<_> = (0..in_flight as usize)
        .map(|index| {
            let channel = channels[index % channels.len()].clone();
            let session = Arc::clone(session);
            tokio::spawn(worker(scenario, channel, session, warmup_end, end))
        })
        .collect();

    let storm: Vec<_> = if scenario == Scenario::AuthorizeDuringLogins {
        (0..LOGIN_STORM)
            .map(|index| {
                let channel = channels[index % channels.len()].clone();
                tokio::spawn(log_in_until(channel, Arc::clone(session), end))
            })
            .collect()
    } else {
        Vec::new()
    };

    tokio::time::sleep_until(warmup_end).await;
    let cpu_before = CpuSample::take(&args.server_pid);
    let cache_before = user_cache_counts(args.metrics_addr).await;
    let mut latencies = Vec::new();
    let mut parts: Vec<Vec<u64>> = scenario.parts().iter().map(|_| Vec::new()).collect();
    let mut unchanged = 0;
    let mut errors = Errors::default();
    for handle in workers {
        let stats = handle
            .await
            .map_err(|e| format!("a {} worker failed: {e}", scenario.name()))?;
        latencies.extend(stats.latencies);
        for (pooled, part) in parts.iter_mut().zip(stats.parts) {
            pooled.extend(part);
        }
        unchanged += stats.unchanged;
        errors.merge(stats.errors);
    }
    let finished = Instant::now();
    for login in storm {
        let _ = login.await;
    }
    let cache_after = user_cache_counts(args.metrics_addr).await;
    let user_cache = match (cache_before, cache_after) {
        (Some((h0, m0)), Some((h1, m1))) => Some((h1.saturating_sub(h0), m1.saturating_sub(m0))),
        _ => None,
    };
    let cpu = match (cpu_before, CpuSample::take(&args.server_pid)) {
        (Some(before), Some(after)) => Some(CpuUse::between(&before, &after)),
        _ => None,
    };
    drop(channels);

    Ok(Round {
        latencies,
        parts,
        unchanged,
        errors,
        seconds: finished.duration_since(warmup_end).as_secs_f64(),
        cpu,
        user_cache,
    })
}

/// Sends requests back to back until `end`; records those started after
/// `warmup_end`.
async fn worker(
    scenario: Scenario,
    channel: Channel,
    session: Arc<Session>,
    warmup_end: Instant,
    end: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats {
        parts: scenario.parts().iter().map(|_| Vec::new()).collect(),
        ..WorkerStats::default()
    };
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let result = scenario.call(&channel, &session).await;
        if start < warmup_end {
            continue;
        }
        match result {
            Ok(Outcome::Unchanged) => stats.unchanged += 1,
            Ok(outcome) => {
                stats.latencies.push(nanos(start.elapsed()));
                if let Outcome::Parts(parts) = outcome {
                    for (pooled, part) in stats.parts.iter_mut().zip(parts) {
                        pooled.push(part);
                    }
                }
            }
            Err(status) => stats.errors.record(&status),
        }
    }
    stats
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted: &[u64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1e3
}

fn baseline(results: &[Measurement]) -> Option<&Measurement> {
    results
        .iter()
        .find(|m| m.scenario == Scenario::Health && m.ok > 0)
}

fn ratio(value: f64, base: Option<f64>) -> Option<f64> {
    base.filter(|b| *b > 0.0 && b.is_finite())
        .map(|b| value / b)
        .filter(|r| r.is_finite())
}

fn print_table(args: &Args, in_flight: u32, results: &[Measurement]) {
    let base = baseline(results);
    println!();
    println!(
        "in flight {in_flight} · {} connection(s) · {}s measured after {}s warm-up",
        args.connections, args.duration_secs, args.warmup_secs
    );
    let with_cpu = results.iter().any(|m| m.cpu.is_some());
    let mut header = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10} {:>9}",
        "scenario", "req/s", "p50 µs", "p99 µs", "ok", "errors", "req/s ×hc", "p99 ×hc"
    );
    if with_cpu {
        header.push_str(&format!(
            " {:>9} {:>8} {:>8}",
            "cpu busy", "loadgen", "server"
        ));
    }
    println!("{header}");
    for m in results {
        let rps_ratio = ratio(m.req_per_s, base.map(|b| b.req_per_s));
        let p99_ratio = ratio(m.p99_us, base.map(|b| b.p99_us));
        let mut line = format!(
            "{:<10} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>8} {:>10} {:>9}",
            m.scenario.name(),
            m.req_per_s,
            m.p50_us,
            m.p99_us,
            m.ok,
            m.errors.total(),
            fmt_ratio(rps_ratio),
            fmt_ratio(p99_ratio),
        );
        if let Some(cpu) = &m.cpu {
            line.push_str(&format!(
                " {:>9} {:>8} {:>8}",
                format!("{:.2}/{}", cpu.busy_cores, cpu.cores),
                format!("{:.2}", cpu.loadgen_cores),
                cpu.server_cores
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            ));
        }
        println!("{line}");
    }
    for m in results {
        for (name, p50, p99) in &m.parts {
            println!(
                "  {} per call: {name} p50 {p50:.0} µs, p99 {p99:.0} µs",
                m.scenario.name()
            );
        }
        if m.unchanged > 0 {
            println!(
                "  {}: {} call(s) changed nothing (a concurrent call had set that role \
                 first); not counted as ok",
                m.scenario.name(),
                m.unchanged
            );
        }
        for error in m.errors.describe() {
            println!("  errors of {}: {error}", m.scenario.name());
        }
    }
    let rss: Vec<String> = results
        .iter()
        .filter_map(|m| {
            m.cpu
                .as_ref()
                .and_then(|c| c.server_rss_kib)
                .map(|kib| format!("{} {:.1} MiB", m.scenario.name(), kib as f64 / 1024.0))
        })
        .collect();
    if !rss.is_empty() {
        println!("  server RSS after each: {}", rss.join(", "));
    }
    let hit_rates: Vec<String> = results
        .iter()
        .filter_map(|m| {
            let rate = m.user_cache_hit_rate?;
            Some(format!("{} {:.1} %", m.scenario.name(), rate * 100.0))
        })
        .collect();
    if !hit_rates.is_empty() {
        println!("  users cache hit rate: {}", hit_rates.join(", "));
    }
    if with_cpu {
        println!(
            "  (×hc = ratio to health at this level; cpu = cores busy machine-wide, \
             cores used by loadgen and by the server)"
        );
    } else {
        println!("  (×hc = ratio to health at this level)");
    }
}

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

fn print_json(args: &Args, results: &[Measurement]) {
    let base = baseline(results);
    for m in results {
        let errors: serde_json::Map<String, serde_json::Value> = m
            .errors
            .0
            .iter()
            .map(|(code, (count, _))| (format!("{:?}", Code::from(*code)), (*count).into()))
            .collect();
        let parts: serde_json::Map<String, serde_json::Value> = m
            .parts
            .iter()
            .map(|(name, p50, p99)| {
                let part = serde_json::json!({"p50_us": finite(*p50), "p99_us": finite(*p99)});
                ((*name).to_owned(), part)
            })
            .collect();
        let line = serde_json::json!({
            "scenario": m.scenario.name(),
            "in_flight": m.in_flight,
            "connections": args.connections,
            "seconds": m.seconds,
            "ok": m.ok,
            "errors": m.errors.total(),
            "error_codes": errors,
            "req_per_s": finite(m.req_per_s),
            "p50_us": finite(m.p50_us),
            "p99_us": finite(m.p99_us),
            "max_us": finite(m.max_us),
            "req_per_s_ratio": ratio(m.req_per_s, base.map(|b| b.req_per_s)),
            "p99_ratio": ratio(m.p99_us, base.map(|b| b.p99_us)),
            "p50_ratio": ratio(m.p50_us, base.map(|b| b.p50_us)),
            "unchanged": m.unchanged,
            "parts": parts,
            "cpu_cores": m.cpu.as_ref().map(|c| c.cores),
            "cpu_busy_cores": m.cpu.as_ref().map(|c| c.busy_cores),
            "loadgen_cores": m.cpu.as_ref().map(|c| c.loadgen_cores),
            "server_cores": m.cpu.as_ref().and_then(|c| c.server_cores),
            "server_rss_kib": m.cpu.as_ref().and_then(|c| c.server_rss_kib),
            "user_cache_hit_rate": m.user_cache_hit_rate.and_then(finite),
        });
        println!("{line}");
    }
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// CPU counters from Linux's /proc, in clock ticks (the unit cancels out).
#[derive(Debug)]
struct CpuSample {
    total: u64,
    idle: u64,
    cores: usize,
    loadgen: u64,
    server: Option<u64>,
    server_rss_kib: Option<u64>,
}

/// CPU use during one measurement, in cores.
#[derive(Debug)]
struct CpuUse {
    cores: usize,
    busy_cores: f64,
    loadgen_cores: f64,
    server_cores: Option<f64>,
    server_rss_kib: Option<u64>,
}

impl CpuSample {
    /// `None` where /proc is not available. The servers' ticks are summed
    /// (`None` unless every one was read); the RSS is the largest.
    fn take(server_pids: &[u32]) -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is in user).
        let total = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let cores = lines
            .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
            .count();
        let loadgen = process_ticks("self")?;
        let server = (!server_pids.is_empty())
            .then(|| {
                server_pids
                    .iter()
                    .map(|pid| process_ticks(&pid.to_string()))
                    .sum::<Option<u64>>()
            })
            .flatten();
        let server_rss_kib = server_pids.iter().filter_map(|&pid| rss_kib(pid)).max();
        Some(CpuSample {
            total,
            idle,
            cores,
            loadgen,
            server,
            server_rss_kib,
        })
    }
}

impl CpuUse {
    /// The time-weighted mean of several rounds' use, and the largest RSS seen.
    fn pooled<'a>(rounds: impl Iterator<Item = (&'a CpuUse, f64)>) -> Option<CpuUse> {
        let rounds: Vec<_> = rounds.collect();
        let (last, _) = rounds.last()?;
        let seconds: f64 = rounds.iter().map(|(_, s)| s).sum();
        let mean = |f: &dyn Fn(&CpuUse) -> f64| {
            rounds.iter().map(|(c, s)| f(c) * s).sum::<f64>() / seconds
        };
        let server_cores = rounds
            .iter()
            .map(|(c, s)| c.server_cores.map(|cores| cores * s))
            .sum::<Option<f64>>()
            .map(|weighted| weighted / seconds);
        Some(CpuUse {
            cores: last.cores,
            busy_cores: mean(&|c| c.busy_cores),
            loadgen_cores: mean(&|c| c.loadgen_cores),
            server_cores,
            server_rss_kib: rounds.iter().filter_map(|(c, _)| c.server_rss_kib).max(),
        })
    }

    fn between(before: &CpuSample, after: &CpuSample) -> CpuUse {
        let total = after.total.saturating_sub(before.total).max(1) as f64;
        let cores = after.cores.max(1);
        let share = |ticks: u64| ticks as f64 / total * cores as f64;
        let idle = after.idle.saturating_sub(before.idle);
        let busy = after
            .total
            .saturating_sub(before.total)
            .saturating_sub(idle);
        CpuUse {
            cores,
            busy_cores: share(busy),
            loadgen_cores: share(after.loadgen.saturating_sub(before.loadgen)),
            server_cores: match (before.server, after.server) {
                (Some(b), Some(a)) => Some(share(a.saturating_sub(b))),
                _ => None,
            },
            server_rss_kib: after.server_rss_kib,
        }
    }
}

/// utime + stime of a process from /proc/<pid>/stat.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// An error with its sources, e.g. "transport error: tcp connect error: …".
fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
