use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use usermgmt::config::{BootstrapArgs, Cli, Command, LogFormat};
use usermgmt::domain::{email::Email, user};
use usermgmt::server;
use usermgmt::store::{Store, pool};

fn main() -> ExitCode {
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
    }
}

/// Creates an organisation and its first nanoAdmin; prints their ids.
async fn bootstrap(args: BootstrapArgs) -> Result<(), String> {
    let name = user::validate_organisation_name("organisation", &args.organisation)
        .map_err(|e| e.to_string())?;
    let email = Email::parse("email", &args.email).map_err(|e| e.to_string())?;
    user::validate_password("password", args.password.expose()).map_err(|e| e.to_string())?;
    server::prepare_database(&args.database.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let store = Store::new(
        pool::build_pool(&args.database.database_url, &args.database.pool_settings())
            .map_err(|e| e.to_string())?,
    );
    let passwords = usermgmt::auth::passwords::Passwords::new(1)
        .await
        .map_err(|e| e.to_string())?;
    let hash = passwords
        .hash(args.password.expose())
        .await
        .map_err(|e| e.to_string())?;
    let admin = store
        .create_organisation_with_admin(&name, &email, &hash)
        .await
        .map_err(|e| e.to_string())?;
    let output = serde_json::json!({
        "organisation_id": admin.organisation_id.to_string(),
        "user_id": admin.id.to_string(),
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
