use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use uuid::Uuid;

use super::Store;
use super::admin::{insert_user, lock_organisation};
use super::audit::{Audit, record};
use super::models::InviteRow;
use super::schema::{invites, users};
use crate::domain::actor::{Actor, ChangeContext};
use crate::domain::audit::{INVITE_ACCEPT, INVITE_CREATE, INVITE_REVOKE};
use crate::domain::error::AuthFailure;
use crate::domain::invite::Invite;
use crate::domain::{DomainError, Role, email::Email, user::User};

/// A new invite, as the handler prepared it.
pub struct NewInvite<'a> {
    pub email: &'a Email,
    pub role: Role,
    pub token_hash: &'a [u8],
    pub expires_at: DateTime<Utc>,
}

fn invite_audit(action: &'static str, invite: &Invite, after: Option<String>) -> Audit {
    Audit {
        action,
        target_type: "invite",
        target_id: invite.id.to_string(),
        target_label: invite.email.clone(),
        before: None,
        after,
    }
}

macro_rules! pending {
    () => {
        invites::accepted_at
            .is_null()
            .and(invites::revoked_at.is_null())
    };
}

impl Store {
    pub async fn create_invite(
        &self,
        ctx: &ChangeContext,
        new: NewInvite<'_>,
    ) -> Result<Invite, DomainError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, DomainError, _>(async |conn| {
            lock_organisation(conn, ctx.organisation_id).await?;
            let email = new.email.as_str();
            let user_exists: i64 = users::table
                .filter(users::organisation_id.eq(ctx.organisation_id))
                .filter(super::users::lower(users::email).eq(email))
                .count()
                .get_result(conn)
                .await?;
            if user_exists > 0 {
                return Err(DomainError::AlreadyExists {
                    resource: "user",
                    message: "a user with this email exists in the organisation".into(),
                });
            }
            let pending: i64 = invites::table
                .filter(invites::organisation_id.eq(ctx.organisation_id))
                .filter(invites::email.eq(email))
                .filter(pending!())
                .filter(invites::expires_at.gt(Utc::now()))
                .count()
                .get_result(conn)
                .await?;
            if pending > 0 {
                return Err(DomainError::AlreadyExists {
                    resource: "invite",
                    message: "this email has a pending invite: revoke it first".into(),
                });
            }
            let invite: Invite = diesel::insert_into(invites::table)
                .values((
                    invites::id.eq(Uuid::now_v7()),
                    invites::organisation_id.eq(ctx.organisation_id),
                    invites::email.eq(email),
                    invites::role.eq(new.role.as_str()),
                    invites::token_hash.eq(new.token_hash),
                    invites::created_by.eq(ctx.actor.to_string()),
                    invites::expires_at.eq(new.expires_at),
                ))
                .returning(InviteRow::as_returning())
                .get_result(conn)
                .await?
                .try_into()?;
            record(
                conn,
                ctx,
                invite_audit(INVITE_CREATE, &invite, Some(invite.role.to_string())),
            )
            .await?;
            Ok(invite)
        })
        .await
    }

    /// Pending, unexpired invites, oldest first.
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
            .filter(invites::expires_at.gt(Utc::now()))
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

    pub async fn revoke_invite(
        &self,
        ctx: &ChangeContext,
        invite_id: Uuid,
    ) -> Result<Invite, DomainError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, DomainError, _>(async |conn| {
            lock_organisation(conn, ctx.organisation_id).await?;
            let invite: Invite = diesel::update(
                invites::table
                    .filter(invites::organisation_id.eq(ctx.organisation_id))
                    .filter(invites::id.eq(invite_id))
                    .filter(pending!())
                    .filter(invites::expires_at.gt(Utc::now())),
            )
            .set(invites::revoked_at.eq(Utc::now()))
            .returning(InviteRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
            .ok_or(DomainError::NotFound("invite"))?
            .try_into()?;
            record(conn, ctx, invite_audit(INVITE_REVOKE, &invite, None)).await?;
            Ok(invite)
        })
        .await
    }

    /// Whether an invite with this token hash is pending and unexpired.
    pub async fn invite_pending(&self, token_hash: &[u8]) -> Result<bool, DomainError> {
        let mut conn = self.conn().await?;
        let count: i64 = invites::table
            .filter(invites::token_hash.eq(token_hash))
            .filter(pending!())
            .filter(invites::expires_at.gt(Utc::now()))
            .count()
            .get_result(&mut conn)
            .await?;
        Ok(count > 0)
    }

    /// Creates the invited user and uses the invite up. A used, revoked,
    /// expired or unknown invite fails alike.
    pub async fn accept_invite(
        &self,
        token_hash: &[u8],
        password_hash: &str,
        request_id: Option<String>,
    ) -> Result<User, DomainError> {
        let invalid = || DomainError::Unauthenticated(AuthFailure::InviteInvalid);
        let mut conn = self.conn().await?;
        // The organisation first, without locks: locks are always taken
        // organisation first, then its rows.
        let organisation_id: Uuid = invites::table
            .filter(invites::token_hash.eq(token_hash))
            .select(invites::organisation_id)
            .first(&mut conn)
            .await
            .optional()?
            .ok_or_else(invalid)?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                lock_organisation(conn, organisation_id).await?;
                let invite: Invite = invites::table
                    .filter(invites::token_hash.eq(token_hash))
                    .filter(pending!())
                    .filter(invites::expires_at.gt(Utc::now()))
                    .select(InviteRow::as_select())
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(invalid)?
                    .try_into()?;
                let user = insert_user(
                    conn,
                    organisation_id,
                    &invite.email,
                    invite.role,
                    password_hash,
                )
                .await?;
                diesel::update(invites::table.find(invite.id))
                    .set((
                        invites::accepted_at.eq(Utc::now()),
                        invites::accepted_user_id.eq(user.id),
                    ))
                    .execute(conn)
                    .await?;
                let ctx = ChangeContext {
                    organisation_id,
                    actor: Actor::User(user.id),
                    request_id,
                };
                record(
                    conn,
                    &ctx,
                    invite_audit(INVITE_ACCEPT, &invite, Some(format!("user {}", user.id))),
                )
                .await?;
                Ok(user)
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }
}
