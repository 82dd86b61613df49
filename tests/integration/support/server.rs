//! Real servers for tests: in-process on an ephemeral port, or as separate
//! `usermgmt serve` processes (replicas) on one database.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use usermgmt::config::{Cli, Command as CliCommand};

use super::db::TestDb;

/// A server running inside the test's runtime, with its own database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `serve` flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let db = TestDb::new().await;
        let url = db.url.clone();
        Self::start_on(db, &url, extra).await
    }

    /// Starts a server on `db`, reached at `database_url` (e.g. through a
    /// proxy), with extra `serve` flags.
    pub async fn start_on(db: TestDb, database_url: &str, extra: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut argv = vec!["usermgmt", "serve", "--database-url", database_url];
        // Small defaults, unless the test sets them.
        for (flag, value) in [
            ("--db-pool-size", "4"),
            ("--password-hash-concurrency", "2"),
        ] {
            if !extra.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("serve flags");
        let CliCommand::Serve(args) = cli.command else {
            panic!("not a serve command");
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(error) = usermgmt::server::serve(args, listener, async {
                let _ = rx.await;
            })
            .await
            {
                eprintln!("test server failed: {error}");
            }
        });
        wait_until_serving(addr).await;
        TestServer {
            addr,
            db,
            shutdown: Some(tx),
        }
    }

    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// A channel to `addr` from the local address `from` (another 127.0.0.0/8
/// address: another client, as the server sees it).
pub async fn channel_from(addr: SocketAddr, from: std::net::IpAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .local_address(Some(from))
        .connect()
        .await
        .expect("connect")
}

/// Waits (at most 30 s) until the server at `addr` reports SERVING.
pub async fn wait_until_serving(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|response| response.into_inner().status);
            if status.ok() == Some(ServingStatus::Serving as i32) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server at {addr} did not become SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `usermgmt serve` process: a replica of its own, killed when dropped.
pub struct Replica {
    pub addr: SocketAddr,
    child: Child,
}

impl Replica {
    pub async fn start(database_url: &str) -> Self {
        Self::spawn(database_url, &[], Stdio::inherit()).await
    }

    /// A replica with extra environment (settings).
    pub async fn start_with_env(database_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(database_url, env, Stdio::inherit()).await
    }

    /// The process id of the replica.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the replica's process `signal` (`STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// A replica whose log (stderr) goes to `log`, with extra environment.
    pub async fn start_logged(
        database_url: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("create the log file");
        Self::spawn(database_url, env, Stdio::from(file)).await
    }

    async fn spawn(database_url: &str, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let replica = Self::spawn_listening(database_url, env, stderr)
            .await
            .unwrap_or_else(|e| panic!("usermgmt serve: {e}"));
        wait_until_serving(replica.addr).await;
        replica
    }

    /// Starts `usermgmt serve` on a port the system chooses and returns once
    /// the process has said which (it prints `listening on ADDR`), before it
    /// is SERVING; an error if it exits first.
    pub async fn spawn_listening(
        database_url: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Result<Self, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_usermgmt"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--db-pool-size", "4"])
            .env("DATABASE_URL", database_url)
            .env("USERMGMT_LOG", "warn")
            .envs(env.iter().copied())
            .stderr(stderr);
        let (child, addr) = spawn_serve(&mut command).await?;
        Ok(Replica { addr, child })
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Spawns `command` (a `usermgmt serve` with `--listen` on port 0) and
/// returns once the process has said where it listens (it prints
/// `listening on ADDR`), before it is SERVING; an error if it exits first.
pub async fn spawn_serve(command: &mut Command) -> Result<(Child, SocketAddr), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn usermgmt serve: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let announced = tokio::task::spawn_blocking(move || read_listening_address(stdout));
    match tokio::time::timeout(Duration::from_secs(30), announced).await {
        Ok(Ok(Some(addr))) => Ok((child, addr)),
        Ok(Ok(None)) => {
            let status = child.wait().map_err(|e| e.to_string())?;
            Err(format!("exited ({status}) before it listened"))
        }
        Ok(Err(join)) => Err(join.to_string()),
        Err(_) => {
            let _ = child.kill();
            Err("did not say where it listens within 30 s".into())
        }
    }
}

/// The address of the first `listening on ADDR` line, or `None` at the end
/// of the output.
fn read_listening_address(stdout: std::process::ChildStdout) -> Option<SocketAddr> {
    use std::io::BufRead as _;
    std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening on ")?.trim().parse().ok())
}

impl Replica {
    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}
