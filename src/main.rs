use std::process::ExitCode;

use clap::Parser as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;

use usermgmt::app::{bench, provisioning};
use usermgmt::auth::passwords::Passwords;
use usermgmt::config::{
    BenchTokensArgs, BootstrapArgs, Cli, Command, DatabaseArgs, KeysCommand, LogFormat, RewrapArgs,
    ServiceCommand,
};
use usermgmt::server;
use usermgmt::store::{Store, pool};

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's gRPC client needs the runtime.
    let tracing = match runtime.block_on(async { init_logging(&cli) }) {
        Ok(tracing) => tracing,
        Err(reason) => {
            eprintln!("error: {reason}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    if let Some(provider) = tracing {
        // Sends the spans still buffered.
        let _ = provider.shutdown();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Logs to stderr (text or JSON) and, when an OTLP endpoint is set, exports
/// the spans too. Returns the trace provider to shut down at exit.
fn init_logging(cli: &Cli) -> Result<Option<SdkTracerProvider>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_new(&cli.log).map_err(|e| format!("invalid USERMGMT_LOG: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match cli.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let provider = cli
        .otel_endpoint
        .as_deref()
        .map(otel_provider)
        .transpose()?;
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("usermgmt")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))?;
    Ok(provider)
}

/// A batching OTLP/gRPC trace exporter to `endpoint`.
fn otel_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("invalid USERMGMT_OTEL_ENDPOINT: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("usermgmt")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Says on standard output where the server listens: the port the system
/// chose when `--listen` gave port 0, for whoever started the process. A
/// closed standard output does not stop the server.
fn announce_address(listener: &tokio::net::TcpListener) -> Result<(), String> {
    use std::io::Write as _;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "listening on {address}").and_then(|()| stdout.flush()) {
        tracing::warn!(%error, "cannot write the listening address to standard output");
    }
    Ok(())
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => {
            args.validate()?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
            announce_address(&listener)?;
            server::serve(args, listener, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate(args) => {
            let applied = server::prepare_database(&args.database_url)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(count = applied.len(), ?applied, "migrations done");
            Ok(())
        }
        Command::Bootstrap(args) => bootstrap(args).await,
        Command::Keys(KeysCommand::Rewrap(args)) => rewrap(args).await,
        Command::Seed(args) => {
            let store = open_store(&args.database).await?;
            let passwords = Passwords::new(1).await.map_err(|e| e.to_string())?;
            provisioning::seed_users(
                &store,
                &passwords,
                args.organisation_id,
                args.users,
                args.organisations,
            )
            .await
            .map_err(|e| e.to_string())
        }
        Command::Healthcheck(args) => {
            server::healthcheck::check(
                &args.url,
                &args.service,
                std::time::Duration::from_millis(args.timeout_ms),
            )
            .await
        }
        Command::Service(ServiceCommand::Register(args)) => {
            let store = open_store(&args.database).await?;
            let key = provisioning::register_service(&store, &args.name)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({ "name": args.name.trim(), "service_key": key })
            );
            Ok(())
        }
        Command::BenchTokens(args) => bench_tokens(args).await,
        Command::Service(ServiceCommand::Revoke(args)) => {
            let store = open_store(&args.database).await?;
            store
                .revoke_service(args.name.trim())
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// The database, created and migrated when needed.
async fn open_store(database: &DatabaseArgs) -> Result<Store, String> {
    let settings = database.pool_settings();
    let connector =
        pool::connector(&database.database_url, &settings).map_err(|e| e.to_string())?;
    server::prepare_database_on(&connector)
        .await
        .map_err(|e| e.to_string())?;
    let pool = pool::build_pool_on(connector, &settings).map_err(|e| e.to_string())?;
    Ok(Store::new(pool))
}

/// Creates an organisation and its first nanoAdmin; prints their ids and
/// the organisation API key.
async fn bootstrap(args: BootstrapArgs) -> Result<(), String> {
    let store = open_store(&args.database).await?;
    let passwords = Passwords::new(1).await.map_err(|e| e.to_string())?;
    let created = provisioning::bootstrap(
        &store,
        &passwords,
        &args.organisation,
        &args.email,
        args.password.expose(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let output = serde_json::json!({
        "organisation_id": created.organisation_id.to_string(),
        "user_id": created.user_id.to_string(),
        "api_key": created.api_key,
    });
    println!("{output}");
    Ok(())
}

/// Prints access tokens of many users for a benchmark (see app::bench).
async fn bench_tokens(args: BenchTokensArgs) -> Result<(), String> {
    let store = open_store(&args.database)
        .await?
        .with_keyring(args.signing.keys.keyring()?);
    let request = bench::BenchTokenRequest {
        users: args.users,
        organisation_id: args.organisation_id,
        jwt_secret: args
            .signing
            .jwt_secret
            .as_ref()
            .map(|s| s.expose().as_bytes()),
        stored_key_name: server::JWT_SECRET_NAME,
        issuer: args.signing.token_issuer,
        audience: args.signing.token_audience,
    };
    let tokens = bench::bench_tokens(&store, &request)
        .await
        .map_err(|e| e.to_string())?;
    bench::write_json_lines(&tokens, std::io::stdout().lock()).map_err(|e| e.to_string())
}

/// Re-seals every stored secret with the configured key-encryption key.
async fn rewrap(args: RewrapArgs) -> Result<(), String> {
    let keyring = args.keys.keyring()?;
    let Some(kek) = keyring.sealing_id() else {
        return Err(
            "keys rewrap needs the key to seal with: --key-encryption-key or \
             USERMGMT_KEY_ENCRYPTION_KEY"
                .into(),
        );
    };
    let store = open_store(&args.database).await?.with_keyring(keyring);
    let done = store.rewrap_secrets().await.map_err(|error| match error {
        usermgmt::domain::DomainError::Internal(detail) => detail,
        other => other.to_string(),
    })?;
    tracing::info!(%kek, sealed = done.sealed, unchanged = done.unchanged, "secrets re-sealed");
    println!(
        "{}",
        serde_json::json!({
            "key_encryption_key": kek.to_string(),
            "sealed": done.sealed,
            "unchanged": done.unchanged,
        })
    );
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
