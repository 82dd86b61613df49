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
        Ok(group_changes(rows))
    }
}

/// Audit rows, in sequence order, as the changes they make up.
fn group_changes(rows: Vec<AuditRow>) -> Vec<ChangeRecord> {
    let mut changes: Vec<ChangeRecord> = Vec::new();
    for row in rows {
        let Some(sequence) = row.sequence else {
            continue;
        };
        let target = target_of(&row);
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
    changes
}

fn target_of(row: &AuditRow) -> Option<TargetChange> {
    let target_type = TargetType::parse(&row.target_type)?;
    let state = match &row.state {
        Some(json) => match serde_json::from_value::<TargetState>(json.clone()) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::error!(%error, id = %row.id, "a change's stored state does not read");
                None
            }
        },
        None => None,
    };
    Some(TargetChange {
        action: row.action.clone(),
        target_type,
        target_id: row.target_id.clone(),
        owner: row.owner_id,
        state,
        expires_at: row.expires_at,
    })
}
