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
//! The same-organisation write scenarios (`issue_playback`, `login` and their
//! `_orgs` forms over `--organisations` organisations) need several
//! organisations with known users: `scripts/bench-writes.sh` seeds them and
//! runs them.
//!
//! Adding a scenario is one variant of [`Scenario`] and one arm of
//! [`Scenario::call`], in `scenarios.rs`. The other modules: `cli` (the
//! flags), `session` (signing in and what the scenarios prepare),
//! `organisations` (what the same-organisation write scenarios prepare), `connect`
//! (loopback connections), `measure` (rounds, the in-flight loop, timing),
//! `latency` (percentiles, from an HdrHistogram), `usage` (the server's CPU,
//! RSS and cache hits), `report` (the output) and `tokens` (the tokens of
//! many users, from `usermgmt bench-tokens`).

mod cli;
mod connect;
mod latency;
mod measure;
mod organisations;
mod report;
mod scenarios;
mod session;
mod tokens;
mod usage;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;

use crate::cli::{Args, WriteCredential, dedup, ordered_scenarios};
use crate::connect::{error_chain, loopback_endpoint, wait_serving};
use crate::measure::{Measurement, Round, measure, warm_every_user};
use crate::report::{print_json, print_table};
use crate::scenarios::Scenario;
use crate::session::login;

type BoxError = Box<dyn Error + Send + Sync>;

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
            .collect::<Result<_, _>>()?;
        print_table(&args, in_flight, &results);
        if args.json {
            print_json(&args, &results);
        }
    }
    Ok(())
}
