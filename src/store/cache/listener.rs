//! The listener task of a replica: it listens for changes and evicts what
//! they concern, sends the heartbeats that keep the cache trusted and renews
//! the replica's lease, and acknowledges writers' probes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::{CHANNEL, Cache, HEARTBEAT, LEASE};
use crate::store::connect::Connector;

/// Keeps `cache` in step with the database: listens for changes, sends
/// heartbeats, acknowledges probes. Reconnects after any failure; the cache is
/// distrusted and emptied meanwhile. Runs until the task is aborted.
/// Connects with `connector`, as the pool does: every host in turn, each
/// under the per-host deadline, so that a host that hangs is passed over.
pub async fn maintain(cache: Arc<Cache>, connector: Connector) {
    loop {
        match listen(&cache, &connector).await {
            Ok(()) => tracing::warn!("cache listener ended; the cache is off until it is back"),
            Err(error) => {
                tracing::warn!(%error, "cache listener failed; the cache is off until it is back")
            }
        }
        cache.distrust();
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn listen(
    cache: &Cache,
    connector: &Connector,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (client, mut connection, _) = connector.connect(Some("usermgmt-cache-listener")).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if tx.send(notification.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let result = serve_notifications(cache, &client, &mut notifications).await;
    driver.abort();
    result
}

async fn serve_notifications(
    cache: &Cache,
    client: &tokio_postgres::Client,
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listen = format!("LISTEN {CHANNEL}");
    tokio::time::timeout(LEASE, client.batch_execute(&listen)).await??;
    // Whatever was cached before may have missed notifications.
    cache.clear();
    let me = cache.replica_id();
    let mut heartbeats = Heartbeats::new(me);
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let heartbeat = format!(
                    "BEGIN; \
                     INSERT INTO cache_replicas (id, lease_until) VALUES ('{me}', now() + interval '{} milliseconds') \
                     ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until; \
                     SELECT pg_notify('{CHANNEL}', '{}'); COMMIT",
                    LEASE.as_millis(),
                    heartbeats.next(),
                );
                tokio::time::timeout(LEASE, client.batch_execute(&heartbeat)).await??;
            }
            payload = notifications.recv() => {
                let Some(payload) = payload else { return Ok(()) };
                handle(cache, client, &heartbeats, &payload).await?;
            }
        }
    }
}

/// The heartbeats of one listener session. Each session has a nonce of its
/// own: a heartbeat an earlier session sent may still be delivered to this
/// one (its commit came late), and its beat number must not be taken for one
/// of this session's.
struct Heartbeats {
    replica: Uuid,
    session: Uuid,
    beat: u64,
    sent: HashMap<u64, Instant>,
}

impl Heartbeats {
    fn new(replica: Uuid) -> Self {
        Self {
            replica,
            session: Uuid::new_v4(),
            beat: 0,
            sent: HashMap::new(),
        }
    }

    /// The payload of the next heartbeat, sent now.
    fn next(&mut self) -> String {
        self.beat += 1;
        let beat = self.beat;
        self.sent.insert(beat, Instant::now());
        self.sent.retain(|n, _| *n + 20 > beat);
        format!("hb:{}:{}:{beat}", self.replica, self.session)
    }

    /// When this session sent the heartbeat whose payload, after `hb:`, is
    /// `rest`; `None` when it is not one of this session's.
    fn sent_at(&self, rest: &str) -> Option<Instant> {
        let mut parts = rest.splitn(3, ':');
        let replica: Uuid = parts.next()?.parse().ok()?;
        let session: Uuid = parts.next()?.parse().ok()?;
        let beat: u64 = parts.next()?.parse().ok()?;
        if replica != self.replica || session != self.session {
            return None;
        }
        self.sent.get(&beat).copied()
    }
}

async fn handle(
    cache: &Cache,
    client: &tokio_postgres::Client,
    heartbeats: &Heartbeats,
    payload: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let me = heartbeats.replica;
    let (kind, rest) = payload.split_once(':').unwrap_or((payload, ""));
    match kind {
        "org" => match rest.parse() {
            Ok(organisation_id) => cache.evict_organisation(organisation_id),
            Err(_) => cache.clear(),
        },
        "services" => cache.evict_services(),
        "all" => cache.clear(),
        "probe" => {
            if let Ok(probe) = rest.parse::<Uuid>() {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&probe, &me];
                let ack = client.execute(
                    "INSERT INTO cache_acks (probe_id, replica_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &params,
                );
                tokio::time::timeout(LEASE, ack).await??;
            }
        }
        "hb" => {
            if let Some(sent) = heartbeats.sent_at(rest) {
                cache.trust_from(sent);
            }
        }
        _ => cache.clear(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_heartbeat_of_an_earlier_session_is_not_counted() {
        let replica = Uuid::new_v4();
        let mut earlier = Heartbeats::new(replica);
        let late = earlier.next();
        let mut current = Heartbeats::new(replica);
        let own = current.next();
        let rest = |payload: &str| payload.strip_prefix("hb:").map(str::to_owned);
        let (late, own) = (rest(&late).expect("hb"), rest(&own).expect("hb"));
        assert_eq!(current.sent_at(&late), None);
        assert!(current.sent_at(&own).is_some());
        assert_eq!(Heartbeats::new(Uuid::new_v4()).sent_at(&own), None);
    }
}
