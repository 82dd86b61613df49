//! The usual arrangements: one server with an organisation, or two
//! `usermgmt serve` replicas on one database with an organisation.

use tonic::transport::Channel;

use super::{ADMIN_PASSWORD, Org, Replica, Session, TestDb, TestServer, channel, create_org};

/// One in-process server on a fresh database, with the organisation Acme
/// (bootstrapped as `usermgmt bootstrap` does) and a channel to the server.
pub struct OneServer {
    pub channel: Channel,
    pub org: Org,
    pub server: TestServer,
}

impl OneServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra `serve` flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let server = TestServer::start_with(extra).await;
        let org = create_org(&server.db, "Acme").await;
        let channel = server.channel().await;
        OneServer {
            channel,
            org,
            server,
        }
    }
}

/// Two `usermgmt serve` processes (replicas) on one fresh database, both
/// SERVING, with the organisation Acme and a channel to each. The replicas
/// are killed before the database is dropped (fields drop in order).
pub struct TwoReplicas {
    pub on_first: Channel,
    pub on_second: Channel,
    pub org: Org,
    #[allow(dead_code, reason = "held: a replica runs until dropped")]
    pub first: Replica,
    #[allow(dead_code, reason = "held: a replica runs until dropped")]
    pub second: Replica,
    pub db: TestDb,
}

impl TwoReplicas {
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// Both replicas with extra environment (settings).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let first = Replica::start_with_env(&db.url, env).await;
        let second = Replica::start_with_env(&db.url, env).await;
        let org = create_org(&db, "Acme").await;
        let on_first = channel(first.addr).await;
        let on_second = channel(second.addr).await;
        TwoReplicas {
            on_first,
            on_second,
            org,
            first,
            second,
            db,
        }
    }

    /// A fresh sign-in of Acme's first nanoAdmin through the first replica.
    pub async fn admin(&self) -> Session {
        Session::login(&self.on_first, &self.org.admin_email, ADMIN_PASSWORD).await
    }
}
