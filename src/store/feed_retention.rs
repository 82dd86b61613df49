//! The change feed's retention window: the states of changes older than it
//! are dropped (the audit events themselves stay, with their sequence), and
//! the organisation's `pruned_through` says up to which sequence: a resume
//! token before it is refused (`CHANGE_TOKEN_EXPIRED`), never silently
//! continued.
//!
//! Every replica prunes, in bounded batches, each in a transaction of its
//! own; two replicas pruning at once do the same work, and
//! `pruned_through` only grows. A change's events all carry its commit time
//! (`occurred_at`), and sequence numbers are taken in commit order, so the
//! changes older than the window are a prefix of the feed: pruning walks it
//! from `pruned_through` on and stops at the first change inside the window.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int8, Timestamptz};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{audit_events, change_heads};
use super::write::Change;
use super::{Store, Tx, db_error};
use crate::domain::DomainError;

/// The most changes one batch drops.
const BATCH_CHANGES: i64 = 500;
/// A batch stops taking changes once it holds this many audit events (a
/// change holds at least one; seeding's hold thousands).
const BATCH_EVENTS: i64 = 10_000;
/// How many organisations one look at the heads reads.
const HEADS_PAGE: i64 = 1000;

/// What a pruning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The organisations whose `pruned_through` advanced.
    pub organisations: u64,
    /// The changes whose states were dropped.
    pub changes: u64,
    /// The audit events whose state and owner were cleared.
    pub events: u64,
}

#[derive(QueryableByName)]
struct ChangeSize {
    #[diesel(sql_type = Int8)]
    sequence: i64,
    #[diesel(sql_type = Timestamptz)]
    committed_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    events: i64,
}

impl Store {
    /// Drops the states (and owners) of every change that committed before
    /// `older_than`, in bounded batches, and advances each organisation's
    /// `pruned_through` to the last change dropped.
    pub async fn prune_changes(&self, older_than: DateTime<Utc>) -> Result<Pruned, DomainError> {
        let mut pruned = Pruned::default();
        let mut after = None;
        loop {
            let heads = self.heads_to_prune(after).await?;
            let Some((last, _)) = heads.last() else {
                return Ok(pruned);
            };
            after = Some(*last);
            for (organisation_id, mut through) in heads {
                let mut advanced = false;
                loop {
                    let (next, events) = self
                        .prune_batch(organisation_id, through, older_than)
                        .await?;
                    if next <= through {
                        break;
                    }
                    pruned.changes += u64::try_from(next - through).unwrap_or(0);
                    pruned.events += events;
                    through = next;
                    advanced = true;
                }
                pruned.organisations += u64::from(advanced);
            }
        }
    }

    /// A page of the organisations (after `after`, in id order) with
    /// changes not pruned yet, each with its `pruned_through`.
    async fn heads_to_prune(&self, after: Option<Uuid>) -> Result<Vec<(Uuid, i64)>, DomainError> {
        let mut conn = self.conn().await?;
        let mut query = change_heads::table
            .filter(change_heads::pruned_through.lt(change_heads::head))
            .select((change_heads::organisation_id, change_heads::pruned_through))
            .order(change_heads::organisation_id)
            .limit(HEADS_PAGE)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(change_heads::organisation_id.gt(after));
        }
        query.load(&mut conn).await.map_err(db_error)
    }

    /// One batch of the organisation's changes after `through` that
    /// committed before `older_than`: drops their states and advances
    /// `pruned_through`. Returns the new `pruned_through` (`through` when
    /// there was nothing to drop) and how many events it cleared.
    async fn prune_batch(
        &self,
        organisation_id: Uuid,
        through: i64,
        older_than: DateTime<Utc>,
    ) -> Result<(i64, u64), DomainError> {
        self.operate(async |conn| {
            let sizes: Vec<ChangeSize> = diesel::sql_query(
                "SELECT sequence, min(occurred_at) AS committed_at, count(*) AS events \
                 FROM audit_events \
                 WHERE organisation_id = $1 AND sequence > $2 AND sequence <= $3 \
                 GROUP BY sequence ORDER BY sequence",
            )
            .bind::<diesel::sql_types::Uuid, _>(organisation_id)
            .bind::<BigInt, _>(through)
            .bind::<BigInt, _>(through.saturating_add(BATCH_CHANGES))
            .load(conn.pg())
            .await?;
            let next = last_to_drop(&sizes, through, older_than);
            if next <= through {
                return Ok(Change::unchanged((through, 0)));
            }
            let cleared = drop_states(conn, organisation_id, through, next).await?;
            // Only ever forward, whoever else prunes at the same time.
            diesel::sql_query(
                "UPDATE change_heads SET pruned_through = GREATEST(pruned_through, $2) \
                 WHERE organisation_id = $1",
            )
            .bind::<diesel::sql_types::Uuid, _>(organisation_id)
            .bind::<BigInt, _>(next)
            .execute(conn.pg())
            .await?;
            Ok(Change::unchanged((next, cleared)))
        })
        .await
    }
}

/// The last of `sizes` (changes after `through`, in sequence order) to drop:
/// the changes from the first on that committed before `older_than`, while
/// the batch holds at most [`BATCH_EVENTS`] events (at least one change).
fn last_to_drop(sizes: &[ChangeSize], through: i64, older_than: DateTime<Utc>) -> i64 {
    let mut last = through;
    let mut events = 0;
    for size in sizes {
        if size.committed_at >= older_than {
            break;
        }
        if last > through && events + size.events > BATCH_EVENTS {
            break;
        }
        events += size.events;
        last = size.sequence;
    }
    last
}

/// Clears the state and owner of the organisation's events of the changes
/// after `from` up to `to`; returns how many it cleared.
async fn drop_states(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    from: i64,
    to: i64,
) -> Result<u64, DomainError> {
    let cleared = diesel::update(
        audit_events::table
            .filter(audit_events::organisation_id.eq(organisation_id))
            .filter(audit_events::sequence.gt(from))
            .filter(audit_events::sequence.le(to))
            .filter(
                audit_events::state
                    .is_not_null()
                    .or(audit_events::owner_id.is_not_null()),
            ),
    )
    .set((
        audit_events::state.eq(None::<serde_json::Value>),
        audit_events::owner_id.eq(None::<Uuid>),
    ))
    .execute(conn.pg())
    .await?;
    Ok(u64::try_from(cleared).unwrap_or(0))
}

/// How often a replica prunes the change feed.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Prunes the changes older than `retention` every `interval`, until
/// aborted (the first time at once).
pub async fn prune_every(store: Store, retention: Duration, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(older_than) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention))
        else {
            continue;
        };
        match store.prune_changes(older_than).await {
            Ok(pruned) if pruned.changes > 0 => {
                tracing::info!(
                    organisations = pruned.organisations,
                    changes = pruned.changes,
                    events = pruned.events,
                    "dropped the states of changes older than the retention window"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not prune the change feed; retrying later");
            }
        }
    }
}
