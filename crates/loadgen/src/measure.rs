//! One measurement: fresh connections, a warm-up, then the in-flight loop
//! recording each call's latency for a fixed time; and the rounds of a
//! scenario pooled into one result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use usermgmt_proto as proto;
use usermgmt_proto::auth_service_client::AuthServiceClient;

use crate::BoxError;
use crate::cli::Args;
use crate::connect::open_channels;
use crate::latency::Latencies;
use crate::scenarios::{LOGIN_STORM, Outcome, Scenario};
use crate::session::Session;
use crate::usage::{CpuSample, CpuUse, user_cache_counts};

/// What one worker saw during the measured window.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Latency of each OK call.
    pub latencies: Latencies,
    /// Latency of each call of the OK iterations, per [`Scenario::parts`].
    pub parts: Vec<Latencies>,
    /// Writes that changed nothing.
    pub unchanged: u64,
    pub errors: Errors,
}

/// Errors by status code: how many, and the first message seen.
#[derive(Debug, Default)]
pub struct Errors(pub BTreeMap<i32, (u64, String)>);

impl Errors {
    pub fn record(&mut self, status: &Status) {
        let entry = self
            .0
            .entry(status.code() as i32)
            .or_insert_with(|| (0, status.message().to_owned()));
        entry.0 += 1;
    }

    pub fn merge(&mut self, other: Errors) {
        for (code, (count, message)) in other.0 {
            self.0.entry(code).or_insert((0, message)).0 += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }

    pub fn describe(&self) -> Vec<String> {
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
pub struct Round {
    /// Latency of each OK call.
    pub latencies: Latencies,
    pub parts: Vec<Latencies>,
    pub unchanged: u64,
    pub errors: Errors,
    pub seconds: f64,
    pub cpu: Option<CpuUse>,
    /// The users cache's hits and misses during the measured window.
    pub user_cache: Option<(u64, u64)>,
}

/// The result of one scenario at one in-flight level, all rounds pooled.
#[derive(Debug)]
pub struct Measurement {
    pub scenario: Scenario,
    pub in_flight: u32,
    pub seconds: f64,
    pub ok: u64,
    pub errors: Errors,
    pub unchanged: u64,
    pub req_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Per call of a many-call iteration: name, p50 and p99 in µs.
    pub parts: Vec<(&'static str, f64, f64)>,
    pub cpu: Option<CpuUse>,
    /// Hits of the server's users cache per lookup, when its metrics are read.
    pub user_cache_hit_rate: Option<f64>,
}

impl Measurement {
    pub fn pooled(
        scenario: Scenario,
        in_flight: u32,
        rounds: Vec<Round>,
    ) -> Result<Measurement, BoxError> {
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
        let mut latencies = Latencies::default();
        let mut parts: Vec<Latencies> = scenario
            .parts()
            .iter()
            .map(|_| Latencies::default())
            .collect();
        let mut errors = Errors::default();
        let mut unchanged = 0;
        for round in rounds {
            latencies.merge(&round.latencies)?;
            for (pooled, part) in parts.iter_mut().zip(&round.parts) {
                pooled.merge(part)?;
            }
            errors.merge(round.errors);
            unchanged += round.unchanged;
        }
        let ok = latencies.count();
        let parts = scenario
            .parts()
            .iter()
            .zip(parts)
            .map(|(&name, part)| (name, part.quantile_us(0.50), part.quantile_us(0.99)))
            .collect();
        Ok(Measurement {
            scenario,
            in_flight,
            seconds,
            ok,
            errors,
            unchanged,
            req_per_s: ok as f64 / seconds,
            p50_us: latencies.quantile_us(0.50),
            p99_us: latencies.quantile_us(0.99),
            max_us: latencies.max_us(),
            parts,
            cpu,
            user_cache_hit_rate,
        })
    }
}

/// Calls WhoAmI once as each of the `--users` users before measuring, so
/// that the measurements see the server with every one of them active.
pub async fn warm_every_user(
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

/// Logs in back to back until `end` (the storm of `authorize_during_logins`).
pub async fn log_in_until(channel: Channel, session: Arc<Session>, end: Instant) {
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

/// Runs one scenario at one in-flight level on fresh connections, once.
pub async fn measure(
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
    let mut latencies = Latencies::default();
    let mut parts: Vec<Latencies> = scenario
        .parts()
        .iter()
        .map(|_| Latencies::default())
        .collect();
    let mut unchanged = 0;
    let mut errors = Errors::default();
    for handle in workers {
        let stats = handle
            .await
            .map_err(|e| format!("a {} worker failed: {e}", scenario.name()))?;
        latencies.merge(&stats.latencies)?;
        for (pooled, part) in parts.iter_mut().zip(&stats.parts) {
            pooled.merge(part)?;
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
pub async fn worker(
    scenario: Scenario,
    channel: Channel,
    session: Arc<Session>,
    warmup_end: Instant,
    end: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats {
        parts: scenario
            .parts()
            .iter()
            .map(|_| Latencies::default())
            .collect(),
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
                stats.latencies.record(nanos(start.elapsed()));
                if let Outcome::Parts(parts) = outcome {
                    for (pooled, part) in stats.parts.iter_mut().zip(parts) {
                        pooled.record(part);
                    }
                }
            }
            Err(status) => stats.errors.record(&status),
        }
    }
    stats
}

pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
