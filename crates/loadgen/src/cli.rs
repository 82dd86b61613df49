//! The command line: every flag, and the value types of its choices.

use clap::{Parser, ValueEnum};
use tonic::metadata::AsciiMetadataValue;
use usermgmt_proto::metadata::{BEARER as BEARER_HEADER, BINTU_TOKEN as BINTU_TOKEN_HEADER};

use crate::BoxError;
use crate::scenarios::Scenario;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Loopback load generator for usermgmt: req/s, p50 and p99 of each RPC, \
             as ratios to grpc.health.v1.Health/Check measured in the same run"
)]
pub struct Args {
    /// Server address. Loopback only (127.0.0.0/8, ::1 or localhost).
    #[arg(long, env = "LOADGEN_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,

    /// Email of the user to sign in as.
    #[arg(long, env = "LOADGEN_EMAIL")]
    pub email: String,

    /// Password of that user.
    #[arg(long, env = "LOADGEN_PASSWORD", hide_env_values = true)]
    pub password: String,

    /// Organisation to sign in to (only needed when the email and password
    /// belong to users of several organisations).
    #[arg(long, env = "LOADGEN_ORGANISATION_ID", default_value = "")]
    pub organisation_id: String,

    /// Measured seconds per scenario and in-flight level.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,

    /// Times to measure the whole sequence of scenarios, interleaved
    /// (health, a, b, health, a, b, …); each scenario's rounds are pooled.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub warmup_secs: u64,

    /// HTTP/2 connections per measurement (one tonic Channel each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Requests in flight, comma-separated; one table per level.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,64",
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub in_flight: Vec<u32>,

    /// Scenarios, comma-separated. `health` (the baseline) always runs first.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "health,get_user,who_am_i"
    )]
    pub scenarios: Vec<Scenario>,

    /// Key of a registered service (`usermgmt service register`), for the
    /// `authorize_*` scenarios.
    #[arg(long, env = "LOADGEN_SERVICE_KEY", hide_env_values = true)]
    pub service_key: Option<String>,

    /// The organisation API key (from `usermgmt bootstrap`), for
    /// `authorize_api_key`.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Worker threads of the load generator's own runtime (default: one per
    /// core). On a small machine the load generator competes with the server.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Process ids of the server and of its other replicas, comma-separated,
    /// to report their CPU use (summed) and RSS (the largest) from Linux /proc.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// First wait until the server is SERVING, and say how long that took
    /// (start loadgen right after the server to measure its startup).
    #[arg(long)]
    pub wait_serving: bool,

    /// The other replicas of the same database, comma-separated (loopback
    /// only). No load goes to them; with --wait-serving, loadgen waits until
    /// each of them is SERVING too, so that every writer waits for their
    /// cache acknowledgements from the first measurement on.
    #[arg(long, value_delimiter = ',')]
    pub other_replicas: Vec<String>,

    /// The credential of the write scenarios: the signed-in user's access
    /// token or the organisation API key (`--api-key`). Either must hold
    /// `users.update_role` and `users.invite` (a nanoAdmin does).
    #[arg(long, value_enum, default_value = "token")]
    pub write_credential: WriteCredential,

    /// The user whose role `update_user_role` alternates between nanoUser
    /// and nanoReadOnly: not the signed-in user, and not a nanoAdmin. Unset:
    /// loadgen creates one (`UserService.CreateUser`) before measuring.
    #[arg(long)]
    pub target_user_id: Option<String>,

    /// Also print one JSON object per measurement on stdout.
    #[arg(long)]
    pub json: bool,

    /// How many users `who_am_i_users` spreads its calls over (each user
    /// once before measuring, then a user drawn at random for each call).
    /// Their tokens come from `usermgmt bench-tokens` (see --usermgmt-bin),
    /// run on `--database-url`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub users: u32,

    /// Mint tokens only for users of this organisation (default: the first
    /// `--users` users of every organisation, by id).
    #[arg(long)]
    pub users_organisation_id: Option<uuid::Uuid>,

    /// The `usermgmt` binary that issues the tokens of `--users`
    /// (`usermgmt bench-tokens`). Default: the one beside loadgen's own
    /// executable, or else the one on the PATH.
    #[arg(long, env = "LOADGEN_USERMGMT_BIN")]
    pub usermgmt_bin: Option<std::path::PathBuf>,

    /// The server's database, for `--users`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/usermgmt"
    )]
    pub database_url: String,

    /// The server's key-encryption key, when its secrets are sealed.
    #[arg(long, env = "USERMGMT_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<String>,

    /// The server's access-token key, when it is configured rather than stored.
    #[arg(long, env = "USERMGMT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The header the read scenarios present the access token in:
    /// `authorization` (`Bearer …`; HTTP/2 never adds it to its header
    /// table, so every call carries and decodes the whole token) or
    /// `x-bintu-token` (HPACK indexes it: after a connection's first call,
    /// a call carries an index of a byte or two).
    #[arg(long, value_enum, default_value = "authorization")]
    pub token_header: TokenHeader,

    /// The email prefix `list_users_prefix` searches by, and that of the
    /// users `login` and `login_orgs` sign in as (`seed-`: the users of
    /// `usermgmt seed`).
    #[arg(long, default_value = "seed-")]
    pub email_prefix: String,

    /// How many organisations `issue_playback_orgs` and `login_orgs` spread
    /// their calls over: those of the first N users by id, which must be N
    /// distinct organisations (as after `usermgmt bootstrap` then `usermgmt
    /// seed --organisations N` on a fresh database).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub organisations: u32,

    /// How many users of each organisation `login` and `login_orgs` sign in
    /// as, in turn (see --email-prefix).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub login_users: u32,

    /// The password of those users (default: the one `usermgmt seed` gives
    /// every user).
    #[arg(
        long,
        env = "LOADGEN_LOGIN_PASSWORD",
        hide_env_values = true,
        default_value = "seeded password"
    )]
    pub login_password: String,

    /// The server's metrics listener (`usermgmt serve --metrics-listen`),
    /// loopback only: the users cache's hit rate of each measurement is
    /// read from it.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// The server's token issuer and audience.
    #[arg(long, env = "USERMGMT_TOKEN_ISSUER", default_value = "usermgmt")]
    pub token_issuer: String,
    #[arg(long, env = "USERMGMT_TOKEN_AUDIENCE", default_value = "usermgmt")]
    pub token_audience: String,
}

/// Where the read scenarios put the access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum TokenHeader {
    Authorization,
    XBintuToken,
}

impl TokenHeader {
    pub fn name(self) -> &'static str {
        match self {
            TokenHeader::Authorization => BEARER_HEADER,
            TokenHeader::XBintuToken => BINTU_TOKEN_HEADER,
        }
    }

    pub fn value(self, token: &str) -> Result<AsciiMetadataValue, BoxError> {
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
pub enum WriteCredential {
    /// The signed-in user's access token.
    Token,
    /// The organisation API key (`--api-key`).
    ApiKey,
}

/// The requested scenarios without repeats, the baseline first.
pub fn ordered_scenarios(requested: &[Scenario]) -> Vec<Scenario> {
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

pub fn dedup(levels: &[u32]) -> Vec<u32> {
    let mut unique = Vec::new();
    for &level in levels {
        if !unique.contains(&level) {
            unique.push(level);
        }
    }
    unique
}
