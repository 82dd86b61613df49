//! The first steps of double-confirmed actions, and their use in the second.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::models::ConfirmationRow;
use super::schema::confirmations;
use super::text::StoredText as _;
use crate::domain::DomainError;
use crate::domain::actor::ChangeContext;
use crate::domain::confirmation::{
    ConfirmedAction, Confirming, StoredConfirmation, confirmation_valid,
};

/// The first step of a double-confirmed action, as it is stored.
pub struct NewConfirmation<'a> {
    pub action: ConfirmedAction,
    pub target_id: Uuid,
    pub token_hash: &'a [u8],
    pub expires_at: DateTime<Utc>,
}

/// Stores the first step of a double-confirmed action for the caller (and
/// drops the confirmations that expired a day ago or more).
pub async fn insert(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    confirmation: NewConfirmation<'_>,
) -> Result<(), DomainError> {
    let long_expired = Utc::now() - chrono::Duration::days(1);
    diesel::delete(confirmations::table.filter(confirmations::expires_at.lt(long_expired)))
        .execute(conn.pg())
        .await?;
    diesel::insert_into(confirmations::table)
        .values((
            confirmations::id.eq(Uuid::now_v7()),
            confirmations::organisation_id.eq(ctx.organisation_id),
            confirmations::token_hash.eq(confirmation.token_hash),
            confirmations::actor.eq(ctx.actor.to_string()),
            confirmations::action.eq(confirmation.action.stored()),
            confirmations::target_id.eq(confirmation.target_id),
            confirmations::expires_at.eq(confirmation.expires_at),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Checks the confirmation of the second step (locking it) and uses it up:
/// it must be the caller's, for this action and target, unused, unexpired.
pub async fn consume(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    action: ConfirmedAction,
    target_id: Uuid,
    token_hash: &[u8],
) -> Result<(), DomainError> {
    let row = confirmations::table
        .filter(confirmations::token_hash.eq(token_hash))
        .select(ConfirmationRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?;
    let stored = row.as_ref().map(|row| StoredConfirmation {
        organisation_id: row.organisation_id,
        actor: row.actor.clone(),
        action: row.action.clone(),
        target_id: row.target_id,
        expires_at: row.expires_at,
        used: row.used_at.is_some(),
    });
    let actor = ctx.actor.to_string();
    let confirming = Confirming {
        organisation_id: ctx.organisation_id,
        actor: &actor,
        action,
        target_id,
    };
    confirmation_valid(stored.as_ref(), &confirming, Utc::now())?;
    if let Some(row) = row {
        diesel::update(confirmations::table.find(row.id))
            .set(confirmations::used_at.eq(Utc::now()))
            .execute(conn.pg())
            .await?;
    }
    Ok(())
}
