//! Command line and environment: every setting has a flag and a variable.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::tokens::TokenSettings;
use crate::sealing::{Kek, Keyring};
use crate::store::pool::PoolSettings;

#[derive(Debug, Parser)]
#[command(
    name = "usermgmt",
    version,
    about = "Users, roles and access tokens of a streaming cloud's organisations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `usermgmt=debug`).
    #[arg(long, env = "USERMGMT_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format.
    #[arg(
        long,
        env = "USERMGMT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint to export traces to (OpenTelemetry), e.g.
    /// `http://127.0.0.1:4317`: one span per call, with its method, request id
    /// and outcome. Unset: no export.
    #[arg(long, env = "USERMGMT_OTEL_ENDPOINT", global = true)]
    pub otel_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: boxing `ServeArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gRPC server (runs pending migrations first).
    Serve(ServeArgs),
    /// Creates the database if needed and runs pending migrations.
    Migrate(MigrateArgs),
    /// Creates an organisation with its API key and first nanoAdmin; prints
    /// its ids and the API key (shown only here) as JSON.
    Bootstrap(BootstrapArgs),
    /// Adds many users to an organisation at once, for benchmarks (nanoUser,
    /// nanoReadOnly and nanoAdmin in turn, all with the password
    /// `seeded password`).
    Seed(SeedArgs),
    /// Registers or revokes the internal services that may call Authorize.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manages the key-encryption keys of the secrets kept in the database.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exits 0 when a server reports SERVING on its gRPC health service
    /// (for container health checks).
    Healthcheck(HealthcheckArgs),
    /// For benchmark databases only: opens a session for each of the first
    /// --users users (by id) and prints an access token of each, signed with
    /// the server's key, as JSON lines (the load generator's many users).
    BenchTokens(BenchTokensArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BenchTokensArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How many users: the first ones by id.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub users: u32,

    /// Only users of this organisation (default: of every organisation).
    #[arg(long)]
    pub organisation_id: Option<uuid::Uuid>,

    /// The server's own signing settings: the tokens must be the ones it
    /// would issue.
    #[command(flatten)]
    pub signing: SigningArgs,
}

/// How access tokens are signed: the key and the names they carry, and the
/// key-encryption keys that open a key kept in the database. `serve` and
/// `bench-tokens` share them, so that both sign alike.
#[derive(Debug, Clone, Args)]
pub struct SigningArgs {
    /// HS256 key for access tokens, at least 32 bytes. When unset, a random
    /// key is generated once and kept in the database for every replica.
    #[arg(long, env = "USERMGMT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    #[command(flatten)]
    pub keys: KeyEncryptionArgs,

    /// The `iss` of access tokens.
    #[arg(long, env = "USERMGMT_TOKEN_ISSUER", default_value = "usermgmt")]
    pub token_issuer: String,

    /// The `aud` of access tokens.
    #[arg(long, env = "USERMGMT_TOKEN_AUDIENCE", default_value = "usermgmt")]
    pub token_audience: String,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server to ask (plaintext `http://`).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub url: String,

    /// The service to ask about; empty: the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,

    /// How long connecting and the check may take, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The organisation to add users to.
    #[arg(long)]
    pub organisation_id: uuid::Uuid,

    /// How many users to add.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub users: u32,

    /// Spread the users over this many organisations: the one given and
    /// new ones, each with a nanoAdmin among its users.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub organisations: u32,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Registers a service; prints its key (shown only here) as JSON.
    Register(ServiceArgs),
    /// Revokes a service; its key stops working on the next call.
    Revoke(ServiceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The service's name, e.g. `streams`.
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-seals every stored secret (playback private keys, the generated
    /// access-token key) with --key-encryption-key, in one transaction: those
    /// stored plain and those sealed with one of
    /// --previous-key-encryption-keys. Prints what it did as JSON.
    Rewrap(RewrapArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub keys: KeyEncryptionArgs,
}

/// The key-encryption keys (KEKs) that seal the secrets kept in the
/// database. Parsed by [`KeyEncryptionArgs::keyring`], never by clap, so
/// that no error message repeats a key.
#[derive(Debug, Clone, Args)]
pub struct KeyEncryptionArgs {
    /// Key-encryption key: 32 bytes as 64 hex digits or base64 (e.g.
    /// `openssl rand -base64 32`). Seals the playback private keys and the
    /// generated access-token key in the database. Unset: they are stored
    /// unencrypted.
    #[arg(long, env = "USERMGMT_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<Secret>,

    /// Earlier key-encryption keys, comma-separated: they open secrets but
    /// never seal, for a rotation (see docs/operations.md).
    #[arg(
        long,
        env = "USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_key_encryption_keys: Vec<Secret>,
}

impl KeyEncryptionArgs {
    /// The keyring these settings give, or why they give none (never
    /// showing a key).
    pub fn keyring(&self) -> Result<Keyring, String> {
        let sealing = self
            .key_encryption_key
            .as_ref()
            .map(|key| {
                Kek::parse(key.expose()).map_err(|reason| {
                    format!("--key-encryption-key (USERMGMT_KEY_ENCRYPTION_KEY) {reason}")
                })
            })
            .transpose()?;
        let previous = self
            .previous_key_encryption_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                Kek::parse(key.expose()).map_err(|reason| {
                    format!(
                        "--previous-key-encryption-keys (USERMGMT_PREVIOUS_KEY_ENCRYPTION_KEYS): \
                         key {} of {} {reason}",
                        index + 1,
                        self.previous_key_encryption_keys.len()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring::new(sealing, previous))
    }
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL. The database is created when it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/usermgmt"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. The database is created when it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/usermgmt"
    )]
    pub database_url: String,

    /// Largest number of database connections.
    #[arg(long, env = "USERMGMT_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// How long a call waits for a free connection before UNAVAILABLE, in milliseconds.
    #[arg(long, env = "USERMGMT_DB_WAIT_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub db_wait_timeout_ms: u64,

    /// How long one database host may take to complete a connection's
    /// whole handshake (TCP, start-up, authentication, the read-write check)
    /// before the next host of the URL is tried, in milliseconds.
    #[arg(long, env = "USERMGMT_DB_CONNECT_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub db_connect_timeout_ms: u64,
}

impl DatabaseArgs {
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_size: self.db_pool_size as usize,
            wait_timeout: Duration::from_millis(self.db_wait_timeout_ms),
            connect_timeout: Duration::from_millis(self.db_connect_timeout_ms),
            call_timeout: None,
            tcp: crate::store::pool::TcpSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "USERMGMT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub signing: SigningArgs,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "USERMGMT_ACCESS_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31 * 24 * 3600))]
    pub access_token_ttl_secs: u64,

    /// Password hashes computed at once (each argon2id takes ~19 MiB and a core);
    /// 0 means one less than the number of cores, at least one.
    #[arg(long, env = "USERMGMT_PASSWORD_HASH_CONCURRENCY", default_value_t = 0)]
    pub password_hash_concurrency: usize,

    /// Password hashes queued or running at once, in total; past it a call
    /// that needs one fails RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "USERMGMT_PASSWORD_HASH_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub password_hash_queue: u64,

    /// Password hashes queued or running at once for one caller (a user, the
    /// API key, or the peer address of an anonymous call).
    #[arg(long, env = "USERMGMT_PASSWORD_HASH_QUEUE_PER_CALLER", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub password_hash_queue_per_caller: u64,

    /// How long a password hash may wait for a hashing thread, in
    /// milliseconds; a call whose hash waited longer fails RESOURCE_EXHAUSTED.
    #[arg(long, env = "USERMGMT_PASSWORD_HASH_MAX_WAIT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub password_hash_max_wait_ms: u64,

    /// Lifetime of an invite whose request sets none, in seconds.
    #[arg(long, env = "USERMGMT_INVITE_TTL_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..=30 * 24 * 3600))]
    pub invite_ttl_secs: u64,

    /// Lifetime of the confirmation token of a delete or renew, in seconds.
    #[arg(long, env = "USERMGMT_CONFIRMATION_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub confirmation_ttl_secs: u64,

    /// Lifetime of a playback token whose request sets no `exp`, in seconds
    /// (at most 24 hours, so that it suits revocable tokens too).
    #[arg(long, env = "USERMGMT_PLAYBACK_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=24 * 3600))]
    pub playback_token_ttl_secs: u64,

    /// Cache users, organisations and API keys for the per-call check, and the
    /// keys that verify playback tokens. The cache is kept exact across
    /// replicas (see docs/architecture.md); turn it off to read the database
    /// on every call.
    #[arg(long, env = "USERMGMT_AUTH_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_cache: bool,

    /// The longest a cache entry is used after the read that filled it, in
    /// milliseconds: the bound for a change made in the database with its
    /// triggers disabled (every other change reaches the caches at once). An
    /// entry must outlive the time between two calls of one user while the
    /// cache is cold, or a large working set never warms it up.
    #[arg(long, env = "USERMGMT_AUTH_CACHE_MAX_AGE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub auth_cache_max_age_ms: u64,

    /// The memory the per-call cache may hold, in bytes (its estimate of its
    /// entries): three eighths for users, five sixteenths for sessions, the
    /// rest for personal API tokens, organisations, API keys, services and
    /// playback keys. Past
    /// it, the entries used least recently and least often make room.
    #[arg(long, env = "USERMGMT_AUTH_CACHE_MAX_BYTES", default_value_t = 192 << 20, value_parser = clap::value_parser!(u64).range(1 << 20..=1 << 40))]
    pub auth_cache_max_bytes: u64,

    /// The memory of access tokens already verified, in bytes: a token seen
    /// again is not verified again, only its expiry is checked.
    #[arg(long, env = "USERMGMT_VERIFIED_TOKEN_CACHE_MAX_BYTES", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(1 << 20..=1 << 40))]
    pub verified_token_cache_max_bytes: u64,

    /// How often the database is checked for the health service, in milliseconds.
    #[arg(long, env = "USERMGMT_HEALTH_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub health_interval_ms: u64,

    /// Address to serve Prometheus metrics on (HTTP, `GET /metrics`), e.g.
    /// `127.0.0.1:9090`. Unset: no metrics endpoint.
    #[arg(long, env = "USERMGMT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// PEM file of the server's TLS certificate chain. With --tls-key, the
    /// server speaks TLS only; unset: plaintext.
    #[arg(long, env = "USERMGMT_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM file of the private key of --tls-cert.
    #[arg(long, env = "USERMGMT_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM file of the CA(s) that sign client certificates. Set: every client
    /// must present one (mTLS). Needs --tls-cert and --tls-key.
    #[arg(long, env = "USERMGMT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Origins whose browser pages may call the API through gRPC-Web
    /// (CORS), comma-separated, e.g. `https://dashboard.example.com`; `*`
    /// for any. Unset: none.
    #[arg(long, env = "USERMGMT_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// The web console's build (its `index.html` and `assets/`), served to
    /// browsers (GET) on the gRPC listener; relative to the working
    /// directory. Without its `index.html` at start, the API only.
    #[arg(long, env = "USERMGMT_CONSOLE_DIR", default_value = "console/dist")]
    pub console_dir: std::path::PathBuf,

    /// Largest request message accepted, in bytes; a larger one gets
    /// RESOURCE_EXHAUSTED before it is decoded.
    #[arg(long, env = "USERMGMT_MAX_REQUEST_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1024..=4 * 1024 * 1024))]
    pub max_request_bytes: u32,

    /// Largest response message sent, in bytes.
    #[arg(long, env = "USERMGMT_MAX_RESPONSE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..=64 * 1024 * 1024))]
    pub max_response_bytes: u32,

    /// Largest HTTP/2 header list (all metadata of a call) accepted, in bytes.
    #[arg(long, env = "USERMGMT_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
    pub max_header_list_bytes: u32,

    /// Failed logins per minute for one email from one peer address (also
    /// the burst), shared by every replica; 0 turns the limit off.
    #[arg(long, env = "USERMGMT_LOGIN_RATE_PER_EMAIL", default_value_t = 10)]
    pub login_rate_per_email: u32,

    /// Login attempts per minute from one peer address (also the burst),
    /// shared by every replica; 0 turns the limit off.
    #[arg(long, env = "USERMGMT_LOGIN_RATE_PER_PEER", default_value_t = 100)]
    pub login_rate_per_peer: u32,

    /// Failed logins per hour for one email from every peer address that has
    /// not signed in to it successfully lately (also the burst), shared by
    /// every replica; 0 turns the limit off.
    #[arg(
        long,
        env = "USERMGMT_LOGIN_FAILURES_PER_EMAIL_PER_HOUR",
        default_value_t = 100
    )]
    pub login_failures_per_email_per_hour: u32,

    /// Password reset requests per minute from one peer address (also the
    /// burst), shared by every replica; 0 turns the limit off. Reset
    /// requests take nothing from the login limits.
    #[arg(
        long,
        env = "USERMGMT_PASSWORD_RESET_RATE_PER_PEER",
        default_value_t = 10
    )]
    pub password_reset_rate_per_peer: u32,

    /// Password reset requests per hour for one email from every peer
    /// address together (also the burst), shared by every replica; 0 turns
    /// the limit off.
    #[arg(
        long,
        env = "USERMGMT_PASSWORD_RESETS_PER_EMAIL_PER_HOUR",
        default_value_t = 20
    )]
    pub password_resets_per_email_per_hour: u32,

    /// How often the uses of personal API tokens noted in memory are written
    /// (their `last_used_at`, and the audit event of a first use), in
    /// milliseconds.
    #[arg(long, env = "USERMGMT_API_TOKEN_USAGE_FLUSH_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub api_token_usage_flush_ms: u64,

    /// How often each replica reads the heads of the organisations watched
    /// through the change feed, in milliseconds: the backstop that delivers
    /// a change whose notification was lost.
    #[arg(long, env = "USERMGMT_CHANGE_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub change_poll_ms: u64,

    /// The most change feed watches one caller (a user, the API key, a
    /// service) may hold at once on a replica.
    #[arg(long, env = "USERMGMT_CHANGE_WATCHES_PER_CALLER", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub change_watches_per_caller: u64,

    /// How long a session lasts after its login or last refresh, in seconds.
    #[arg(long, env = "USERMGMT_SESSION_IDLE_TTL_SECS", default_value_t = 30 * 86_400, value_parser = clap::value_parser!(u64).range(60..=3_650 * 86_400))]
    pub session_idle_ttl_secs: u64,

    /// The longest a session lasts after its login, however often it is
    /// refreshed, in seconds.
    #[arg(long, env = "USERMGMT_SESSION_ABSOLUTE_TTL_SECS", default_value_t = 90 * 86_400, value_parser = clap::value_parser!(u64).range(60..=3_650 * 86_400))]
    pub session_absolute_ttl_secs: u64,

    /// SMTP server to send mail through (password reset links, invites):
    /// `smtp://host:port` (plain), `smtps://host:port` (TLS), credentials in
    /// the URL (`smtps://user:password@host`). Unset: no mail is sent, and
    /// password reset requests still answer the same.
    #[arg(long, env = "USERMGMT_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The sender of the mail, e.g. `Streaming Cloud <no-reply@example.com>`.
    #[arg(long, env = "USERMGMT_MAIL_FROM", default_value = "no-reply@localhost")]
    pub mail_from: String,

    /// The dashboard's base URL, for the links in mail
    /// (`{public_url}/reset-password#token=…`, `{public_url}/accept-invite#token=…`).
    #[arg(
        long,
        env = "USERMGMT_PUBLIC_URL",
        default_value = "http://localhost:3000"
    )]
    pub public_url: String,

    /// A directory of mail templates that replace the built-in ones, file by
    /// file (see docs/operations.md).
    #[arg(long, env = "USERMGMT_MAIL_TEMPLATES_DIR")]
    pub mail_templates_dir: Option<std::path::PathBuf>,

    /// Mail workers on this replica, each sending one mail at a time; every
    /// replica's workers share the one outbox in the database.
    #[arg(long, env = "USERMGMT_MAIL_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub mail_workers: u32,

    /// How often an idle mail worker looks for due mail, in milliseconds
    /// (mail queued on this replica wakes its workers at once).
    #[arg(long, env = "USERMGMT_MAIL_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub mail_poll_ms: u64,

    /// How long a worker's claim on a mail lasts, in milliseconds: the most
    /// one send may take; after it (the replica died mid-send), any
    /// replica may send the mail.
    #[arg(long, env = "USERMGMT_MAIL_LEASE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub mail_lease_ms: u64,

    /// The delay before a failed mail's first retry, in milliseconds;
    /// doubled at each failure (with jitter), up to --mail-retry-max-ms.
    #[arg(long, env = "USERMGMT_MAIL_RETRY_BASE_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub mail_retry_base_ms: u64,

    /// The longest delay between two attempts of a mail, in milliseconds.
    #[arg(long, env = "USERMGMT_MAIL_RETRY_MAX_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub mail_retry_max_ms: u64,

    /// Longest a database statement may run (waiting for locks included)
    /// before the server cancels it and the call gets UNAVAILABLE, in
    /// milliseconds; 0 means no limit. Keep it below --db-call-timeout-ms.
    #[arg(long, env = "USERMGMT_DB_STATEMENT_TIMEOUT_MS", default_value_t = 4_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub db_statement_timeout_ms: u64,

    /// Longest a call may hold a database connection, in milliseconds; the
    /// caller's deadline (grpc-timeout), when sooner, bounds it too. Past it
    /// the connection is closed and the call gets UNAVAILABLE, even when the
    /// database does not answer at all.
    #[arg(long, env = "USERMGMT_DB_CALL_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub db_call_timeout_ms: u64,

    /// How long the change feed keeps a change, in hours: the states of
    /// older changes are dropped, and a resume token before them is refused
    /// (CHANGE_TOKEN_EXPIRED). The audit events stay.
    #[arg(long, env = "USERMGMT_CHANGE_RETENTION_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub change_retention_hours: u64,
}

impl ServeArgs {
    /// How the change feed runs.
    pub fn feed_settings(&self) -> crate::app::changes::FeedSettings {
        crate::app::changes::FeedSettings {
            poll: Duration::from_millis(self.change_poll_ms),
            watches_per_caller: usize::try_from(self.change_watches_per_caller)
                .unwrap_or(usize::MAX),
            ..Default::default()
        }
    }

    /// The pool's settings, with the bound of a call's database work.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            call_timeout: Some(Duration::from_millis(self.db_call_timeout_ms)),
            ..self.database.pool_settings()
        }
    }

    pub fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            issuer: self.signing.token_issuer.clone(),
            audience: self.signing.token_audience.clone(),
            lifetime: Duration::from_secs(self.access_token_ttl_secs),
        }
    }

    pub fn admin_settings(&self) -> crate::app::users::AdminSettings {
        crate::app::users::AdminSettings {
            invite_ttl: Duration::from_secs(self.invite_ttl_secs),
            confirmation_ttl: Duration::from_secs(self.confirmation_ttl_secs),
        }
    }

    pub fn playback_settings(&self) -> crate::app::playback::PlaybackSettings {
        crate::app::playback::PlaybackSettings {
            default_ttl: Duration::from_secs(self.playback_token_ttl_secs),
        }
    }

    pub fn login_limits(&self) -> crate::auth::ratelimit::LoginLimits {
        crate::auth::ratelimit::LoginLimits {
            per_email_and_peer: self.login_rate_per_email,
            per_peer: self.login_rate_per_peer,
            per_email_per_hour: self.login_failures_per_email_per_hour,
            resets_per_peer: self.password_reset_rate_per_peer,
            resets_per_email_per_hour: self.password_resets_per_email_per_hour,
        }
    }

    pub fn session_lifetime(&self) -> crate::domain::session::SessionLifetime {
        crate::domain::session::SessionLifetime {
            idle: Duration::from_secs(self.session_idle_ttl_secs),
            absolute: Duration::from_secs(self.session_absolute_ttl_secs),
        }
    }

    pub fn mail_settings(&self) -> crate::mail::MailSettings {
        crate::mail::MailSettings {
            smtp_url: self.smtp_url.clone(),
            from: self.mail_from.clone(),
            public_url: self.public_url.clone(),
            templates_dir: self.mail_templates_dir.clone(),
        }
    }

    pub fn outbox_settings(&self) -> crate::app::outbox::OutboxSettings {
        crate::app::outbox::OutboxSettings {
            workers: usize::try_from(self.mail_workers).unwrap_or(1),
            poll: Duration::from_millis(self.mail_poll_ms),
            lease: Duration::from_millis(self.mail_lease_ms),
            retry_base: Duration::from_millis(self.mail_retry_base_ms),
            retry_max: Duration::from_millis(self.mail_retry_max_ms),
        }
    }

    /// How long the change feed keeps a change.
    pub fn change_retention(&self) -> Duration {
        Duration::from_secs(self.change_retention_hours.saturating_mul(3600))
    }

    pub fn hashing_limits(&self) -> crate::auth::passwords::HashingLimits {
        crate::auth::passwords::HashingLimits {
            queue: usize::try_from(self.password_hash_queue).unwrap_or(usize::MAX),
            per_requester: usize::try_from(self.password_hash_queue_per_caller)
                .unwrap_or(usize::MAX),
            max_wait: Duration::from_millis(self.password_hash_max_wait_ms),
        }
    }

    pub fn password_concurrency(&self) -> usize {
        match self.password_hash_concurrency {
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        }
    }

    /// Settings that parse but cannot work, as a one-line reason.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(secret) = &self.signing.jwt_secret
            && secret.expose().len() < 32
        {
            return Err("USERMGMT_JWT_SECRET must be at least 32 bytes".into());
        }
        if self.signing.token_issuer.is_empty() || self.signing.token_audience.is_empty() {
            return Err("the token issuer and audience must not be empty".into());
        }
        self.signing.keys.keyring()?;
        if self.mail_retry_base_ms > self.mail_retry_max_ms {
            return Err("--mail-retry-base-ms must not exceed --mail-retry-max-ms".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Name of the new organisation.
    #[arg(long, env = "USERMGMT_BOOTSTRAP_ORGANISATION")]
    pub organisation: String,

    /// Email of its first nanoAdmin.
    #[arg(long, env = "USERMGMT_BOOTSTRAP_EMAIL")]
    pub email: String,

    /// Password of its first nanoAdmin (prefer the environment variable).
    #[arg(long, env = "USERMGMT_BOOTSTRAP_PASSWORD", hide_env_values = true)]
    pub password: Secret,
}

/// A secret setting: shown as `<redacted>` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}
