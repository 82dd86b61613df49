//! Connecting to PostgreSQL, for the pool, the cache listener and the
//! start-up: every host of a multi-host URL in turn, each under a deadline
//! that covers the whole handshake (TCP, start-up, authentication and, with
//! `target_session_attrs=read-write`, the read-write check); and, for pooled
//! connections, a watchdog that closes a connection whose user outlived its
//! deadline, so that a database that hangs (a stopped process, a frozen
//! machine, a black hole) fails calls instead of holding them.
//!
//! tokio-postgres bounds only the TCP connect, which a frozen machine's
//! kernel still completes: the driver would wait for ever for a server that
//! never answers, and never try the next host.

use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::InstrumentationEvent;
use diesel_async::pooled_connection::PoolableConnection as _;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

use super::stats::{self, ConnectionClosed, HostPassedOver};

/// How long a host that hung is tried after the others.
const HUNG_MEMORY: Duration = Duration::from_secs(60);

/// How long a connection dropped by its pool may take to say goodbye to its
/// server before it is closed regardless.
const GOODBYE: Duration = Duration::from_secs(1);

/// TCP settings applied to every connection unless the URL sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// Idle time before the first keepalive probe.
    pub keepalives_idle: Duration,
    /// Time between keepalive probes.
    pub keepalives_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub keepalives_retries: u32,
    /// How long sent data may stay unacknowledged before the connection is
    /// dropped (`TCP_USER_TIMEOUT`).
    pub user_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            keepalives_idle: Duration::from_secs(10),
            keepalives_interval: Duration::from_secs(5),
            keepalives_retries: 3,
            user_timeout: Duration::from_secs(20),
        }
    }
}

/// Why no connection could be opened. Names hosts and ports, never the
/// password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("no host of the database URL gave a connection: {0}")]
    NoHost(String),
}

/// Opens connections to the hosts of one database URL (see the module).
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    /// One configuration per host of the URL, in the URL's order.
    hosts: Vec<HostEntry>,
    per_host: Duration,
}

struct HostEntry {
    /// The connection settings for this host alone.
    config: Config,
    /// `host:port`, for messages.
    label: String,
    marks: Mutex<Marks>,
    /// Whether a check of the host is running.
    checking: AtomicBool,
}

#[derive(Default)]
struct Marks {
    /// When the host was last found hung: a connection opened before is
    /// not reused.
    hung: Option<Instant>,
    /// When a connection to the host was last opened.
    opened: Option<Instant>,
}

impl HostEntry {
    /// Whether the host hung recently and has not given a connection since.
    fn suspect(&self) -> bool {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        match marks.hung {
            Some(hung) => hung.elapsed() < HUNG_MEMORY && marks.opened.is_none_or(|o| o < hung),
            None => false,
        }
    }

    fn mark_hung(&self) {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).hung = Some(Instant::now());
    }

    fn mark_opened(&self, at: Instant) {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).opened = Some(at);
    }

    /// Whether the host was found hung after `opened`.
    fn hung_since(&self, opened: Instant) -> bool {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        marks.hung.is_some_and(|hung| hung > opened)
    }
}

impl Connector {
    /// A connector for `url`: every host's handshake bounded by `per_host`,
    /// and the TCP settings of `tcp` where the URL sets none.
    pub fn new(url: &str, per_host: Duration, tcp: TcpSettings) -> Result<Self, ConnectError> {
        let mut config =
            Config::from_str(url).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
        apply_tcp_defaults(&mut config, url, tcp);
        Self::from_config(&config, per_host)
    }

    /// A connector for `config` as it is.
    pub fn from_config(config: &Config, per_host: Duration) -> Result<Self, ConnectError> {
        let count = config.get_hosts().len().max(config.get_hostaddrs().len());
        if count == 0 {
            return Err(ConnectError::InvalidUrl("no host".into()));
        }
        let hosts = (0..count)
            .map(|i| {
                let config = single_host(config, i);
                HostEntry {
                    label: label(&config),
                    config,
                    marks: Mutex::default(),
                    checking: AtomicBool::new(false),
                }
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner { hosts, per_host }),
        })
    }

    /// This connector, for the database `name` of the same servers.
    pub fn for_database(&self, name: &str) -> Self {
        let hosts = self
            .inner
            .hosts
            .iter()
            .map(|host| {
                let mut config = host.config.clone();
                config.dbname(name);
                HostEntry {
                    config,
                    label: host.label.clone(),
                    marks: Mutex::default(),
                    checking: AtomicBool::new(false),
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                hosts,
                per_host: self.inner.per_host,
            }),
        }
    }

    /// The deadline of one host's handshake.
    pub fn per_host(&self) -> Duration {
        self.inner.per_host
    }

    /// How many hosts the URL names.
    pub fn host_count(&self) -> usize {
        self.inner.hosts.len()
    }

    /// The database's name, if the URL names one.
    pub fn dbname(&self) -> Option<&str> {
        self.inner.hosts.first()?.config.get_dbname()
    }

    /// `"name" on host:port,… as user`: where the database is, as an error
    /// may say it (never the password).
    pub fn describe(&self) -> String {
        let hosts: Vec<&str> = self.inner.hosts.iter().map(|h| h.label.as_str()).collect();
        let first = self.inner.hosts.first().map(|h| &h.config);
        let user = first.and_then(Config::get_user).unwrap_or("(default user)");
        let name = first.and_then(Config::get_dbname).unwrap_or("(default)");
        format!("\"{name}\" on {} as {user}", hosts.join(","))
    }

    /// A connection to the first host (in the URL's order, hosts that hung
    /// lately last) that completes its handshake within the per-host
    /// deadline, with `application_name` if given; and which host it is.
    pub async fn connect(
        &self,
        application_name: Option<&str>,
    ) -> Result<(Client, Connection<Socket, NoTlsStream>, usize), ConnectError> {
        let mut failures = Vec::new();
        for index in self.order() {
            let host = &self.inner.hosts[index];
            let mut config = host.config.clone();
            if let Some(name) = application_name {
                config.application_name(name);
            }
            let started = Instant::now();
            match tokio::time::timeout(self.inner.per_host, config.connect(NoTls)).await {
                Ok(Ok((client, connection))) => {
                    host.mark_opened(started);
                    return Ok((client, connection, index));
                }
                Ok(Err(error)) => failures.push(format!("{}: {}", host.label, cause(&error))),
                Err(_) => {
                    tracing::warn!(
                        host = %host.label,
                        deadline_ms = self.inner.per_host.as_millis() as u64,
                        "a database host did not complete the handshake in time; trying the next"
                    );
                    host.mark_hung();
                    stats::record_host_passed_over(HostPassedOver::HandshakeTimeout);
                    failures.push(format!(
                        "{}: no complete handshake within {} ms",
                        host.label,
                        self.inner.per_host.as_millis()
                    ));
                }
            }
        }
        Err(ConnectError::NoHost(failures.join("; ")))
    }

    /// A connection for the pool: a Diesel connection whose driver closes it
    /// when a user outlives the deadline it was lent with.
    pub async fn pooled(&self) -> Result<PgConn, ConnectError> {
        let started = Instant::now();
        let (client, connection, host) = self.connect(None).await?;
        let (deadline, armed) = watch::channel(None);
        let link = Link {
            host,
            opened: started,
            deadline,
            busy: Arc::default(),
            killed: Arc::default(),
        };
        tokio::spawn(drive(
            connection,
            armed,
            Watch {
                connector: self.clone(),
                host,
                busy: Arc::clone(&link.busy),
                killed: Arc::clone(&link.killed),
            },
        ));
        // Diesel's own set-up (time zone, encoding) is part of the handshake.
        let remaining = self
            .inner
            .per_host
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let mut conn =
            match tokio::time::timeout(remaining, AsyncPgConnection::try_from(client)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => {
                    return Err(ConnectError::NoHost(format!(
                        "{}: set-up failed: {error}",
                        self.inner.hosts[host].label
                    )));
                }
                Err(_) => {
                    self.inner.hosts[host].mark_hung();
                    stats::record_host_passed_over(HostPassedOver::HandshakeTimeout);
                    return Err(ConnectError::NoHost(format!(
                        "{}: no complete set-up within {} ms",
                        self.inner.hosts[host].label,
                        self.inner.per_host.as_millis()
                    )));
                }
            };
        let busy = Arc::clone(&link.busy);
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::StartQuery { .. } => {
                busy.fetch_add(1, Ordering::SeqCst);
            }
            InstrumentationEvent::FinishQuery { .. } => {
                let _ = busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    Some(n.saturating_sub(1))
                });
            }
            _ => {}
        });
        Ok(PgConn { conn, link })
    }

    /// The hosts in the order to try them: the URL's, those that hung
    /// lately last.
    fn order(&self) -> Vec<usize> {
        let (mut fine, suspect): (Vec<usize>, Vec<usize>) =
            (0..self.inner.hosts.len()).partition(|&i| !self.inner.hosts[i].suspect());
        fine.extend(suspect);
        fine
    }

    /// A call outlived its deadline while waiting for `host`: checks, once
    /// at a time, whether the host answers at all (a new handshake within
    /// the per-host deadline). One that does not is marked hung: its pooled
    /// connections are not reused and it is tried last. A host that answers
    /// was only slow, and keeps its connections.
    fn check_host(&self, host: usize) {
        let entry = &self.inner.hosts[host];
        if entry.checking.swap(true, Ordering::SeqCst) {
            return;
        }
        let connector = self.clone();
        tokio::spawn(async move {
            let entry = &connector.inner.hosts[host];
            let mut config = entry.config.clone();
            config.target_session_attrs(TargetSessionAttrs::Any);
            config.application_name("usermgmt-host-check");
            let answered = tokio::time::timeout(connector.inner.per_host, async {
                let (client, connection) = config.connect(NoTls).await?;
                let driver = tokio::spawn(connection);
                let result = client.simple_query("SELECT 1").await.map(drop);
                drop(client);
                let _ = driver.await;
                result
            })
            .await;
            match answered {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.as_db_error().is_some() => {}
                _ => {
                    tracing::warn!(
                        host = %entry.label,
                        "a database host does not answer: its connections are dropped and it is tried last"
                    );
                    entry.mark_hung();
                    stats::record_host_passed_over(HostPassedOver::Hung);
                }
            }
            entry.checking.store(false, Ordering::SeqCst);
        });
    }
}

/// A pooled connection: the Diesel connection and what the watchdog knows
/// of it.
pub struct PgConn {
    conn: AsyncPgConnection,
    link: Link,
}

struct Link {
    host: usize,
    opened: Instant,
    /// The deadline of the current user, `None` while idle in the pool.
    deadline: watch::Sender<Option<Instant>>,
    /// Queries started and not finished (dropped unfinished: never).
    busy: Arc<AtomicUsize>,
    /// Whether the watchdog closed the connection.
    killed: Arc<AtomicBool>,
}

impl PgConn {
    /// Lends the connection until `deadline`: past it, the watchdog closes
    /// the connection, and its pending queries fail at once.
    pub(crate) fn arm(&self, deadline: Option<Instant>) {
        self.link.deadline.send_replace(deadline);
    }

    /// Whether the connection may go back to the pool: no query left
    /// unfinished (its caller gave up on it), not closed by the watchdog or
    /// the server, no transaction left open, and its host not found hung
    /// since it was opened. One that may not is counted by why (the
    /// watchdog counted those it closed), and is to be closed.
    pub(crate) fn reusable(&mut self, connector: &Connector) -> bool {
        let unfit = if self.link.killed.load(Ordering::SeqCst) {
            return false;
        } else if self.link.busy.load(Ordering::SeqCst) > 0 {
            ConnectionClosed::Abandoned
        } else if self.conn.is_broken() {
            ConnectionClosed::Broken
        } else if connector.inner.hosts[self.link.host].hung_since(self.link.opened) {
            ConnectionClosed::HostHung
        } else {
            return true;
        };
        stats::record_connection_closed(unfit);
        false
    }

    /// Back in the pool: no deadline.
    pub(crate) fn disarm(&self) {
        self.link.deadline.send_replace(None);
    }
}

impl std::ops::Deref for PgConn {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

/// What a connection's driver reports to.
struct Watch {
    connector: Connector,
    host: usize,
    busy: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
}

/// Drives `connection` until it ends, its [`PgConn`] is dropped, or the
/// deadline it is lent with passes; then drops it, which closes the socket
/// and fails its pending queries.
async fn drive(
    connection: Connection<Socket, NoTlsStream>,
    mut deadline: watch::Receiver<Option<Instant>>,
    watch: Watch,
) {
    let mut connection = std::pin::pin!(connection);
    loop {
        let until = *deadline.borrow_and_update();
        let expired = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut connection => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    // Dropped: a last chance to end the session politely.
                    let _ = tokio::time::timeout(GOODBYE, connection).await;
                    return;
                }
            }
            () = expired => {
                watch.killed.store(true, Ordering::SeqCst);
                stats::record_connection_closed(ConnectionClosed::Deadline);
                let waiting = watch.busy.load(Ordering::SeqCst) > 0;
                tracing::warn!(
                    host = %watch.connector.inner.hosts[watch.host].label,
                    waiting_for_the_server = waiting,
                    "a database call outlived its deadline: its connection is closed"
                );
                if waiting {
                    watch.connector.check_host(watch.host);
                }
                return;
            }
        }
    }
}

/// `config`'s settings for its `index`-th host alone.
fn single_host(config: &Config, index: usize) -> Config {
    let mut one = Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    one.ssl_mode(config.get_ssl_mode());
    one.ssl_negotiation(config.get_ssl_negotiation());
    match config.get_hosts().get(index) {
        Some(Host::Tcp(host)) => {
            one.host(host);
        }
        #[cfg(unix)]
        Some(Host::Unix(path)) => {
            one.host_path(path);
        }
        None => {}
    }
    if let Some(address) = config.get_hostaddrs().get(index) {
        one.hostaddr(*address);
    }
    // One port for every host, or one each (tokio-postgres' rule).
    let ports = config.get_ports();
    if let Some(port) = ports.get(index).or(if ports.len() == 1 {
        ports.first()
    } else {
        None
    }) {
        one.port(*port);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    one.keepalives(config.get_keepalives());
    one.keepalives_idle(config.get_keepalives_idle());
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one.target_session_attrs(config.get_target_session_attrs());
    one.channel_binding(config.get_channel_binding());
    one.load_balance_hosts(config.get_load_balance_hosts());
    one
}

/// `host:port` of a single-host configuration.
fn label(config: &Config) -> String {
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(host)), _) => host.clone(),
        #[cfg(unix)]
        (Some(Host::Unix(path)), _) => path.display().to_string(),
        (None, Some(address)) => address.to_string(),
        (None, None) => "(no host)".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Keepalives and `tcp_user_timeout` of `tcp`, for each one `url` does not
/// set itself.
fn apply_tcp_defaults(config: &mut Config, url: &str, tcp: TcpSettings) {
    if !names_parameter(url, "keepalives") {
        config.keepalives(true);
    }
    if !names_parameter(url, "keepalives_idle") {
        config.keepalives_idle(tcp.keepalives_idle);
    }
    if !names_parameter(url, "keepalives_interval") {
        config.keepalives_interval(tcp.keepalives_interval);
    }
    if !names_parameter(url, "keepalives_retries") {
        config.keepalives_retries(tcp.keepalives_retries);
    }
    if !names_parameter(url, "tcp_user_timeout") {
        config.tcp_user_timeout(tcp.user_timeout);
    }
}

/// Whether the connection string `url` (a URL or `key=value` pairs) sets
/// the parameter `key`.
fn names_parameter(url: &str, key: &str) -> bool {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((_, query)) = url.split_once('?') else {
            return false;
        };
        return query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(key));
    }
    url.match_indices(key).any(|(at, _)| {
        let before = url[..at].chars().next_back();
        let after = url[at + key.len()..].trim_start();
        before.is_none_or(char::is_whitespace) && after.starts_with('=')
    })
}

/// The database's own message and SQLSTATE, or the client's error with its
/// causes (tokio-postgres shows only "db error" on its own).
pub(crate) fn cause(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_host_keeps_every_setting() {
        let url = "postgres://app:s3cret@db1:5433/usermgmt?options=-c%20x%3Dy&application_name=a\
                   &sslmode=disable&connect_timeout=3&tcp_user_timeout=4&keepalives=0\
                   &keepalives_idle=5&keepalives_interval=6&keepalives_retries=7\
                   &target_session_attrs=read-write&channel_binding=disable\
                   &load_balance_hosts=random";
        let config = Config::from_str(url).expect("parses");
        assert_eq!(single_host(&config, 0), config);
    }

    #[test]
    fn each_host_gets_its_own_port_or_the_shared_one() {
        let config = Config::from_str(
            "postgres://app@db1:5433,db2/usermgmt?target_session_attrs=read-write",
        )
        .expect("parses");
        let second = single_host(&config, 1);
        assert_eq!(label(&single_host(&config, 0)), "db1:5433");
        assert_eq!(label(&second), "db2:5432");
        assert_eq!(
            second.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let shared = Config::from_str("host=db1,db2 port=6000 dbname=x").expect("parses");
        assert_eq!(label(&single_host(&shared, 1)), "db2:6000");
    }

    #[test]
    fn tcp_defaults_apply_where_the_url_sets_none() {
        let tcp = TcpSettings::default();
        let url = "postgres://app@db1/usermgmt?keepalives_idle=30";
        let mut config = Config::from_str(url).expect("parses");
        apply_tcp_defaults(&mut config, url, tcp);
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(tcp.keepalives_interval)
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));
        assert_eq!(config.get_tcp_user_timeout(), Some(&tcp.user_timeout));
        assert!(config.get_keepalives());

        let pairs = "host=db1 dbname=x keepalives = 0 tcp_user_timeout=9";
        let mut config = Config::from_str(pairs).expect("parses");
        apply_tcp_defaults(&mut config, pairs, tcp);
        assert!(!config.get_keepalives());
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(config.get_keepalives_idle(), tcp.keepalives_idle);
        assert!(!names_parameter("host=db1 mykeepalives=1", "keepalives"));
    }

    #[test]
    fn the_description_names_no_password() {
        let connector = Connector::new(
            "postgres://app:s3cret@db1:5433,db2/usermgmt",
            Duration::from_secs(1),
            TcpSettings::default(),
        )
        .expect("connector");
        let described = connector.describe();
        assert_eq!(described, "\"usermgmt\" on db1:5433,db2:5432 as app");
        assert!(!described.contains("s3cret"));
    }

    /// A server that accepts TCP and never says a word, as a frozen
    /// machine's kernel does; the next host is a real PostgreSQL.
    #[tokio::test]
    async fn a_host_that_never_answers_is_passed_over_within_its_deadline() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let per_host = Duration::from_millis(500);
        let connector = Connector::new(
            &format!(
                "postgres://postgres@127.0.0.1:{silent_port},127.0.0.1:5432/postgres\
                 ?target_session_attrs=read-write"
            ),
            per_host,
            TcpSettings::default(),
        )
        .expect("connector");
        let started = Instant::now();
        let (client, connection, host) =
            tokio::time::timeout(Duration::from_secs(10), connector.connect(None))
                .await
                .expect("the silent host is passed over")
                .expect("connects");
        assert_eq!(host, 1, "the second host");
        assert!(started.elapsed() < per_host * 2, "{:?}", started.elapsed());
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.expect("answers");
        // The silent host hung: it is tried last from now on.
        assert_eq!(connector.order(), vec![1, 0]);
        let started = Instant::now();
        let (_, _, host) = connector.connect(None).await.expect("connects");
        assert_eq!(host, 1);
        assert!(started.elapsed() < per_host, "{:?}", started.elapsed());
        held.abort();
    }

    #[tokio::test]
    async fn no_host_is_an_error_naming_each_host_and_why() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let connector = Connector::new(
            &format!("postgres://postgres:pw@127.0.0.1:{port}/postgres"),
            Duration::from_millis(200),
            TcpSettings::default(),
        )
        .expect("connector");
        let error = connector.connect(None).await.err().expect("fails");
        let text = error.to_string();
        assert!(text.contains(&format!(
            "127.0.0.1:{port}: no complete handshake within 200 ms"
        )));
        assert!(!text.contains("pw"));
        drop(silent);
    }
}
