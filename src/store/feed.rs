//! The change feed's storage: how the write path numbers a change and keeps
//! its targets' states (with its audit events), and the reads a watcher
//! makes. The migration `change_feed` says why the numbers are dense and in
//! commit order.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int8, Timestamptz};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::AuditRow;
use super::schema::{audit_events, change_heads};
use super::{Store, Tx, db_error};
use crate::domain::DomainError;
use crate::domain::change::{ChangeRecord, Heads, Position, TargetChange, TargetState, TargetType};

tokio::task_local! {
    static RECEIPT: std::sync::Mutex<Option<Position>>;
}

/// Runs `work` noting the position of the last change it commits, then
/// returns that with its output (for the server, which answers a write with
/// its change's token).
pub async fn with_receipt<F: Future>(work: F) -> (F::Output, Option<Position>) {
    RECEIPT
        .scope(std::sync::Mutex::new(None), async {
            let output = work.await;
            let receipt = RECEIPT
                .try_with(|cell| cell.lock().ok().and_then(|cell| *cell))
                .ok()
                .flatten();
            (output, receipt)
        })
        .await
}

/// Notes that the work under way committed the change at `position`.
pub(super) fn note_receipt(position: Position) {
    let _ = RECEIPT.try_with(|cell| {
        if let Ok(mut cell) = cell.lock() {
            *cell = Some(position);
        }
    });
}

/// A target's state as a change leaves it, read in the change's transaction.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub owner: Option<Uuid>,
    pub state: Option<TargetState>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The states of the targets `targets` (each a target type and id) of
/// `organisation_id` as the transaction sees them now (after the change), in
/// their order: see `feed_state`.
pub(super) async fn capture(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    targets: &[(&str, &str)],
) -> Result<Vec<Captured>, DomainError> {
    super::feed_state::capture(conn, organisation_id, targets).await
}

#[derive(QueryableByName)]
struct Allocated {
    #[diesel(sql_type = Int8)]
    sequence: i64,
    #[diesel(sql_type = Timestamptz)]
    committed_at: DateTime<Utc>,
}

/// Takes `organisation_id`'s next sequence number, held until the
/// transaction ends: the last step of a change before its commit.
pub(super) async fn next_change(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
) -> Result<Position, DomainError> {
    let allocated: Allocated = diesel::sql_query("SELECT * FROM usermgmt_next_change($1)")
        .bind::<diesel::sql_types::Uuid, _>(organisation_id)
        .get_result(conn.pg())
        .await?;
    Ok(Position {
        organisation_id,
        sequence: allocated.sequence,
        committed_at: Some(allocated.committed_at),
    })
}

/// The most changes one read returns.
pub const MAX_BATCH: i64 = 1000;

impl Store {
    /// The heads of `organisations` (an organisation without a change yet
    /// has none in the result: its head is 0).
    pub async fn change_heads(
        &self,
        organisations: &[Uuid],
    ) -> Result<Vec<(Uuid, Heads)>, DomainError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(Uuid, i64, i64)> = change_heads::table
            .filter(change_heads::organisation_id.eq_any(organisations))
            .select((
                change_heads::organisation_id,
                change_heads::head,
                change_heads::pruned_through,
            ))
            .load(&mut conn)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, head, pruned_through)| {
                (
                    id,
                    Heads {
                        head,
                        pruned_through,
                    },
                )
            })
            .collect())
    }

    /// The heads of one organisation.
    pub async fn change_head(&self, organisation_id: Uuid) -> Result<Heads, DomainError> {
        Ok(self
            .change_heads(&[organisation_id])
            .await?
            .into_iter()
            .next()
            .map(|(_, heads)| heads)
            .unwrap_or_default())
    }

    /// When the change `sequence` of the organisation committed, while it is
    /// held.
    pub async fn change_commit_time(
        &self,
        organisation_id: Uuid,
        sequence: i64,
    ) -> Result<Option<DateTime<Utc>>, DomainError> {
        let mut conn = self.conn().await?;
        audit_events::table
            .filter(audit_events::organisation_id.eq(organisation_id))
            .filter(audit_events::sequence.eq(sequence))
            .select(audit_events::occurred_at)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)
    }

    /// The organisation's committed changes after `after`, oldest first, at
    /// most `limit` of them (and at most [`MAX_BATCH`]).
    pub async fn changes_after(
        &self,
        organisation_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChangeRecord>, DomainError> {
        let limit = limit.clamp(1, MAX_BATCH);
        let mut conn = self.conn().await?;
        let rows: Vec<AuditRow> = audit_events::table
            .filter(audit_events::organisation_id.eq(organisation_id))
            .filter(audit_events::sequence.gt(after))
            .filter(audit_events::sequence.le(after.saturating_add(limit)))
            .order((audit_events::sequence.asc(), audit_events::id.asc()))
            .select(AuditRow::as_select())
            .load(&mut conn)
            .await
            .map_err(db_error)?;
        group_changes(rows)
    }
}

/// Audit rows, in sequence order, as the changes they make up.
fn group_changes(rows: Vec<AuditRow>) -> Result<Vec<ChangeRecord>, DomainError> {
    let mut changes: Vec<ChangeRecord> = Vec::new();
    for row in rows {
        let Some(sequence) = row.sequence else {
            continue;
        };
        let target = target_of(&row)?;
        match changes.last_mut() {
            Some(last) if last.sequence == sequence => last.targets.extend(target),
            _ => changes.push(ChangeRecord {
                organisation_id: row.organisation_id,
                sequence,
                committed_at: row.occurred_at,
                actor: row.actor,
                request_id: row.request_id,
                targets: target.into_iter().collect(),
            }),
        }
    }
    Ok(changes)
}

/// The target an audit row of a change names; None for a type the feed
/// does not know. A stored state that does not read is an error, never a
/// tombstone: a client would drop a target that exists.
fn target_of(row: &AuditRow) -> Result<Option<TargetChange>, DomainError> {
    let Some(target_type) = TargetType::parse(&row.target_type) else {
        return Ok(None);
    };
    let state = row
        .state
        .as_ref()
        .map(|json| serde_json::from_value::<TargetState>(json.clone()))
        .transpose()
        .map_err(|error| {
            DomainError::Internal(format!(
                "the stored state of audit event {}: {error}",
                row.id
            ))
        })?;
    Ok(Some(TargetChange {
        action: row.action.clone(),
        target_type,
        target_id: row.target_id.clone(),
        owner: row.owner_id,
        state,
        expires_at: row.expires_at,
    }))
}

/// The notification channel of committed changes (payload
/// "<organisation id>:<sequence>"), which `usermgmt_next_change` notifies.
const CHANNEL: &str = "usermgmt_changes";

/// How long the doorbell waits before listening again after its connection
/// failed (the watchers' polling covers the gap).
const RELISTEN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Store {
    /// Rings `doorbell` with (organisation, sequence) for every change
    /// committed while it listens, on a connection of its own, listening
    /// again after any failure. A notification is only a hint: it may be
    /// lost (while the connection is down, say), so watchers poll too. Runs
    /// until the task is aborted or `doorbell` is closed.
    pub async fn listen_for_changes(&self, doorbell: tokio::sync::mpsc::Sender<(Uuid, i64)>) {
        while !doorbell.is_closed() {
            if let Err(error) = self.listen_once(&doorbell).await {
                tracing::warn!(%error, "change feed listener failed; polling until it is back");
            }
            tokio::time::sleep(RELISTEN_AFTER).await;
        }
    }

    async fn listen_once(
        &self,
        doorbell: &tokio::sync::mpsc::Sender<(Uuid, i64)>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use futures::StreamExt as _;
        let connector = self.pool.manager().connector();
        let (client, mut connection, _) =
            connector.connect(Some("usermgmt-change-listener")).await?;
        let (tx, mut payloads) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                        if tx.send(notification.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let listened = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await;
        let result = match listened {
            Ok(Ok(())) => {
                while let Some(payload) = payloads.recv().await {
                    if let Some(rung) = parse_ring(&payload)
                        && doorbell.send(rung).await.is_err()
                    {
                        break;
                    }
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err("LISTEN timed out".into()),
        };
        driver.abort();
        result
    }

    /// Whether the internal service key whose SHA-256 is `key_hash` still
    /// works (registered, not revoked), by the database as it is now.
    pub async fn service_key_works(&self, key_hash: &[u8]) -> Result<bool, DomainError> {
        use super::schema::service_credentials;
        let mut conn = self.conn().await?;
        let found: Option<Uuid> = service_credentials::table
            .filter(service_credentials::secret_hash.eq(key_hash))
            .filter(service_credentials::revoked_at.is_null())
            .select(service_credentials::id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?;
        Ok(found.is_some())
    }
}

fn parse_ring(payload: &str) -> Option<(Uuid, i64)> {
    let (organisation, sequence) = payload.split_once(':')?;
    Some((organisation.parse().ok()?, sequence.parse().ok()?))
}

/// How many targets a snapshot page holds.
const SNAPSHOT_PAGE: i64 = 200;

#[derive(QueryableByName)]
struct TargetId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The ids of the organisation's live targets of `target_type` after
/// `after`, in id order: the query of each type and whether its ids are
/// UUIDs (ordered as such, on the table's index).
fn live_targets(target_type: TargetType) -> (&'static str, bool) {
    match target_type {
        TargetType::User => (
            "SELECT id::text AS id FROM users WHERE organisation_id = $1 AND id > $2::uuid \
             ORDER BY id LIMIT $3",
            true,
        ),
        TargetType::Invite => (
            "SELECT id::text AS id FROM invites WHERE organisation_id = $1 AND id > $2::uuid \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now() \
             ORDER BY id LIMIT $3",
            true,
        ),
        TargetType::Session => (
            "SELECT id::text AS id FROM sessions WHERE organisation_id = $1 AND id > $2::uuid \
             AND ended_at IS NULL AND expires_at > now() ORDER BY id LIMIT $3",
            true,
        ),
        TargetType::ApiToken => (
            "SELECT id::text AS id FROM api_tokens WHERE organisation_id = $1 AND id > $2::uuid \
             AND revoked_at IS NULL AND expires_at > now() ORDER BY id LIMIT $3",
            true,
        ),
        TargetType::PlaybackToken => (
            "SELECT jti::text AS id FROM playback_tokens WHERE organisation_id = $1 \
             AND jti > $2::uuid AND expires_at > now() ORDER BY jti LIMIT $3",
            true,
        ),
        TargetType::PlaybackKey => (
            "SELECT kid AS id FROM playback_signing_keys WHERE organisation_id = $1 \
             AND kid > $2 AND revoked_at IS NULL ORDER BY kid LIMIT $3",
            false,
        ),
        TargetType::Organisation => (
            "SELECT id::text AS id FROM organisations WHERE id = $1 AND id > $2::uuid \
             ORDER BY id LIMIT $3",
            true,
        ),
        // Only in the deployment's feed (the nil organisation id).
        TargetType::Service => (
            "SELECT id::text AS id FROM service_credentials \
             WHERE $1 = '00000000-0000-0000-0000-000000000000'::uuid AND id > $2::uuid \
             AND revoked_at IS NULL ORDER BY id LIMIT $3",
            true,
        ),
    }
}

impl Store {
    /// Sends the organisation's live targets of `types` (empty: every type)
    /// to `pages`, a page at a time, each with the head read before the
    /// first: every target shows its state at that sequence or later, so
    /// the changes after it bring every one to its current state. Returns
    /// that head (also when `pages` closed early).
    pub async fn snapshot(
        &self,
        organisation_id: Uuid,
        types: &[TargetType],
        pages: tokio::sync::mpsc::Sender<(i64, Vec<TargetChange>)>,
    ) -> Result<i64, DomainError> {
        let head = self.change_head(organisation_id).await?.head;
        let types = if types.is_empty() {
            &TargetType::ALL[..]
        } else {
            types
        };
        for target_type in types {
            let (query, uuid_ids) = live_targets(*target_type);
            let mut after = if uuid_ids {
                Uuid::nil().to_string()
            } else {
                String::new()
            };
            loop {
                let page = self
                    .snapshot_page(organisation_id, *target_type, query, &after)
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.target_id.clone();
                if pages.send((head, page)).await.is_err() {
                    return Ok(head);
                }
            }
        }
        Ok(head)
    }

    async fn snapshot_page(
        &self,
        organisation_id: Uuid,
        target_type: TargetType,
        query: &str,
        after: &str,
    ) -> Result<Vec<TargetChange>, DomainError> {
        let mut conn = self.conn().await?;
        let ids: Vec<TargetId> = diesel::sql_query(query)
            .bind::<diesel::sql_types::Uuid, _>(organisation_id)
            .bind::<diesel::sql_types::Text, _>(after)
            .bind::<Int8, _>(SNAPSHOT_PAGE)
            .load(&mut *conn)
            .await
            .map_err(db_error)?;
        let targets: Vec<(&str, &str)> = ids
            .iter()
            .map(|TargetId { id }| (target_type.as_str(), id.as_str()))
            .collect();
        let captured = capture(&mut Tx::over(&mut conn), organisation_id, &targets).await?;
        // A target gone since the ids were read keeps a tombstone for now:
        // its own tombstone follows in the feed.
        let mut page: Vec<TargetChange> = ids
            .into_iter()
            .zip(captured)
            .map(|(TargetId { id }, captured)| TargetChange {
                action: SNAPSHOT.to_owned(),
                target_type,
                target_id: id.clone(),
                owner: captured.owner,
                expires_at: captured.state.as_ref().and(captured.expires_at),
                state: captured.state,
            })
            .collect();
        // Tombstones only kept the page's keyset position.
        let last = page.last().map(|target| target.target_id.clone());
        page.retain(|target| target.state.is_some());
        if page.is_empty()
            && let Some(last) = last
        {
            page.push(TargetChange {
                action: SNAPSHOT.to_owned(),
                target_type,
                target_id: last,
                owner: None,
                state: None,
                expires_at: None,
            });
        }
        Ok(page)
    }
}

/// The action of a snapshot's targets.
pub const SNAPSHOT: &str = "snapshot";
