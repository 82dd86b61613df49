//! A TCP proxy between a server and PostgreSQL that can play a database
//! outage: `cut` closes every open connection and refuses new ones (as a
//! stopped PostgreSQL does), `restore` lets connections through again. The
//! machine's PostgreSQL is never touched: other tests use it meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    accept: JoinHandle<()>,
}

impl DbProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
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
                    let task = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
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
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
