use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use usermgmt::auth::passwords::Passwords;
use usermgmt::config::{BootstrapArgs, Cli, Command, DatabaseArgs, LogFormat, ServiceCommand};
use usermgmt::store::{Store, pool};
use usermgmt::{provisioning, server};

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Err(reason) = init_logging(&cli) {
        eprintln!("error: {reason}");
        return ExitCode::from(2);
    }
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
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps memory bounded under a login storm. Each argon2id run allocates
/// ~19 MiB; glibc would otherwise raise its mmap threshold after the first
/// free and keep such blocks in its arenas (RSS grew past 200 MiB). Blocks of
/// 1 MiB or more are now always mapped and returned when freed, and the
/// number of arenas is small.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn init_logging(cli: &Cli) -> Result<(), String> {
    let filter = EnvFilter::try_new(&cli.log).map_err(|e| format!("invalid USERMGMT_LOG: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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
        Command::Seed(args) => {
            let store = open_store(&args.database).await?;
            let passwords = Passwords::new(1).await.map_err(|e| e.to_string())?;
            provisioning::seed_users(&store, &passwords, args.organisation_id, args.users)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Healthcheck(args) => {
            usermgmt::healthcheck::check(
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
    server::prepare_database(&database.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let pool = pool::build_pool(&database.database_url, &database.pool_settings())
        .map_err(|e| e.to_string())?;
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
