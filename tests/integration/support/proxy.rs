//! A TCP proxy between a server and PostgreSQL that can play a database
//! outage: `cut` closes every open connection and refuses new ones (as a
//! stopped PostgreSQL does), `restore` lets connections through again;
//! `freeze` keeps every connection open and accepts new ones but passes no
//! byte on (as a stopped process or a frozen machine, whose kernel still
//! completes TCP handshakes), `thaw` lets the bytes through again. The
//! machine's PostgreSQL is never touched: other tests use it meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct DbProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut; connection tasks end when it changes.
    generation: watch::Sender<u64>,
    /// The connection tasks, aborted on a cut as well (belt and braces).
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Whether bytes stop at the proxy.
    frozen: watch::Sender<bool>,
    /// The local ports of the proxy's connections to the server.
    upstream: Arc<Mutex<Vec<u16>>>,
    accept: JoinHandle<()>,
}

/// Passes bytes from `from` to `to`, holding them, and the end of the
/// stream too, while frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await;
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl DbProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (frozen, _) = watch::channel(false);
        let upstream: Arc<Mutex<Vec<u16>>> = Arc::default();
        let accept = tokio::spawn({
            let frozen = frozen.clone();
            let upstream = upstream.clone();
            let up = up.clone();
            let generation = generation.clone();
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    // Subscribed before `up` is read: a cut that this read
                    // misses has not sent its generation yet, so the
                    // connection still sees it (`cut` stores, then sends).
                    let mut cut = generation.subscribe();
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut thawed = frozen.subscribe();
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        let pass = async {
                            // A frozen server's kernel accepts; nothing more.
                            if thawed.wait_for(|frozen| !*frozen).await.is_err() {
                                return;
                            }
                            let Ok(server) = TcpStream::connect(target).await else {
                                return;
                            };
                            if let Ok(local) = server.local_addr() {
                                upstream.lock().expect("upstream").push(local.port());
                            }
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::select! {
                                _ = pump(client_read, server_write, thawed.clone()) => {}
                                _ = pump(server_read, client_write, thawed.clone()) => {}
                            }
                        };
                        tokio::select! {
                            _ = pass => {}
                            _ = cut.changed() => {}
                        }
                        // Dropping both ends closes them: the cut.
                    });
                    let mut tasks = connections.lock().expect("connections");
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task);
                }
            }
        });
        DbProxy {
            addr,
            up,
            generation,
            connections,
            frozen,
            upstream,
            accept,
        }
    }

    /// The URL of `database` through the proxy.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@{}/{database}", self.addr)
    }

    /// Closes every connection, including one being accepted right now, and
    /// refuses new ones until [`DbProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
        for task in self.connections.lock().expect("connections").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Holds every byte at the proxy, both ways, on open connections and new
    /// ones alike, which are accepted and left waiting: a hung database.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// The local ports of every connection the proxy opened to the server
    /// (its sessions there have these as `client_port`).
    pub fn upstream_ports(&self) -> Vec<i32> {
        let ports = self.upstream.lock().expect("upstream");
        ports.iter().map(|port| i32::from(*port)).collect()
    }

    /// Lets the held bytes through again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
