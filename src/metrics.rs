//! Prometheus metrics, served as text on a port of their own (`/metrics`):
//! calls by service, method and code with their latency, the per-call
//! check's outcomes, the connection pool and database errors.
//!
//! The metrics live in one process-wide registry, so the tower layers record
//! into it without being handed anything; the store's own counts are read
//! from it when the metrics are rendered (the store depends on nothing here).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::domain::DomainError;
use crate::store::PgPool;
use crate::store::stats::{self, CacheKind, ConnectionClosed, DatabaseError, HostPassedOver};

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    authorization: IntCounterVec,
    database_errors: IntCounterVec,
    connections_closed: IntCounterVec,
    hosts_passed_over: IntCounterVec,
    pool_size: IntGauge,
    pool_available: IntGauge,
    pool_in_use: IntGauge,
    pool_max_size: IntGauge,
    pool_waiting: IntGauge,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
    cache_evictions: IntCounterVec,
    cache_entries: IntGaugeVec,
    cache_invalidations: IntCounterVec,
    logins: IntCounterVec,
    failed_login_audits: IntCounterVec,
    mails: IntCounterVec,
    mail_queued: IntCounterVec,
    mail_sent: IntCounterVec,
    mail_retried: IntCounterVec,
    mail_given_up: IntCounterVec,
    mail_outbox_depth: IntGauge,
    change_watches: IntGauge,
    change_watch_lag: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "usermgmt_grpc_requests_total",
                "gRPC calls finished, by service, method and status code.",
            ),
            &["service", "method", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "usermgmt_grpc_request_duration_seconds",
                "How long gRPC calls took until their response headers, by service and method.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["service", "method"],
        )
        .expect("valid metric");
        let authorization = IntCounterVec::new(
            Opts::new(
                "usermgmt_authorization_total",
                "Outcomes of the per-call check: allowed (reason: who the caller is) or denied \
                 (reason: why).",
            ),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let database_errors = IntCounterVec::new(
            Opts::new(
                "usermgmt_database_errors_total",
                "Database failures, by kind (pool_timeout, connection_lost, conflict, other).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let per_mail_kind = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["kind"]).expect("valid metric")
        };
        let per_cache = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["cache"]).expect("valid metric")
        };
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "usermgmt_db_connections_closed_total",
                "Pooled database connections the service closed itself, by reason (deadline, \
                 abandoned, broken, host_hung).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let hosts_passed_over = IntCounterVec::new(
            Opts::new(
                "usermgmt_db_hosts_passed_over_total",
                "Database hosts passed over for the next one or tried last, by reason \
                 (handshake_timeout, hung).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let metrics = Metrics {
            pool_size: gauge(
                "usermgmt_db_pool_connections",
                "Database connections open in the pool.",
            ),
            pool_available: gauge(
                "usermgmt_db_pool_connections_idle",
                "Open database connections that are idle.",
            ),
            pool_in_use: gauge(
                "usermgmt_db_pool_connections_in_use",
                "Database connections in use by calls.",
            ),
            pool_max_size: gauge(
                "usermgmt_db_pool_connections_max",
                "The pool's largest number of connections (--db-pool-size).",
            ),
            pool_waiting: gauge(
                "usermgmt_db_pool_waiting",
                "Calls waiting for a free database connection.",
            ),
            cache_hits: per_cache(
                "usermgmt_cache_hits_total",
                "Lookups a replica's cache answered, by cache.",
            ),
            cache_misses: per_cache(
                "usermgmt_cache_misses_total",
                "Lookups a replica's cache could not answer (absent, retired, too old or \
                 untrusted), by cache.",
            ),
            cache_evictions: per_cache(
                "usermgmt_cache_evictions_total",
                "Entries a cache dropped to stay within its memory bound, by cache.",
            ),
            cache_entries: IntGaugeVec::new(
                Opts::new(
                    "usermgmt_cache_entries",
                    "Entries a cache holds (as of its last insertion or clearing), by cache.",
                ),
                &["cache"],
            )
            .expect("valid metric"),
            cache_invalidations: IntCounterVec::new(
                Opts::new(
                    "usermgmt_cache_invalidations_total",
                    "Notifications that retired cache entries, by scope (organisation, services, \
                     all).",
                ),
                &["scope"],
            )
            .expect("valid metric"),
            logins: IntCounterVec::new(
                Opts::new(
                    "usermgmt_logins_total",
                    "Password logins by outcome (succeeded, wrong_password, unknown_email).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            failed_login_audits: IntCounterVec::new(
                Opts::new(
                    "usermgmt_failed_login_audits_total",
                    "Audit events of wrong passwords (login.failed), written after the answer, by \
                     outcome (written, user_gone, failed, lost).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            mails: IntCounterVec::new(
                Opts::new(
                    "usermgmt_mail_jobs_total",
                    "What became of the requests for mail, by kind (password_reset, invite) \
                     and outcome (sent, no_such_user, suspended, coalesced, withdrawn, mail_off).",
                ),
                &["kind", "outcome"],
            )
            .expect("valid metric"),
            mail_queued: per_mail_kind(
                "usermgmt_mail_queued_total",
                "Rows written to the mail outbox, by kind (reset_request, password_reset, invite).",
            ),
            mail_sent: per_mail_kind(
                "usermgmt_mail_sent_total",
                "Mails the SMTP server accepted, by kind (password_reset, invite).",
            ),
            mail_retried: per_mail_kind(
                "usermgmt_mail_retried_total",
                "Failed attempts of the mail outbox put back for a later retry, by kind.",
            ),
            mail_given_up: IntCounterVec::new(
                Opts::new(
                    "usermgmt_mail_given_up_total",
                    "Mails given up, by kind and reason (expired: their link would be useless; \
                     undeliverable: they can never be sent).",
                ),
                &["kind", "reason"],
            )
            .expect("valid metric"),
            mail_outbox_depth: gauge(
                "usermgmt_mail_outbox_depth",
                "Rows in the mail outbox (every replica's), as of this replica's last count.",
            ),
            change_watches: gauge(
                "usermgmt_change_watches",
                "Change feed watches open on this replica.",
            ),
            change_watch_lag: gauge(
                "usermgmt_change_watch_lag",
                "The lag of this replica's change feed watch furthest behind: its \
                 organisation's head minus the sequence it has been sent up to.",
            ),
            registry,
            requests,
            latency,
            authorization,
            database_errors,
            connections_closed,
            hosts_passed_over,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 26] = [
            Box::new(metrics.change_watches.clone()),
            Box::new(metrics.change_watch_lag.clone()),
            Box::new(metrics.logins.clone()),
            Box::new(metrics.failed_login_audits.clone()),
            Box::new(metrics.mails.clone()),
            Box::new(metrics.mail_queued.clone()),
            Box::new(metrics.mail_sent.clone()),
            Box::new(metrics.mail_retried.clone()),
            Box::new(metrics.mail_given_up.clone()),
            Box::new(metrics.mail_outbox_depth.clone()),
            Box::new(metrics.cache_hits.clone()),
            Box::new(metrics.cache_misses.clone()),
            Box::new(metrics.cache_evictions.clone()),
            Box::new(metrics.cache_entries.clone()),
            Box::new(metrics.cache_invalidations.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.latency.clone()),
            Box::new(metrics.authorization.clone()),
            Box::new(metrics.database_errors.clone()),
            Box::new(metrics.connections_closed.clone()),
            Box::new(metrics.hosts_passed_over.clone()),
            Box::new(metrics.pool_size.clone()),
            Box::new(metrics.pool_available.clone()),
            Box::new(metrics.pool_in_use.clone()),
            Box::new(metrics.pool_max_size.clone()),
            Box::new(metrics.pool_waiting.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Known kinds start at zero, so that the family is there (and
        // rate() works) before the first error.
        for kind in DatabaseError::ALL {
            metrics.database_errors.with_label_values(&[kind.label()]);
        }
        for outcome in ["failed", "lost"] {
            metrics.failed_login_audits.with_label_values(&[outcome]);
        }
        metrics
    }

    /// A finished call of `path` (`/package.Service/Method`).
    pub fn record_call(&self, path: &str, code: tonic::Code, elapsed: Duration) {
        let (service, method) = split_path(path);
        self.requests
            .with_label_values(&[service, method, code_name(code)])
            .inc();
        self.latency
            .with_label_values(&[service, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The per-call check admitted a call; `caller` is `anonymous`, `user` or
    /// `service`.
    pub fn record_allowed(&self, caller: &str) {
        self.authorization
            .with_label_values(&["allowed", caller])
            .inc();
    }

    /// A password login ended with `outcome`.
    pub fn record_login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    /// A failed login's audit write, made after its answer, ended with
    /// `outcome`.
    pub fn record_failed_login_audit(&self, outcome: &str) {
        self.failed_login_audits.with_label_values(&[outcome]).inc();
    }

    /// A mail job of `kind` ended with `outcome`.
    pub fn record_mail_job(&self, kind: &str, outcome: &str) {
        self.mails.with_label_values(&[kind, outcome]).inc();
    }

    /// A row of `kind` was written to the mail outbox.
    pub fn record_mail_queued(&self, kind: &str) {
        self.mail_queued.with_label_values(&[kind]).inc();
    }

    /// A mail of `kind` was accepted by the SMTP server.
    pub fn record_mail_sent(&self, kind: &str) {
        self.mail_sent.with_label_values(&[kind]).inc();
    }

    /// An attempt of `kind` failed and will be retried.
    pub fn record_mail_retried(&self, kind: &str) {
        self.mail_retried.with_label_values(&[kind]).inc();
    }

    /// A mail of `kind` was given up for `reason`.
    pub fn record_mail_given_up(&self, kind: &str, reason: &str) {
        self.mail_given_up.with_label_values(&[kind, reason]).inc();
    }

    /// The mail outbox holds `rows`.
    /// The change feed's watches on this replica, and the largest lag.
    pub fn set_change_watches(&self, watches: i64, max_lag: i64) {
        self.change_watches.set(watches);
        self.change_watch_lag.set(max_lag);
    }

    pub fn set_mail_outbox_depth(&self, rows: i64) {
        self.mail_outbox_depth.set(rows);
    }

    /// The per-call check refused a call.
    pub fn record_denied(&self, refusal: &DomainError) {
        self.authorization
            .with_label_values(&["denied", refusal_reason(refusal)])
            .inc();
    }

    /// Brings the database error, closed connection and passed-over host
    /// counters up to the store's own counts.
    fn read_database_errors(&self) {
        for kind in DatabaseError::ALL {
            let counter = self.database_errors.with_label_values(&[kind.label()]);
            let seen = stats::database_errors(kind);
            counter.inc_by(seen.saturating_sub(counter.get()));
        }
        for reason in ConnectionClosed::ALL {
            let counter = self.connections_closed.with_label_values(&[reason.label()]);
            let seen = stats::connections_closed(reason);
            counter.inc_by(seen.saturating_sub(counter.get()));
        }
        for reason in HostPassedOver::ALL {
            let counter = self.hosts_passed_over.with_label_values(&[reason.label()]);
            let seen = stats::hosts_passed_over(reason);
            counter.inc_by(seen.saturating_sub(counter.get()));
        }
    }

    /// Brings the cache metrics up to the caches' own counts.
    fn read_cache_counts(&self) {
        let catch_up = |counter: &prometheus::IntCounter, seen: u64| {
            counter.inc_by(seen.saturating_sub(counter.get()));
        };
        for kind in CacheKind::ALL {
            let counts = stats::cache_counts(kind);
            let label = [kind.label()];
            catch_up(&self.cache_hits.with_label_values(&label), counts.hits);
            catch_up(&self.cache_misses.with_label_values(&label), counts.misses);
            catch_up(
                &self.cache_evictions.with_label_values(&label),
                counts.evictions,
            );
            self.cache_entries
                .with_label_values(&label)
                .set(i64::try_from(counts.entries).unwrap_or(i64::MAX));
        }
        for (scope, seen) in stats::INVALIDATION_SCOPES
            .iter()
            .zip(stats::cache_invalidations())
        {
            catch_up(&self.cache_invalidations.with_label_values(&[scope]), seen);
        }
    }

    /// The text exposition of every metric, with the pool's state and the
    /// store's counts as of now.
    pub fn render(&self, pool: Option<&PgPool>) -> String {
        self.read_database_errors();
        self.read_cache_counts();
        if let Some(pool) = pool {
            let status = pool.status();
            self.pool_size.set(status.size as i64);
            self.pool_available.set(status.available as i64);
            self.pool_in_use
                .set(status.size.saturating_sub(status.available) as i64);
            self.pool_max_size.set(status.max_size as i64);
            self.pool_waiting.set(status.waiting as i64);
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// `/usermgmt.v1.UserService/GetUser` → (`usermgmt.v1.UserService`, `GetUser`).
/// Anything else (a stray path) is counted as `unknown`, so that callers cannot
/// create label values at will.
fn split_path(path: &str) -> (&str, &str) {
    match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
        Some((service, method)) if is_name(service) && is_name(method) && !method.contains('.') => {
            (service, method)
        }
        _ => ("unknown", "unknown"),
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Why the per-call check refused: the `ErrorInfo` reason of an
/// authentication failure, otherwise the kind of refusal.
fn refusal_reason(refusal: &DomainError) -> &'static str {
    match refusal {
        DomainError::Unauthenticated(failure) => failure.reason(),
        DomainError::PermissionDenied(_) => "PERMISSION_DENIED",
        DomainError::WrongOrganisation => "WRONG_ORGANISATION",
        DomainError::Unavailable(_) => "UNAVAILABLE",
        DomainError::Internal(_) => "INTERNAL",
        DomainError::InvalidArgument(_) => "INVALID_ARGUMENT",
        DomainError::NotFound(_) => "NOT_FOUND",
        DomainError::Unimplemented(_) => "UNIMPLEMENTED",
        _ => "OTHER",
    }
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1) until the task is dropped.
pub async fn serve(listener: TcpListener, pool: PgPool) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(respond(&request, &pool)) }
            });
            if let Err(error) = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics: connection ended with an error");
            }
        });
    }
}

fn respond<B>(request: &hyper::Request<B>, pool: &PgPool) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => (
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics().render(Some(pool)),
        ),
        (_, "/metrics") => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Binds the metrics port; the error names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/usermgmt.v1.UserService/GetUser"),
            ("usermgmt.v1.UserService", "GetUser")
        );
        assert_eq!(split_path("/"), ("unknown", "unknown"));
        assert_eq!(split_path("/a/b/c"), ("unknown", "unknown"));
        assert_eq!(split_path("/x y/z"), ("unknown", "unknown"));
    }

    #[test]
    fn every_family_is_rendered() {
        let metrics = metrics();
        metrics.record_call(
            "/usermgmt.v1.AuthService/Login",
            tonic::Code::Unauthenticated,
            Duration::from_millis(3),
        );
        metrics.record_allowed("user");
        metrics.record_login("unknown_email");
        metrics.record_mail_job("password_reset", "sent");
        metrics.record_mail_queued("invite");
        metrics.record_mail_sent("invite");
        metrics.record_mail_retried("invite");
        metrics.record_mail_given_up("invite", "expired");
        crate::store::stats::record_database_error(DatabaseError::Other);
        let text = metrics.render(None);
        for family in [
            "usermgmt_grpc_requests_total{code=\"UNAUTHENTICATED\",method=\"Login\",service=\"usermgmt.v1.AuthService\"}",
            "usermgmt_grpc_request_duration_seconds_bucket",
            "usermgmt_authorization_total{outcome=\"allowed\",reason=\"user\"}",
            "usermgmt_database_errors_total{kind=\"other\"}",
            "usermgmt_db_connections_closed_total{reason=\"deadline\"}",
            "usermgmt_db_hosts_passed_over_total{reason=\"hung\"}",
            "usermgmt_db_pool_connections_max",
            "usermgmt_cache_hits_total{cache=\"users\"}",
            "usermgmt_cache_misses_total{cache=\"verified_tokens\"}",
            "usermgmt_cache_evictions_total{cache=\"organisations\"}",
            "usermgmt_cache_entries{cache=\"api_keys\"}",
            "usermgmt_cache_invalidations_total{scope=\"organisation\"}",
            "usermgmt_logins_total{outcome=\"unknown_email\"}",
            "usermgmt_mail_jobs_total{kind=\"password_reset\",outcome=\"sent\"}",
            "usermgmt_mail_queued_total{kind=\"invite\"}",
            "usermgmt_mail_sent_total{kind=\"invite\"}",
            "usermgmt_mail_retried_total{kind=\"invite\"}",
            "usermgmt_mail_given_up_total{kind=\"invite\",reason=\"expired\"}",
            "usermgmt_mail_outbox_depth",
            "usermgmt_change_watches",
            "usermgmt_change_watch_lag",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
    }
}
