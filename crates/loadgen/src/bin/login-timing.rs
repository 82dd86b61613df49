//! Does a failed login take longer for an email that has an account? The
//! review's measurement, kept as a tool (scripts/login-timing.sh runs it on
//! a fresh server with the login limits off): `--pairs` pairs of logins with
//! a wrong password, one for an email that exists and one for an email that
//! does not, their order alternating from pair to pair; then a sign test on
//! the pairs' differences. |z| above about 3 means the two kinds of email
//! are told apart by the answer's time; below 2, they are not (at this
//! number of pairs).
//!
//! Loopback only; every call bounded in time.

use std::error::Error;
use std::time::{Duration, Instant};

use clap::Parser;
use tonic::Code;
use tonic::transport::Endpoint;
use usermgmt_proto::LoginRequest;
use usermgmt_proto::auth_service_client::AuthServiceClient;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Sign test: wrong-password login time, existing vs unknown email")]
struct Args {
    /// The server, on loopback: http://127.0.0.1:PORT.
    #[arg(long)]
    addr: String,
    /// An email that has an account (the password sent is wrong).
    #[arg(long)]
    email: String,
    /// Pairs of logins to time.
    #[arg(long, default_value_t = 200)]
    pairs: u32,
    /// Logins of each kind sent first and not counted.
    #[arg(long, default_value_t = 20)]
    warm_up: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let uri: http::Uri = args.addr.parse()?;
    let loopback = uri.scheme_str() == Some("http")
        && uri.host().is_some_and(|host| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    if !loopback {
        return Err(format!("--addr {} must be http:// on loopback", args.addr).into());
    }
    let channel = Endpoint::from_shared(args.addr.clone())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut auth = AuthServiceClient::new(channel);
    let unknown = format!("nobody-{}@timing.example.com", std::process::id());
    let mut time = async |email: &str| -> Result<Duration, BoxError> {
        let request = LoginRequest {
            email: email.to_owned(),
            password: "not the password of anyone".into(),
            organisation_id: String::new(),
        };
        let start = Instant::now();
        let answer = auth.login(request).await;
        let elapsed = start.elapsed();
        match answer {
            Err(status) if status.code() == Code::Unauthenticated => Ok(elapsed),
            Err(status) => Err(format!(
                "{email}: {:?} {} (are the login limits off?)",
                status.code(),
                status.message()
            )
            .into()),
            Ok(_) => Err(format!("{email}: the wrong password was accepted").into()),
        }
    };
    for _ in 0..args.warm_up {
        time(&args.email).await?;
        time(&unknown).await?;
    }
    let mut differences = Vec::with_capacity(args.pairs as usize);
    for pair in 0..args.pairs {
        let (existing, missing) = if pair % 2 == 0 {
            let existing = time(&args.email).await?;
            (existing, time(&unknown).await?)
        } else {
            let missing = time(&unknown).await?;
            (time(&args.email).await?, missing)
        };
        differences.push(existing.as_secs_f64() - missing.as_secs_f64());
    }
    let slower = differences.iter().filter(|d| **d > 0.0).count() as f64;
    let faster = differences.iter().filter(|d| **d < 0.0).count() as f64;
    let counted = slower + faster;
    let z = if counted > 0.0 {
        (slower - counted / 2.0) / (counted / 4.0).sqrt()
    } else {
        0.0
    };
    differences.sort_by(f64::total_cmp);
    let median_ms = differences
        .get(differences.len() / 2)
        .copied()
        .unwrap_or(0.0)
        * 1000.0;
    println!(
        "pairs {} · existing email slower in {slower} · faster in {faster} · \
         median difference {median_ms:+.3} ms · sign test z = {z:+.2}",
        args.pairs
    );
    Ok(())
}
