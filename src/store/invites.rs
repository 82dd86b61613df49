//! Invites: pending ones are neither accepted nor revoked, and unexpired.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Store;
use super::Tx;
use super::models::{InviteRow, creator};
use super::schema::invites;
use super::text::StoredText as _;
use crate::domain::actor::{Actor, ChangeContext};
use crate::domain::invite::Invite;
use crate::domain::{DomainError, Role, email::Email};

/// A new invite, as the use case prepared it.
pub struct NewInvite<'a> {
    pub email: &'a Email,
    pub role: Role,
    pub token_hash: &'a [u8],
    pub expires_at: DateTime<Utc>,
}

/// An invite found by its token, before any lock: where to take the lock,
/// and on whose authority the invite was made.
#[derive(Debug, Clone)]
pub struct InviteOrigin {
    pub organisation_id: Uuid,
    pub created_by: Actor,
}

/// A creator's columns: its user id, or its API key's fingerprint.
fn creator_columns(creator: &Actor) -> (Option<Uuid>, Option<&str>) {
    match creator {
        Actor::User(id) => (Some(*id), None),
        Actor::ApiKey(fingerprint) => (None, Some(fingerprint.as_str())),
        // No invite is the operator's: matches none, and cannot be stored.
        Actor::Operator => (None, None),
    }
}

/// The invites `creator` made: by its user id, or by its API key's
/// fingerprint and no user id (the other column's comparison is null).
macro_rules! created_by {
    ($creator:expr) => {{
        let (user_id, key_fingerprint) = creator_columns($creator);
        invites::created_by_user_id
            .eq(user_id)
            .or(invites::created_by_user_id
                .is_null()
                .and(invites::created_by_key_fingerprint.eq(key_fingerprint)))
    }};
}

macro_rules! pending {
    () => {
        invites::accepted_at
            .is_null()
            .and(invites::revoked_at.is_null())
            .and(invites::expires_at.gt(Utc::now()))
    };
}

impl Store {
    /// Pending invites, oldest first.
    pub async fn list_invites(
        &self,
        organisation_id: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Invite>, DomainError> {
        let mut conn = self.conn().await?;
        let mut query = invites::table
            .filter(invites::organisation_id.eq(organisation_id))
            .filter(pending!())
            .select(InviteRow::as_select())
            .order(invites::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(invites::id.gt(after));
        }
        let rows = query.load(&mut conn).await?;
        rows.into_iter().map(Invite::try_from).collect()
    }

    /// The organisation and creator of the pending invite with this token
    /// hash, if there is one.
    pub async fn pending_invite_origin(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<InviteOrigin>, DomainError> {
        let mut conn = self.conn().await?;
        let found: Option<(Uuid, Option<Uuid>, Option<String>)> = invites::table
            .filter(invites::token_hash.eq(token_hash))
            .filter(pending!())
            .select((
                invites::organisation_id,
                invites::created_by_user_id,
                invites::created_by_key_fingerprint,
            ))
            .first(&mut conn)
            .await
            .optional()?;
        found
            .map(|(organisation_id, user_id, key_fingerprint)| {
                Ok(InviteOrigin {
                    organisation_id,
                    created_by: creator(user_id, key_fingerprint)?,
                })
            })
            .transpose()
    }
}

/// Whether the email has a pending invite in the organisation.
pub async fn pending_for_email(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    email: &str,
) -> Result<bool, DomainError> {
    let count: i64 = invites::table
        .filter(invites::organisation_id.eq(organisation_id))
        .filter(invites::email.eq(email))
        .filter(pending!())
        .count()
        .get_result(conn.pg())
        .await?;
    Ok(count > 0)
}

/// Inserts an invite made by the caller.
pub async fn insert(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    new: NewInvite<'_>,
) -> Result<Invite, DomainError> {
    let (user_id, key_fingerprint) = creator_columns(&ctx.actor);
    diesel::insert_into(invites::table)
        .values((
            invites::id.eq(Uuid::now_v7()),
            invites::organisation_id.eq(ctx.organisation_id),
            invites::email.eq(new.email.as_str()),
            invites::role.eq(new.role.stored()),
            invites::token_hash.eq(new.token_hash),
            invites::created_by_user_id.eq(user_id),
            invites::created_by_key_fingerprint.eq(key_fingerprint),
            invites::expires_at.eq(new.expires_at),
        ))
        .returning(InviteRow::as_returning())
        .get_result(conn.pg())
        .await?
        .try_into()
}

/// Revokes a pending invite of the organisation.
pub async fn revoke(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    invite_id: Uuid,
) -> Result<Invite, DomainError> {
    diesel::update(
        invites::table
            .filter(invites::organisation_id.eq(organisation_id))
            .filter(invites::id.eq(invite_id))
            .filter(pending!()),
    )
    .set(invites::revoked_at.eq(Utc::now()))
    .returning(InviteRow::as_returning())
    .get_result(conn.pg())
    .await
    .optional()?
    .ok_or(DomainError::NotFound("invite"))?
    .try_into()
}

/// Revokes every pending invite that `creator` made in the organisation;
/// returns them.
pub async fn revoke_created_by(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    creator: &Actor,
) -> Result<Vec<Invite>, DomainError> {
    let rows: Vec<InviteRow> = diesel::update(
        invites::table
            .filter(invites::organisation_id.eq(organisation_id))
            .filter(created_by!(creator))
            .filter(pending!()),
    )
    .set(invites::revoked_at.eq(Utc::now()))
    .returning(InviteRow::as_returning())
    .get_results(conn.pg())
    .await?;
    rows.into_iter().map(Invite::try_from).collect()
}

/// How many pending invites `creator` made in the organisation.
pub async fn pending_created_by(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    creator: &Actor,
) -> Result<i64, DomainError> {
    Ok(invites::table
        .filter(invites::organisation_id.eq(organisation_id))
        .filter(created_by!(creator))
        .filter(pending!())
        .count()
        .get_result(conn.pg())
        .await?)
}

/// The pending invite with this token hash, locked; none if it is used,
/// revoked, expired or unknown.
pub async fn locked_pending(
    conn: &mut Tx<'_>,
    token_hash: &[u8],
) -> Result<Option<Invite>, DomainError> {
    invites::table
        .filter(invites::token_hash.eq(token_hash))
        .filter(pending!())
        .select(InviteRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?
        .map(Invite::try_from)
        .transpose()
}

/// Marks the invite as used by the user it created.
pub async fn mark_accepted(
    conn: &mut Tx<'_>,
    invite_id: Uuid,
    user_id: Uuid,
) -> Result<(), DomainError> {
    diesel::update(invites::table.find(invite_id))
        .set((
            invites::accepted_at.eq(Utc::now()),
            invites::accepted_user_id.eq(user_id),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}
