//! The recommended HA deployment, as docs/operations.md describes it: three
//! PostgreSQL nodes managed by Patroni (on etcd, synchronous mode) in a
//! temporary directory of the test's own (never the machine's cluster), two
//! `usermgmt serve` replicas on the multi-host URL with
//! `target_session_attrs=read-write`, under write load. Three events in
//! turn: the leader's postmaster killed, a planned switchover, and the
//! leader frozen (SIGSTOP on its Patroni and PostgreSQL, as a frozen machine)
//! for longer than Patroni's TTL. After each: no acknowledged write lost;
//! writes back on both replicas within Patroni's promotion time plus 2 s;
//! health SERVING again; both cache listeners heartbeating on the new leader;
//! a token revoked after the event refused on both replicas; and no call of
//! the load outlived its deadline.
//!
//! Needs Patroni and etcd: `.ci/run` installs them and runs it with
//! `--ignored`; `USERMGMT_PATRONI` names Patroni's executable (default
//! `/opt/usermgmt-patroni/bin/patroni`).

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Mutex;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::proto;

use crate::support::pg::{bootstrap_acme, pg_bin, postgres_dir};
use crate::support::*;

/// How long any one phase may take before the test fails.
const PHASE: Duration = Duration::from_secs(90);
/// Patroni's leader key TTL (its minimum), loop and retry timeouts.
const TTL: u64 = 20;
const LOOP_WAIT: u64 = 1;
const RETRY_TIMEOUT: u64 = 5;
/// The deadline of every call of the load.
const DEADLINE: Duration = Duration::from_secs(4);
/// What a call may take beyond its deadline on a loaded machine.
const SLACK: Duration = Duration::from_millis(500);
/// The promise: writes back within Patroni's promotion time plus this.
const CATCH_UP: Duration = Duration::from_secs(2);

/// The replicas' settings: calls hold a connection at most 2 s, a host gets
/// 1 s for its handshake, health is checked every 200 ms.
const SERVE_ENV: [(&str, &str); 4] = [
    ("USERMGMT_DB_CALL_TIMEOUT_MS", "2000"),
    ("USERMGMT_DB_STATEMENT_TIMEOUT_MS", "1500"),
    ("USERMGMT_DB_CONNECT_TIMEOUT_MS", "1000"),
    ("USERMGMT_HEALTH_INTERVAL_MS", "200"),
];

fn patroni_bin() -> PathBuf {
    std::env::var_os("USERMGMT_PATRONI")
        .map_or_else(|| "/opt/usermgmt-patroni/bin/patroni".into(), PathBuf::from)
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let fields: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user")
        .split(':')
        .collect();
    (
        fields[2].parse().expect("uid"),
        fields[3].parse().expect("gid"),
    )
}

/// Sends `signal` to `pid`.
fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a pid of this test's own cluster; no memory is
    // shared.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The processes whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid …: comm may hold spaces; it ends at the
            // last parenthesis.
            let after = stat.rsplit_once(')')?.1;
            let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// A one-shot HTTP/1.0 exchange with Patroni's REST API on `port`: the
/// status and the body; `None` when it does not answer within 2 s.
async fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    let timeout = if path == "/switchover" { 60 } else { 2 };
    tokio::time::timeout(Duration::from_secs(timeout), exchange)
        .await
        .ok()
        .flatten()
}

struct Node {
    name: String,
    pg_port: u16,
    rest_port: u16,
    data: PathBuf,
    patroni: Option<Child>,
    frozen: Vec<i32>,
}

/// etcd and three Patroni nodes in a temporary directory; every process
/// killed and the directory removed when dropped, even on failure.
struct Cluster {
    dir: PathBuf,
    etcd: Option<Child>,
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = postgres_dir("usermgmt-patroni");
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd = Command::new("etcd")
            .args([
                "--name",
                "etcd",
                "--data-dir",
                &dir.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("etcd=http://127.0.0.1:{peer_port}"),
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "etcd.log"))
            .spawn()
            .expect("etcd (Debian's etcd-server; .ci/run installs it)");
        let mut cluster = Cluster {
            dir,
            etcd: Some(etcd),
            nodes: Vec::new(),
        };
        until("etcd answers", async || {
            http(client_port, "GET", "/version", "").await.is_some()
        })
        .await;
        for n in 1..=3 {
            let node = cluster.start_node(n, client_port);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn start_node(&self, n: usize, etcd_port: u16) -> Node {
        let name = format!("node{n}");
        let (pg_port, rest_port) = (free_port(), free_port());
        let data = self.dir.join(&name);
        let config = self.dir.join(format!("{name}.yml"));
        let bin_dir = pg_bin("postgres");
        let bin_dir = bin_dir.parent().expect("bin dir").display();
        let dir = self.dir.display();
        std::fs::write(
            &config,
            format!(
                "scope: usermgmt-test\nname: {name}\n\
                 restapi:\n  listen: 127.0.0.1:{rest_port}\n  connect_address: 127.0.0.1:{rest_port}\n\
                 etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
                 bootstrap:\n  dcs:\n    ttl: {TTL}\n    loop_wait: {LOOP_WAIT}\n    retry_timeout: {RETRY_TIMEOUT}\n\
                 \x20   maximum_lag_on_failover: 1048576\n    synchronous_mode: true\n\
                 \x20   postgresql:\n      use_pg_rewind: true\n      parameters:\n\
                 \x20       wal_level: replica\n        hot_standby: 'on'\n        wal_log_hints: 'on'\n\
                 \x20       max_wal_senders: 10\n        max_replication_slots: 10\n\
                 \x20       max_connections: 100\n        fsync: 'off'\n\
                 \x20 initdb:\n    - encoding: UTF8\n    - auth: trust\n\
                 \x20 pg_hba:\n    - local all all trust\n    - host all all 127.0.0.1/32 trust\n\
                 \x20   - host replication all 127.0.0.1/32 trust\n\
                 postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n\
                 \x20 data_dir: {data}\n  bin_dir: {bin_dir}\n  pgpass: {dir}/{name}.pgpass\n\
                 \x20 authentication:\n    superuser:\n      username: postgres\n\
                 \x20   replication:\n      username: postgres\n    rewind:\n      username: postgres\n\
                 \x20 parameters:\n    unix_socket_directories: {dir}\n",
                data = data.display(),
            ),
        )
        .expect("write the Patroni configuration");
        let (uid, gid) = postgres_ids();
        let patroni = Command::new(patroni_bin())
            .arg(&config)
            .uid(uid)
            .gid(gid)
            .env("HOME", &self.dir)
            .stdout(log_file(&self.dir, &format!("{name}.log")))
            .stderr(log_file(&self.dir, &format!("{name}.err")))
            .spawn()
            .expect("patroni (.ci/run installs it in /opt/usermgmt-patroni)");
        Node {
            name,
            pg_port,
            rest_port,
            data,
            patroni: Some(patroni),
            frozen: Vec::new(),
        }
    }

    /// The multi-host URL of the database `usermgmt`.
    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.pg_port))
            .collect();
        format!(
            "postgres://postgres@{}/usermgmt?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// The cluster's members as Patroni reports them (asked of a node that
    /// is not frozen).
    async fn members(&self) -> Option<Vec<Value>> {
        for node in self.nodes.iter().filter(|node| node.frozen.is_empty()) {
            if let Some((200, body)) = http(node.rest_port, "GET", "/cluster", "").await
                && let Ok(cluster) = serde_json::from_str::<Value>(&body)
            {
                return cluster["members"].as_array().cloned();
            }
        }
        None
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The running leader Patroni names, and its sync standby.
    async fn roles(&self) -> (Option<usize>, Option<usize>) {
        let members = self.members().await.unwrap_or_default();
        let find = |role: &str| {
            members
                .iter()
                .find(|m| {
                    m["role"] == role && (m["state"] == "running" || m["state"] == "streaming")
                })
                .and_then(|m| self.index_of(m["name"].as_str()?))
        };
        (find("leader"), find("sync_standby"))
    }

    /// Whether every node is up: a running leader, a sync standby and the
    /// other replica streaming.
    async fn healthy(&self) -> bool {
        let members = self.members().await.unwrap_or_default();
        let count = |role: &str, state: &str| {
            members
                .iter()
                .filter(|m| m["role"] == role && m["state"] == state)
                .count()
        };
        count("leader", "running") == 1
            && count("sync_standby", "streaming") == 1
            && count("replica", "streaming") == 1
    }

    /// A client of `node`'s database `database`, if it answers within 1 s.
    async fn client(&self, node: usize, database: &str) -> Option<tokio_postgres::Client> {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/{database}?connect_timeout=1",
            self.nodes[node].pg_port
        );
        let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .ok()?
            .ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    /// Whether `node` takes writes.
    async fn writable(&self, node: usize) -> bool {
        let Some(client) = self.client(node, "postgres").await else {
            return false;
        };
        let query = client.query_one("SELECT NOT pg_is_in_recovery()", &[]);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), query).await,
            Ok(Ok(row)) if row.get::<_, bool>(0)
        )
    }

    fn postmaster(&self, node: usize) -> i32 {
        let pid = std::fs::read_to_string(self.nodes[node].data.join("postmaster.pid"))
            .expect("postmaster.pid");
        pid.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("the postmaster's pid")
    }

    /// Stops `node` as a frozen machine: its Patroni, its postmaster, then
    /// every PostgreSQL process under it.
    fn freeze(&mut self, node: usize) {
        let patroni = self.nodes[node].patroni.as_ref().expect("patroni").id() as i32;
        let postmaster = self.postmaster(node);
        let mut frozen = vec![patroni, postmaster];
        signal(patroni, libc::SIGSTOP);
        signal(postmaster, libc::SIGSTOP);
        for _ in 0..2 {
            for child in children(postmaster) {
                if !frozen.contains(&child) {
                    signal(child, libc::SIGSTOP);
                    frozen.push(child);
                }
            }
        }
        self.nodes[node].frozen = frozen;
    }

    fn thaw(&mut self, node: usize) {
        for pid in std::mem::take(&mut self.nodes[node].frozen)
            .into_iter()
            .rev()
        {
            signal(pid, libc::SIGCONT);
        }
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(File::create(dir.join(name)).expect("log file"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.thaw(node);
        }
        for node in &mut self.nodes {
            if let Some(mut patroni) = node.patroni.take() {
                let _ = patroni.kill();
                let _ = patroni.wait();
            }
        }
        for node in &self.nodes {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin("pg_ctl"))
                .args([
                    "-D",
                    &node.data.to_string_lossy(),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .output();
        }
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
        if std::thread::panicking() {
            eprintln!("Patroni cluster logs (kept for the failure):");
            for name in [
                "node1.err",
                "node2.err",
                "node3.err",
                "replica1.log",
                "replica2.log",
            ] {
                if let Ok(log) = std::fs::read_to_string(self.dir.join(name)) {
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "--- {name}\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        // A process that just stopped may still remove a file of its own
        // (a socket's lock file) while the directory goes.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls `done` every 20 ms until it holds, at most [`PHASE`].
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PHASE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One call of the load.
#[derive(Debug, Clone)]
struct Call {
    replica: usize,
    started: Instant,
    ended: Instant,
    code: Code,
}

/// Writes through both replicas: CreateUser, each with a deadline of
/// [`DEADLINE`], every acknowledged email remembered.
#[derive(Clone)]
struct Load {
    calls: Arc<Mutex<Vec<Call>>>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(admins: &[Session; 2]) -> (Load, Vec<tokio::task::JoinHandle<()>>) {
        let load = Load {
            calls: Arc::default(),
            acknowledged: Arc::default(),
            stop: Arc::default(),
        };
        let mut tasks = Vec::new();
        for (replica, admin) in admins.iter().enumerate() {
            for writer in 0..3 {
                let (load, admin) = (load.clone(), admin.clone());
                tasks.push(tokio::spawn(async move {
                    load.write(replica, writer, admin).await;
                }));
            }
        }
        (load, tasks)
    }

    async fn write(&self, replica: usize, writer: usize, admin: Session) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let email = format!("r{replica}w{writer}n{n}@acme.example.com");
            let mut request = admin.req(proto::CreateUserRequest {
                email: email.clone(),
                role: proto::Role::NanoReadOnly as i32,
                password: PASSWORD.into(),
            });
            request.set_timeout(DEADLINE);
            let started = Instant::now();
            // The client's own bound, well past the deadline: a call that
            // hangs shows as DEADLINE_EXCEEDED rather than hanging the test.
            let result =
                tokio::time::timeout(DEADLINE * 3, admin.users().create_user(request)).await;
            let code = match result {
                Ok(Ok(_)) => Code::Ok,
                Ok(Err(status)) => status.code(),
                Err(_) => Code::DeadlineExceeded,
            };
            self.calls.lock().await.push(Call {
                replica,
                started,
                ended: Instant::now(),
                code,
            });
            if code == Code::Ok {
                self.acknowledged.lock().await.push(email);
            } else {
                // A client's pause before it retries.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// How many writes of `replica` succeeded after `since`.
    async fn successes(&self, replica: usize, since: Instant) -> usize {
        let calls = self.calls.lock().await;
        calls
            .iter()
            .filter(|c| c.replica == replica && c.code == Code::Ok && c.started >= since)
            .count()
    }

    /// The first success of `replica` that started at or after `since`: when
    /// it ended.
    async fn first_success(&self, replica: usize, since: Instant) -> Option<Instant> {
        let calls = self.calls.lock().await;
        calls
            .iter()
            .filter(|c| c.replica == replica && c.code == Code::Ok && c.started >= since)
            .map(|c| c.ended)
            .min()
    }
}

async fn serving(channel: &tonic::transport::Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32)
}

/// What happens to the cluster in one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    LeaderKilled,
    Switchover,
    LeaderFrozen,
}

struct Harness {
    cluster: Cluster,
    channels: [tonic::transport::Channel; 2],
    admins: [Session; 2],
    load: Load,
}

impl Harness {
    /// Plays `event` under the load and checks everything the module
    /// promises; returns the figures as a line.
    async fn play(&mut self, event: Event) -> String {
        until("the cluster is healthy", async || {
            self.cluster.healthy().await
        })
        .await;
        let (old_leader, candidate) = self.cluster.roles().await;
        let old_leader = old_leader.expect("a leader");
        let candidate = candidate.expect("a sync standby");
        let warm = Instant::now();
        until("both replicas write", async || {
            self.load.successes(0, warm).await >= 2 && self.load.successes(1, warm).await >= 2
        })
        .await;

        let killed = self.cluster.postmaster(old_leader);
        let switchover = {
            let t0 = Instant::now();
            let post = match event {
                Event::LeaderKilled => {
                    signal(killed, libc::SIGKILL);
                    None
                }
                Event::Switchover => {
                    let port = self.cluster.nodes[old_leader].rest_port;
                    let body = format!(
                        "{{\"leader\":\"{}\",\"candidate\":\"{}\"}}",
                        self.cluster.nodes[old_leader].name, self.cluster.nodes[candidate].name
                    );
                    Some(tokio::spawn(async move {
                        http(port, "POST", "/switchover", &body).await
                    }))
                }
                Event::LeaderFrozen => {
                    self.cluster.freeze(old_leader);
                    None
                }
            };
            (t0, post)
        };
        let (t0, post) = switchover;

        // Promotion, as Patroni reports it: a running leader (another node,
        // or for a killed postmaster a new one) that takes writes.
        let mut leader = old_leader;
        until("Patroni has a writable leader again", async || {
            let Some(now) = self.cluster.roles().await.0 else {
                return false;
            };
            let moved = match event {
                Event::LeaderKilled => {
                    std::fs::read_to_string(self.cluster.nodes[now].data.join("postmaster.pid"))
                        .ok()
                        .and_then(|pid| pid.lines().next()?.trim().parse::<i32>().ok())
                        .is_some_and(|pid| pid != killed)
                }
                Event::Switchover | Event::LeaderFrozen => now != old_leader,
            };
            leader = now;
            moved && self.cluster.writable(now).await
        })
        .await;
        let promotion = t0.elapsed();
        let promoted = t0 + promotion;
        if let Some(post) = post {
            let answer = post.await.expect("the switchover request");
            assert!(
                matches!(&answer, Some((200, _))),
                "switchover refused: {answer:?}"
            );
        }

        // Writes back on both replicas.
        until("both replicas write again", async || {
            self.load.first_success(0, t0).await.is_some()
                && self.load.first_success(1, t0).await.is_some()
                && self.load.first_success(0, promoted).await.is_some()
                && self.load.first_success(1, promoted).await.is_some()
        })
        .await;
        let mut back = [Duration::ZERO; 2];
        let mut after_promotion = [Duration::ZERO; 2];
        for (replica, back) in back.iter_mut().enumerate() {
            let first = self.load.first_success(replica, t0).await.expect("a write");
            *back = first - t0;
            assert!(
                *back <= promotion + CATCH_UP,
                "{event:?}: replica {replica} wrote again {back:?} after the event, \
                 promotion took {promotion:?}"
            );
            let after = self
                .load
                .first_success(replica, promoted)
                .await
                .expect("a write");
            after_promotion[replica] = after - promoted;
            assert!(
                after - promoted <= CATCH_UP,
                "{event:?}: replica {replica} wrote again {:?} after the promotion",
                after - promoted
            );
        }

        if event == Event::LeaderFrozen {
            // Frozen a while longer (past the TTL already: a new leader was
            // elected), then back: Patroni demotes it.
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.cluster.thaw(old_leader);
        }

        // Health follows.
        until("both replicas report SERVING", async || {
            serving(&self.channels[0]).await && serving(&self.channels[1]).await
        })
        .await;

        // Both cache listeners heartbeat on the new leader (the lease table
        // is unlogged: a promoted or restarted node starts it empty).
        let on_leader = self
            .cluster
            .client(leader, "usermgmt")
            .await
            .expect("the new leader answers");
        until(
            "both cache listeners heartbeat on the new leader",
            async || {
                on_leader
                    .query_one(
                        "SELECT count(*) FROM cache_replicas WHERE lease_until > now()",
                        &[],
                    )
                    .await
                    .is_ok_and(|row| row.get::<_, i64>(0) >= 2)
            },
        )
        .await;

        // A revocation after the event is refused on both replicas.
        let email = format!("{event:?}@acme.example.com").to_lowercase();
        let user = self.admins[0]
            .create_user(&email, proto::Role::NanoUser)
            .await
            .expect("create after the event");
        let sessions = [
            Session::login(&self.channels[0], &email, PASSWORD).await,
            Session::login(&self.channels[1], &email, PASSWORD).await,
        ];
        for session in &sessions {
            session.who_am_i().await.expect("signed in");
        }
        let asked = self.admins[0]
            .ask_renew(&user.id)
            .await
            .expect("first step");
        self.admins[0]
            .confirm_renew(&user.id, &asked.confirmation_token)
            .await
            .expect("renew the tokenKey");
        for session in &sessions {
            assert_status(
                session.who_am_i().await,
                Code::Unauthenticated,
                Some("TOKEN_REVOKED"),
            );
        }

        // No acknowledged write lost.
        let acknowledged = self.load.acknowledged.lock().await.clone();
        let found: i64 = on_leader
            .query_one(
                "SELECT count(*) FROM users WHERE email = ANY($1)",
                &[&acknowledged],
            )
            .await
            .expect("count on the new leader")
            .get(0);
        assert_eq!(
            found,
            acknowledged.len() as i64,
            "{event:?}: acknowledged writes lost"
        );

        // No call outlived its deadline, and none failed but UNAVAILABLE.
        let calls = self.load.calls.lock().await.clone();
        let of_event: Vec<&Call> = calls.iter().filter(|c| c.ended >= t0).collect();
        let slowest = of_event
            .iter()
            .map(|c| c.ended - c.started)
            .max()
            .unwrap_or_default();
        for call in &of_event {
            let took = call.ended - call.started;
            assert!(
                matches!(call.code, Code::Ok | Code::Unavailable),
                "{event:?}: a call failed {:?} after {took:?}",
                call.code
            );
            assert!(
                took <= DEADLINE + SLACK,
                "{event:?}: a call took {took:?}, its deadline was {DEADLINE:?}"
            );
        }
        let unavailable = of_event
            .iter()
            .filter(|c| c.code == Code::Unavailable)
            .count();
        format!(
            "{event:?}: promotion {:.2} s (Patroni); first write after the event: replica 1 {:.2} s, \
             replica 2 {:.2} s; first write started after the promotion done +{:.2} s, +{:.2} s; \
             {} writes acknowledged in all, none lost; {unavailable} calls UNAVAILABLE, slowest \
             call {:.2} s (deadline {} s)",
            promotion.as_secs_f64(),
            back[0].as_secs_f64(),
            back[1].as_secs_f64(),
            after_promotion[0].as_secs_f64(),
            after_promotion[1].as_secs_f64(),
            acknowledged.len(),
            slowest.as_secs_f64(),
            DEADLINE.as_secs()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Patroni and etcd; .ci/run runs it with --ignored"]
async fn patroni_leader_killed_switched_over_and_frozen_loses_nothing_and_recovers_fast() {
    let cluster = Cluster::start().await;
    until("Patroni has bootstrapped the cluster", async || {
        cluster.healthy().await
    })
    .await;
    let url = cluster.url();
    // Their logs (a warning per failed call) go beside the cluster's.
    let first = Replica::start_logged(&url, &SERVE_ENV, &cluster.dir.join("replica1.log")).await;
    let second = Replica::start_logged(&url, &SERVE_ENV, &cluster.dir.join("replica2.log")).await;
    bootstrap_acme(&url, usermgmt::store::pool::PoolSettings::of_size(1)).await;
    let channels = [channel(first.addr).await, channel(second.addr).await];
    let admins = [
        Session::login(&channels[0], "admin@acme.example.com", ADMIN_PASSWORD).await,
        Session::login(&channels[1], "admin@acme.example.com", ADMIN_PASSWORD).await,
    ];
    let (load, writers) = Load::start(&admins);
    let mut harness = Harness {
        cluster,
        channels,
        admins,
        load,
    };
    let mut figures = Vec::new();
    for event in [Event::LeaderKilled, Event::Switchover, Event::LeaderFrozen] {
        let line = harness.play(event).await;
        println!("patroni {line}");
        figures.push(line);
    }
    harness.load.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer");
    }
    println!(
        "patroni figures (ttl {TTL} s, loop_wait {LOOP_WAIT} s, retry_timeout {RETRY_TIMEOUT} s):"
    );
    for line in figures {
        println!("  {line}");
    }
    drop((first, second));
}
