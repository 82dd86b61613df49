//! Password reset links, by the hash of their single-use token.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Store;
use super::Tx;
use super::schema::password_resets;
use crate::domain::DomainError;

/// A pending reset: whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingReset {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
}

impl Store {
    /// Whose pending, unexpired reset this token is, if any (read before
    /// the costly hashing; the reset locks it again in its transaction).
    pub async fn pending_reset(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<PendingReset>, DomainError> {
        let mut conn = self.conn().await?;
        pending(&mut conn, token_hash, false).await
    }
}

/// Stores a reset for the user, valid until `expires_at`; its id.
pub async fn insert(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    user_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<Uuid, DomainError> {
    let id = Uuid::now_v7();
    diesel::insert_into(password_resets::table)
        .values((
            password_resets::id.eq(id),
            password_resets::organisation_id.eq(organisation_id),
            password_resets::user_id.eq(user_id),
            password_resets::token_hash.eq(token_hash),
            password_resets::expires_at.eq(expires_at),
        ))
        .execute(conn.pg())
        .await?;
    Ok(id)
}

/// The pending, unexpired reset of this token, locked for its use.
pub async fn locked_pending(
    conn: &mut Tx<'_>,
    token_hash: &[u8],
) -> Result<Option<PendingReset>, DomainError> {
    pending(conn.pg(), token_hash, true).await
}

async fn pending(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    lock: bool,
) -> Result<Option<PendingReset>, DomainError> {
    let select = password_resets::table
        .filter(password_resets::token_hash.eq(token_hash))
        .filter(password_resets::used_at.is_null())
        .filter(password_resets::expires_at.gt(diesel::dsl::now))
        .select((
            password_resets::id,
            password_resets::organisation_id,
            password_resets::user_id,
        ));
    let row = if lock {
        select.for_update().first::<(Uuid, Uuid, Uuid)>(conn).await
    } else {
        select.first::<(Uuid, Uuid, Uuid)>(conn).await
    }
    .optional()?;
    Ok(row.map(|(id, organisation_id, user_id)| PendingReset {
        id,
        organisation_id,
        user_id,
    }))
}

/// Uses up every pending reset of the user (the one used, and any other
/// link mailed before it).
pub async fn use_all_of_user(conn: &mut Tx<'_>, user_id: Uuid) -> Result<(), DomainError> {
    diesel::update(
        password_resets::table
            .filter(password_resets::user_id.eq(user_id))
            .filter(password_resets::used_at.is_null()),
    )
    .set(password_resets::used_at.eq(Utc::now()))
    .execute(conn.pg())
    .await?;
    Ok(())
}
