//! Wiring: the database, the authenticator, the services and the server.

mod console;
mod deadline;
pub mod healthcheck;
mod limits;
mod net;
mod receipt;
mod telemetry;
mod tls;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, TryStreamExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::screen::{RequestMessages, ScreenLayer};
use crate::api::{
    api_token_service::ApiTokenApi, audit_service::AuditApi, auth_service::AuthApi,
    change_service::ChangeApi, organisation_service::OrganisationApi,
    playback_service::PlaybackApi, role_service::RoleApi, session_service::SessionApi,
    user_service::UserApi,
};
use crate::app::api_tokens::ApiTokens;
use crate::app::audit::AuditLog;
use crate::app::authorize::Authorization;
use crate::app::changes::Changes;
use crate::app::credentials::Credentials;
use crate::app::invites::Invites;
use crate::app::organisation::Organisations;
use crate::app::outbox::{Outbox, OutboxWorkers};
use crate::app::playback::PlaybackTokens;
use crate::app::sessions::Sessions;
use crate::app::users::Users;
use crate::auth::passwords::Passwords;
use crate::auth::ratelimit::LoginLimiter;
use crate::auth::tokens::AccessTokens;
use crate::auth::usage::ApiTokenUsage;
use crate::auth::{AuthLayer, Authenticator};
use crate::config::ServeArgs;
use crate::mail::Mailer;
use crate::proto::{
    api_token_service_server::ApiTokenServiceServer, audit_service_server::AuditServiceServer,
    auth_service_server::AuthServiceServer, change_service_server::ChangeServiceServer,
    organisation_service_server::OrganisationServiceServer,
    playback_token_service_server::PlaybackTokenServiceServer,
    role_service_server::RoleServiceServer, session_service_server::SessionServiceServer,
    user_service_server::UserServiceServer,
};
use crate::sealing::Keyring;
use crate::store::cache::{self, Cache, CacheLimits};
use crate::store::{Store, pool};
use net::Coalescing;
use telemetry::TelemetryLayer;

/// The name under which the access-token key is kept in the database.
/// The name of the generated access-token key in `service_secrets`.
pub const JWT_SECRET_NAME: &str = "access_token_hs256_key";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Setup(#[from] pool::SetupError),
    #[error("{0}")]
    Init(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Prepares the database of `url`: creates it when missing and runs
/// migrations (with the default connection settings).
pub async fn prepare_database(url: &str) -> Result<Vec<String>, pool::SetupError> {
    prepare_database_on(&pool::connector(url, &pool::PoolSettings::of_size(1))?).await
}

/// Prepares the database `connector` reaches: creates it when missing and
/// runs migrations.
pub async fn prepare_database_on(
    connector: &pool::Connector,
) -> Result<Vec<String>, pool::SetupError> {
    pool::ensure_database_exists(connector).await?;
    pool::run_migrations(connector).await
}

/// Serves on `listener` until `shutdown` completes, then drains calls.
pub async fn serve(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    args.validate().map_err(ServeError::Init)?;
    let mailer = mailer(&args)?;
    let keyring = args.signing.keys.keyring().map_err(ServeError::Init)?;
    let tls = tls::server_tls_config(&args).map_err(ServeError::Init)?;
    let cors = web::cors_layer(&args.cors_allowed_origins).map_err(ServeError::Init)?;
    let (store, cache_task) = open_store(&args, keyring).await?;
    let tokens = Arc::new(access_tokens(&args, &store).await?);
    let passwords = Passwords::with_limits(args.password_concurrency(), args.hashing_limits())
        .await
        .map_err(|e| ServeError::Init(e.to_string()))?;
    let authenticator = Arc::new(Authenticator::new(tokens.clone(), store.clone()));
    let usage = authenticator.api_token_usage();
    let usage_task = tokio::spawn(crate::auth::usage::flush_every(
        Arc::clone(&usage),
        store.clone(),
        Duration::from_millis(args.api_token_usage_flush_ms),
    ));
    let retention_task = tokio::spawn(crate::store::feed_retention::prune_every(
        store.clone(),
        args.change_retention(),
        crate::store::feed_retention::PRUNE_INTERVAL,
    ));
    let (health, health_task) = health(&store, &args).await;
    let routes = reflection(Routes::new(health))?;
    let metrics_task = metrics(&args, &store).await?;
    let address = listener
        .local_addr()
        .map_err(|e| ServeError::Init(e.to_string()))?;
    tracing::info!(%address, tls = tls.is_some(), "usermgmt listening");
    let console = console(&args, address, tls.is_some());
    let request_messages =
        RequestMessages::of_contract().map_err(|e| ServeError::Reflection(e.to_string()))?;
    // HTTP/1.1 too, for gRPC-Web from browsers.
    let mut builder = Server::builder()
        .accept_http1(true)
        .http2_max_header_list_size(args.max_header_list_bytes);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (outbox, mail_workers) = match mailer {
        Some(mailer) => {
            let (outbox, workers) =
                Outbox::start(store.clone(), Arc::new(mailer), args.outbox_settings());
            (outbox, Some(workers))
        }
        None => (Outbox::off(), None),
    };
    let (changes, feed_task) = Changes::start(store.clone(), args.feed_settings());
    let (routes, sessions) = api(
        routes,
        &args,
        &store,
        &authenticator,
        tokens,
        passwords,
        outbox,
    );
    let routes = routes.add_service(
        ChangeServiceServer::new(ChangeApi {
            changes: Arc::clone(&changes),
        })
        .max_decoding_message_size(args.max_request_bytes as usize)
        .max_encoding_message_size(args.max_response_bytes as usize),
    );
    let result = builder
        .layer(console)
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(TelemetryLayer)
        .layer(deadline::DeadlineLayer)
        .layer(receipt::ReceiptLayer)
        .layer(limits::oversize_layer())
        .layer(AuthLayer::new(authenticator))
        .layer(ScreenLayer::new(
            request_messages,
            args.max_request_bytes as usize,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.await;
            // Open watches would hold the drain of open calls for ever.
            changes.close();
        })
        .await;
    sessions.finish_audits(AUDITS_AT_SHUTDOWN).await;
    let background = Background {
        health: health_task,
        usage: usage_task,
        retention: retention_task,
        cache: cache_task,
        metrics: metrics_task,
        mail: mail_workers,
        feed: feed_task,
    };
    background.stop(&store, &usage).await;
    tracing::info!("usermgmt stopped");
    result.map_err(ServeError::from)
}

/// The console of `--console-dir`, as found at start: said in the log, and
/// where to open it on standard output too, for whoever started the server.
fn console(args: &ServeArgs, address: SocketAddr, tls: bool) -> console::ConsoleLayer {
    let console = console::ConsoleLayer::at(&args.console_dir);
    if !console.is_built() {
        tracing::info!("{}", console.not_built_message());
        return console;
    }
    let scheme = if tls { "https" } else { "http" };
    let console_url = format!("{scheme}://{}/", browsable(address));
    tracing::info!(%console_url, "usermgmt console at {console_url}");
    say_on_stdout(&format!("usermgmt console at {console_url}"));
    console
}

/// `address`, or the loopback address on its port when it is the
/// unspecified one (`0.0.0.0`, `::`), which a browser cannot open.
fn browsable(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, address.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
        }
        _ => address,
    }
}

/// `line` on standard output; a closed standard output does not stop the
/// server (where `println!` would panic).
fn say_on_stdout(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!(%error, "cannot write to standard output");
    }
}

/// The mailer of the settings; None (said in the log) without an SMTP URL.
fn mailer(args: &ServeArgs) -> Result<Option<Mailer>, ServeError> {
    let mailer = Mailer::from_settings(&args.mail_settings())
        .map_err(|e| ServeError::Init(format!("mail: {e}")))?;
    if mailer.is_none() {
        tracing::info!(
            "mail is off (no --smtp-url): password reset links and invites are not mailed"
        );
    }
    Ok(mailer)
}

/// The store, on a migrated database, its secrets checked; with the task that
/// keeps its cache exact when the cache is on.
async fn open_store(
    args: &ServeArgs,
    keyring: Keyring,
) -> Result<(Store, Option<JoinHandle<()>>), ServeError> {
    let settings = args.pool_settings();
    let applied =
        prepare_database_on(&pool::connector(&args.database.database_url, &settings)?).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "ran migrations");
    }
    let statement_timeout = (args.db_statement_timeout_ms > 0)
        .then(|| Duration::from_millis(args.db_statement_timeout_ms));
    if statement_timeout.is_none_or(|t| t.as_millis() >= u128::from(args.db_call_timeout_ms)) {
        tracing::warn!(
            statement_timeout_ms = args.db_statement_timeout_ms,
            call_timeout_ms = args.db_call_timeout_ms,
            "the statement timeout is not below the call timeout: a slow statement's \
             connection is closed at the call timeout instead of the server cancelling it"
        );
    }
    let database_url = pool::with_statement_timeout(&args.database.database_url, statement_timeout);
    // One connector for the pool, the health check (through the pool) and
    // the cache listener: a host one of them found hung, all try last.
    let connector = pool::connector(&database_url, &settings)?;
    let pool = pool::build_pool_on(connector.clone(), &settings)?;
    let (store, cache_task) = if args.auth_cache {
        let cache = Arc::new(Cache::enabled(CacheLimits {
            max_age: Duration::from_millis(args.auth_cache_max_age_ms),
            max_bytes: args.auth_cache_max_bytes,
        }));
        let task = tokio::spawn(cache::maintain(cache.clone(), connector));
        (Store::with_cache(pool, cache), Some(task))
    } else {
        (Store::new(pool), None)
    };
    let store = store.with_keyring(keyring);
    check_secrets_at_rest(&store).await?;
    Ok((store, cache_task))
}

async fn access_tokens(args: &ServeArgs, store: &Store) -> Result<AccessTokens, ServeError> {
    AccessTokens::new(
        &signing_key(args, store).await?,
        args.token_settings(),
        args.verified_token_cache_max_bytes,
    )
    .map_err(|e| ServeError::Init(format!("access-token key: {e}")))
}

/// The health service, SERVING, and the task that keeps it in step with the
/// database.
async fn health(
    store: &Store,
    args: &ServeArgs,
) -> (
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    JoinHandle<()>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::Serving).await;
    let task = tokio::spawn(watch_database(
        store.clone(),
        reporter,
        Duration::from_millis(args.health_interval_ms),
    ));
    (service, task)
}

/// The Prometheus endpoint's task, when `--metrics-listen` asks for one.
async fn metrics(args: &ServeArgs, store: &Store) -> Result<Option<JoinHandle<()>>, ServeError> {
    let Some(address) = args.metrics_listen else {
        return Ok(None);
    };
    let listener = crate::metrics::bind(address)
        .await
        .map_err(ServeError::Init)?;
    tracing::info!(%address, "metrics on http://{address}/metrics");
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener,
        store.pool().clone(),
    ))))
}

/// How long a stopping server waits for the failed logins' audit events it
/// still writes.
const AUDITS_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// `routes` and the services of the contract, each with the size limits of
/// the settings; and the sessions' use case, whose audit writes a stopping
/// server waits for.
fn api(
    routes: Routes,
    args: &ServeArgs,
    store: &Store,
    authenticator: &Arc<Authenticator>,
    tokens: Arc<AccessTokens>,
    passwords: Passwords,
    outbox: Outbox,
) -> (Routes, Arc<Sessions>) {
    let login_limiter = Arc::new(LoginLimiter::new(store.clone(), args.login_limits()));
    let sessions = Arc::new(
        Sessions::new(
            store.clone(),
            Arc::clone(&tokens),
            passwords.clone(),
            Arc::clone(&login_limiter),
        )
        .with_lifetime(args.session_lifetime()),
    );
    let admin_settings = args.admin_settings();
    let invites = Arc::new(Invites::new(
        store.clone(),
        passwords.clone(),
        tokens,
        outbox.clone(),
        admin_settings.invite_ttl,
        args.session_lifetime(),
    ));
    let (max_request, max_response) = (
        args.max_request_bytes as usize,
        args.max_response_bytes as usize,
    );
    // The generated servers share no trait for their size limits.
    macro_rules! limited {
        ($($server:ident($api:expr)),* $(,)?) => {
            routes$(.add_service(
                $server::new($api)
                    .max_decoding_message_size(max_request)
                    .max_encoding_message_size(max_response),
            ))*
        };
    }
    let routes = limited!(
        AuthServiceServer(AuthApi {
            sessions: Arc::clone(&sessions),
            invites: Arc::clone(&invites),
            authorization: Authorization::new(store.clone(), Arc::clone(authenticator)),
            credentials: Credentials::new(
                store.clone(),
                passwords.clone(),
                login_limiter,
                outbox.clone(),
            ),
        }),
        ApiTokenServiceServer(ApiTokenApi {
            tokens: ApiTokens::new(store.clone()),
        }),
        SessionServiceServer(SessionApi {
            sessions: Arc::clone(&sessions)
        }),
        UserServiceServer(UserApi {
            users: Users::new(store.clone(), passwords, admin_settings),
            invites,
        }),
        AuditServiceServer(AuditApi {
            audit: AuditLog::new(store.clone()),
        }),
        RoleServiceServer(RoleApi),
        OrganisationServiceServer(OrganisationApi {
            organisations: Organisations::new(
                store.clone(),
                Duration::from_secs(args.confirmation_ttl_secs),
            ),
        }),
        PlaybackTokenServiceServer(PlaybackApi {
            tokens: Arc::new(PlaybackTokens::new(store.clone())),
            settings: args.playback_settings(),
        }),
    );
    (routes, sessions)
}

/// The tasks that run beside the server.
struct Background {
    health: JoinHandle<()>,
    usage: JoinHandle<()>,
    /// The change feed's retention (`store::feed_retention`).
    retention: JoinHandle<()>,
    cache: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    mail: Option<OutboxWorkers>,
    feed: JoinHandle<()>,
}

/// How long stopping waits for the mail workers to finish the mail in hand;
/// a mail cut off is sent by a replica after its claim lapses.
const MAIL_STOP_GRACE: Duration = Duration::from_secs(5);

impl Background {
    async fn stop(self, store: &Store, usage: &ApiTokenUsage) {
        self.health.abort();
        self.usage.abort();
        self.feed.abort();
        self.retention.abort();
        if let Some(mail) = self.mail {
            mail.stop(MAIL_STOP_GRACE).await;
        }
        // The uses noted since the last flush, before the pool goes.
        if let Err(error) = usage.flush(store).await {
            tracing::warn!(%error, "could not record the last uses of API tokens");
        }
        if let Some(task) = self.cache {
            task.abort();
            store.leave_cache().await;
        }
        if let Some(task) = self.metrics {
            task.abort();
        }
    }
}

/// Accepted connections with TCP_NODELAY (without it, Nagle's algorithm and
/// the client's delayed ACK stall some responses by ~40 ms), whose answers
/// h2 coalesces ([`Coalescing`]).
fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = Result<Coalescing, std::io::Error>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map_ok(Coalescing)
}

/// `routes` and reflection, which knows the contract, health, reflection
/// itself (both versions, so grpcurl lists them) and `google.rpc`, so that
/// clients can decode the error details.
fn reflection(routes: Routes) -> Result<Routes, ServeError> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// The access-token key: configured, or shared through the database.
async fn signing_key(args: &ServeArgs, store: &Store) -> Result<Vec<u8>, ServeError> {
    if let Some(secret) = &args.signing.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let mut candidate = [0u8; 64];
    getrandom::fill(&mut candidate).map_err(|e| ServeError::Init(format!("no randomness: {e}")))?;
    store
        .shared_secret(JWT_SECRET_NAME, &candidate)
        .await
        .map_err(|e| ServeError::Init(format!("cannot load the access-token key: {e}")))
}

/// Refuses to start when a stored secret does not open with the configured
/// key-encryption keys; says loudly when secrets are (or would be) stored
/// unencrypted.
async fn check_secrets_at_rest(store: &Store) -> Result<(), ServeError> {
    let keyring = store.keyring();
    let found = store.check_secrets_at_rest().await.map_err(|error| {
        let opening = keyring.opening_ids();
        let configured = if opening.is_empty() {
            "none".to_owned()
        } else {
            format!("{opening:?}")
        };
        let error = match error {
            crate::domain::DomainError::Internal(detail) => detail,
            other => other.to_string(),
        };
        ServeError::Init(format!(
            "{error} (key-encryption keys configured: {configured}; see \"Key-encryption key\" in docs/operations.md)"
        ))
    })?;
    match keyring.sealing_id() {
        None => tracing::warn!(
            "no key-encryption key (--key-encryption-key, USERMGMT_KEY_ENCRYPTION_KEY): \
             playback private keys, the generated access-token key and the tokens of queued \
             mail are stored unencrypted"
        ),
        Some(kek) => tracing::info!(%kek, "secrets at rest are sealed with key-encryption key"),
    }
    if found.plain > 0 || found.sealed_with_previous > 0 {
        tracing::warn!(
            plain = found.plain,
            sealed_with_previous = found.sealed_with_previous,
            "stored secrets not sealed with the current key-encryption key: \
             `usermgmt keys rewrap` seals them"
        );
    }
    Ok(())
}

/// The services whose health is reported, besides the server as a whole ("").
pub const SERVICE_NAMES: &[&str] = &[
    "",
    <AuthServiceServer<AuthApi> as NamedService>::NAME,
    <UserServiceServer<UserApi> as NamedService>::NAME,
    <RoleServiceServer<RoleApi> as NamedService>::NAME,
    <OrganisationServiceServer<OrganisationApi> as NamedService>::NAME,
    <AuditServiceServer<AuditApi> as NamedService>::NAME,
    <PlaybackTokenServiceServer<PlaybackApi> as NamedService>::NAME,
    <SessionServiceServer<SessionApi> as NamedService>::NAME,
    <ChangeServiceServer<ChangeApi> as NamedService>::NAME,
];

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}

/// Reports NOT_SERVING while the database does not answer, SERVING again once
/// it does. A check that gets no answer in time closes its connection (see
/// [`crate::store::Conn`]): the next check does not wait behind it.
async fn watch_database(store: Store, reporter: HealthReporter, interval: Duration) {
    let mut serving = true;
    loop {
        tokio::time::sleep(interval).await;
        let healthy = store
            .ping(interval.max(Duration::from_secs(1)))
            .await
            .is_ok();
        if healthy != serving {
            serving = healthy;
            if healthy {
                tracing::info!("database reachable again: SERVING");
                set_health(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_health(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}
