//! How long after its commit does a change reach a watcher on the OTHER
//! replica, compared with how long a write waits for the replicas' caches
//! (the settle) in the same run? scripts/feed-latency.sh runs it against two
//! `usermgmt serve` replicas of one database.
//!
//! A watch (WatchChanges from now) is opened on the second replica; writes
//! go to the first at a steady rate, alternating a write that settles
//! (UpdateOrganisation, a rename) and one that does not (IssuePlaybackToken).
//! Every change carries its commit time (the database's clock as the change
//! takes its sequence, its last step before the commit), and every write's
//! answer its change's sequence, so each write is measured from the same
//! instant twice:
//!
//! - delivery: the change's arrival on the watch minus its commit time. The
//!   commit time is taken just before the commit, so this includes the
//!   commit itself (its WAL flush): an upper bound of commit to arrival;
//! - delivery after the answer, for the writes that do not settle: arrival
//!   minus the write's answer, which leaves right after the commit; so a
//!   lower bound of commit to arrival (short of the answer's way back);
//! - answer: the write's answer minus its commit time. A write that does not
//!   settle answers at once (the rest of its transaction, the commit, the
//!   answer's way back); one that settles answers after the settle too. The
//!   settle of a settling write is its answer minus the median answer of the
//!   writes that do not settle.
//!
//! All are differences of the one host's wall clock (the database and this
//! tool on the same machine): loopback only. Every call is bounded in time.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};
use usermgmt_proto::change_service_client::ChangeServiceClient;
use usermgmt_proto::organisation_service_client::OrganisationServiceClient;
use usermgmt_proto::playback_scope::Scope;
use usermgmt_proto::playback_token_service_client::PlaybackTokenServiceClient;
use usermgmt_proto::watch_changes_response::Event;
use usermgmt_proto::{
    ChangeStart, IssuePlaybackTokenRequest, LoginRequest, Organisation, PlaybackScope, StreamList,
    UpdateOrganisationRequest, WatchChangesRequest,
};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Change feed delivery latency on the other replica, against the settle time")]
struct Args {
    /// The replica the writes go to, on loopback: http://127.0.0.1:PORT.
    #[arg(long)]
    writes: String,
    /// The other replica, where the watch is.
    #[arg(long)]
    watch: String,
    /// A nanoAdmin of the organisation (it writes and watches).
    #[arg(long)]
    email: String,
    #[arg(long)]
    password: String,
    /// Writes per second, sent at a steady pace whatever their answers.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rate: u32,
    /// Seconds of measured writes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Seconds of writes first, not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=60))]
    warm_up: u32,
    /// Print one JSON object rather than a line of text.
    #[arg(long)]
    json: bool,
}

/// How long any one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Settles,
    DoesNotSettle,
}

/// One write: its kind, its change's sequence, when its answer arrived.
struct Write {
    kind: Kind,
    sequence: i64,
    answered: SystemTime,
    counted: bool,
}

/// One delivered change: its commit time and when it arrived.
#[derive(Clone, Copy)]
struct Delivered {
    committed: SystemTime,
    arrived: SystemTime,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let writes = connect(&args.writes, Some(CALL_TIMEOUT)).await?;
    // No per-call timeout on the watch's channel: the stream lasts the run.
    let watching = connect(&args.watch, None).await?;
    let token = usermgmt_proto::auth_service_client::AuthServiceClient::new(writes.clone())
        .login(LoginRequest {
            email: args.email.clone(),
            password: args.password.clone(),
            organisation_id: String::new(),
        })
        .await
        .map_err(|status| format!("login: {:?} {}", status.code(), status.message()))?
        .into_inner()
        .access_token;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    // Playback tokens are issued in secure organisations only.
    OrganisationServiceClient::new(writes.clone())
        .update_organisation(bearer.req(update(
            Organisation {
                secure_playback: true,
                ..Default::default()
            },
            "secure_playback",
        )))
        .await
        .map_err(|status| format!("secure playback: {status:?}"))?;

    let delivered: Arc<Mutex<HashMap<i64, Delivered>>> = Arc::default();
    let mut stream = ChangeServiceClient::new(watching)
        .watch_changes(bearer.req(WatchChangesRequest {
            start: ChangeStart::Now as i32,
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .map_err(|status| format!("watch: {status:?}"))?
        .into_inner();
    // The first heartbeat: the watch has taken its place at the head, so
    // every write from here on reaches it.
    loop {
        let message = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .map_err(|_| "no heartbeat within 10 s")??
            .ok_or("the watch ended")?;
        if matches!(message.event, Some(Event::Heartbeat(_))) {
            break;
        }
    }
    let reader = tokio::spawn({
        let delivered = Arc::clone(&delivered);
        async move {
            while let Ok(Some(message)) = stream.message().await {
                let arrived = SystemTime::now();
                if let Some(Event::Change(change)) = message.event {
                    let committed = change.commit_time.map(system_time).unwrap_or(UNIX_EPOCH);
                    delivered
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(change.sequence, Delivered { committed, arrived });
                }
            }
        }
    });

    let total = u64::from(args.rate) * u64::from(args.warm_up + args.seconds);
    let counted_from = u64::from(args.rate) * u64::from(args.warm_up);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / args.rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(usize::try_from(total)?);
    for index in 0..total {
        pace.tick().await;
        let kind = if index % 2 == 0 {
            Kind::Settles
        } else {
            Kind::DoesNotSettle
        };
        let (writes, bearer) = (writes.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            let answer = match kind {
                Kind::Settles => OrganisationServiceClient::new(writes)
                    .update_organisation(bearer.req(update(
                        Organisation {
                            name: format!("Feed latency {index}"),
                            ..Default::default()
                        },
                        "name",
                    )))
                    .await
                    .map(|answer| answer.metadata().clone()),
                Kind::DoesNotSettle => PlaybackTokenServiceClient::new(writes)
                    .issue_playback_token(bearer.req(IssuePlaybackTokenRequest {
                        scope: Some(PlaybackScope {
                            scope: Some(Scope::Streams(StreamList {
                                names: vec!["live".into()],
                            })),
                        }),
                        ..Default::default()
                    }))
                    .await
                    .map(|answer| answer.metadata().clone()),
            };
            let answered = SystemTime::now();
            let metadata = answer.map_err(|status| format!("a write: {status:?}"))?;
            let sequence = metadata
                .get(usermgmt_proto::metadata::CHANGE_SEQUENCE)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .ok_or("a write's answer without its change's sequence")?;
            Ok::<_, BoxError>(Write {
                kind,
                sequence,
                answered,
                counted: index >= counted_from,
            })
        }));
    }
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await??);
    }
    // Every write's change reaches the watch (or the run fails).
    let last = done.iter().map(|write| write.sequence).max().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    loop {
        let arrived = {
            let delivered = delivered.lock().unwrap_or_else(|e| e.into_inner());
            done.iter()
                .all(|write| delivered.contains_key(&write.sequence))
        };
        if arrived {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("changes up to {last} did not all reach the watch").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.abort();

    let delivered = delivered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ms = |later: SystemTime, earlier: SystemTime| match later.duration_since(earlier) {
        Ok(after) => after.as_secs_f64() * 1000.0,
        Err(before) => -before.duration().as_secs_f64() * 1000.0,
    };
    let mut delivery = Vec::new();
    let mut after_answer = Vec::new();
    let mut answer_settling = Vec::new();
    let mut answer_plain = Vec::new();
    for write in done.iter().filter(|write| write.counted) {
        let change = delivered[&write.sequence];
        delivery.push(ms(change.arrived, change.committed));
        let answer = ms(write.answered, change.committed);
        match write.kind {
            Kind::Settles => answer_settling.push(answer),
            Kind::DoesNotSettle => {
                answer_plain.push(answer);
                after_answer.push(ms(change.arrived, write.answered));
            }
        }
    }
    let plain = percentile(&mut answer_plain, 0.5);
    let mut settle: Vec<f64> = answer_settling.iter().map(|a| a - plain).collect();
    let report = Report {
        writes: delivery.len(),
        rate: args.rate,
        delivery_p50: percentile(&mut delivery, 0.5),
        delivery_p99: percentile(&mut delivery, 0.99),
        after_answer_p50: percentile(&mut after_answer, 0.5),
        after_answer_p99: percentile(&mut after_answer, 0.99),
        settle_p50: percentile(&mut settle, 0.5),
        settle_p99: percentile(&mut settle, 0.99),
        answer_settling_p50: percentile(&mut answer_settling, 0.5),
        answer_plain_p50: plain,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.line());
    }
    Ok(())
}

/// The access token every call carries.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(usermgmt_proto::metadata::BEARER, self.0.clone());
        request
    }
}

/// An UpdateOrganisation request changing `path` of the caller's
/// organisation to what `organisation` says.
fn update(organisation: Organisation, path: &str) -> UpdateOrganisationRequest {
    UpdateOrganisationRequest {
        organisation: Some(organisation),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![path.into()],
        }),
    }
}

struct Report {
    writes: usize,
    rate: u32,
    delivery_p50: f64,
    delivery_p99: f64,
    after_answer_p50: f64,
    after_answer_p99: f64,
    settle_p50: f64,
    settle_p99: f64,
    answer_settling_p50: f64,
    answer_plain_p50: f64,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "writes": self.writes,
            "rate": self.rate,
            "delivery_p50_ms": self.delivery_p50,
            "delivery_p99_ms": self.delivery_p99,
            "after_answer_p50_ms": self.after_answer_p50,
            "after_answer_p99_ms": self.after_answer_p99,
            "settle_p50_ms": self.settle_p50,
            "settle_p99_ms": self.settle_p99,
            "ratio_p50": self.delivery_p50 / self.settle_p50,
            "ratio_p99": self.delivery_p99 / self.settle_p99,
            "after_answer_ratio_p50": self.after_answer_p50 / self.settle_p50,
            "after_answer_ratio_p99": self.after_answer_p99 / self.settle_p99,
            "answer_settling_p50_ms": self.answer_settling_p50,
            "answer_plain_p50_ms": self.answer_plain_p50,
        })
    }

    fn line(&self) -> String {
        format!(
            "{} writes at {}/s · delivery on the other replica (commit time → arrival) p50 \
             {:.2} ms, p99 {:.2} ms; after the write's answer p50 {:.2} ms, p99 {:.2} ms · \
             settle p50 {:.2} ms, p99 {:.2} ms · delivery/settle p50 {:.2}, p99 {:.2} · answer \
             after commit time: settling p50 {:.2} ms, not settling p50 {:.2} ms",
            self.writes,
            self.rate,
            self.delivery_p50,
            self.delivery_p99,
            self.after_answer_p50,
            self.after_answer_p99,
            self.settle_p50,
            self.settle_p99,
            self.delivery_p50 / self.settle_p50,
            self.delivery_p99 / self.settle_p99,
            self.answer_settling_p50,
            self.answer_plain_p50,
        )
    }
}

/// The `q` quantile of `values` (nearest rank); 0 when there are none.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn system_time(at: prost_types::Timestamp) -> SystemTime {
    let seconds = u64::try_from(at.seconds).unwrap_or(0);
    let nanos = u32::try_from(at.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

/// A channel to `addr`, which must be plain HTTP on loopback.
async fn connect(addr: &str, timeout: Option<Duration>) -> Result<Channel, BoxError> {
    let uri: http::Uri = addr.parse()?;
    let loopback = uri.scheme_str() == Some("http")
        && uri.host().is_some_and(|host| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    if !loopback {
        return Err(format!("{addr} must be http:// on loopback").into());
    }
    let mut endpoint = Endpoint::from_shared(addr.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(endpoint.connect().await?)
}
