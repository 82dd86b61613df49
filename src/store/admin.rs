//! User administration: each change runs in one transaction together with
//! its audit event, under the organisation's row lock, so that invariants
//! such as "at least one nanoAdmin" hold under any concurrency.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::audit::{Audit, record};
use super::models::{ConfirmationRow, NewUserRow, UserRow};
use super::schema::{confirmations, organisations, users};
use super::{Store, is_unique_violation};
use crate::domain::actor::ChangeContext;
use crate::domain::audit::{USER_CREATE, USER_DELETE, USER_RENEW_TOKEN_KEY, USER_UPDATE_ROLE};
use crate::domain::invariants::{
    self, ConfirmedAction, Confirming, StoredConfirmation, confirmation_valid, keeps_an_admin,
};
use crate::domain::{DomainError, Role, email::Email, user::User};

/// Takes the organisation's row lock: user changes of one organisation run
/// one at a time (they are rare; the checks they make must not race).
pub(super) async fn lock_organisation(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
) -> Result<(), DomainError> {
    organisations::table
        .find(organisation_id)
        .select(organisations::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?
        .map(|_| ())
        .ok_or(DomainError::NotFound("organisation"))
}

async fn locked_user(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
    user_id: Uuid,
) -> Result<User, DomainError> {
    users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::id.eq(user_id))
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(DomainError::NotFound("user"))?
        .try_into()
}

async fn admin_count(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
) -> Result<i64, DomainError> {
    Ok(users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::role.eq(Role::NanoAdmin.as_str()))
        .count()
        .get_result(conn)
        .await?)
}

pub(super) fn user_exists_error(error: diesel::result::Error) -> DomainError {
    if is_unique_violation(&error) {
        DomainError::AlreadyExists {
            resource: "user",
            message: "a user with this email exists in the organisation".into(),
        }
    } else {
        error.into()
    }
}

pub(super) async fn insert_user(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
    email: &str,
    role: Role,
    password_hash: &str,
) -> Result<User, DomainError> {
    diesel::insert_into(users::table)
        .values(NewUserRow {
            id: Uuid::now_v7(),
            organisation_id,
            email,
            role: role.as_str(),
            token_key: Uuid::new_v4(),
            password_hash,
        })
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .map_err(user_exists_error)?
        .try_into()
}

/// Checks the confirmation of the second step (locking it) and marks it used.
async fn consume_confirmation(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    confirming: &Confirming<'_>,
) -> Result<(), DomainError> {
    let row = confirmations::table
        .filter(confirmations::token_hash.eq(token_hash))
        .select(ConfirmationRow::as_select())
        .for_update()
        .first(conn)
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
    confirmation_valid(stored.as_ref(), confirming, Utc::now())?;
    if let Some(row) = row {
        diesel::update(confirmations::table.find(row.id))
            .set(confirmations::used_at.eq(Utc::now()))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Gives the user a new tokenKey (so every token the user holds fails on
/// its next call) and the role `role`, as one new version of the user.
async fn renew_token_key_with_role(
    conn: &mut AsyncPgConnection,
    user: &User,
    role: Role,
) -> Result<User, DomainError> {
    diesel::update(users::table.find(user.id))
        .set((
            users::role.eq(role.as_str()),
            users::token_key.eq(Uuid::new_v4()),
            users::version.eq(users::version + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// Starts the second step of a double-confirmed action: takes the
/// organisation's lock, then checks and uses up the confirmation.
pub(super) async fn confirmed_step(
    conn: &mut AsyncPgConnection,
    ctx: &ChangeContext,
    action: ConfirmedAction,
    target_id: Uuid,
    token_hash: &[u8],
) -> Result<(), DomainError> {
    lock_organisation(conn, ctx.organisation_id).await?;
    let actor = ctx.actor.to_string();
    let confirming = Confirming {
        organisation_id: ctx.organisation_id,
        actor: &actor,
        action,
        target_id,
    };
    consume_confirmation(conn, token_hash, &confirming).await
}

/// Stores the first step of a double-confirmed action (and drops the
/// confirmations that expired a day ago or more).
pub(super) async fn insert_confirmation(
    conn: &mut AsyncPgConnection,
    ctx: &ChangeContext,
    action: ConfirmedAction,
    target_id: Uuid,
    token_hash: &[u8],
    expires_at: chrono::DateTime<Utc>,
) -> Result<(), DomainError> {
    let long_expired = Utc::now() - chrono::Duration::days(1);
    diesel::delete(confirmations::table.filter(confirmations::expires_at.lt(long_expired)))
        .execute(conn)
        .await?;
    diesel::insert_into(confirmations::table)
        .values((
            confirmations::id.eq(Uuid::now_v7()),
            confirmations::organisation_id.eq(ctx.organisation_id),
            confirmations::token_hash.eq(token_hash),
            confirmations::actor.eq(ctx.actor.to_string()),
            confirmations::action.eq(action.as_str()),
            confirmations::target_id.eq(target_id),
            confirmations::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The first step of a double-confirmed action.
pub struct NewConfirmation<'a> {
    pub action: ConfirmedAction,
    pub target_id: Uuid,
    pub token_hash: &'a [u8],
    pub expires_at: chrono::DateTime<Utc>,
}

impl Store {
    /// Inserts many users with one password hash, in one statement (seeding).
    pub async fn insert_users(
        &self,
        organisation_id: Uuid,
        users: &[(String, Role)],
        password_hash: &str,
    ) -> Result<(), DomainError> {
        let rows: Vec<NewUserRow<'_>> = users
            .iter()
            .map(|(email, role)| NewUserRow {
                id: Uuid::now_v7(),
                organisation_id,
                email,
                role: role.as_str(),
                token_key: Uuid::new_v4(),
                password_hash,
            })
            .collect();
        let mut conn = self.conn().await?;
        diesel::insert_into(users::table)
            .values(&rows)
            .execute(&mut conn)
            .await
            .map_err(user_exists_error)?;
        Ok(())
    }

    /// Creates a user with a password (provisioning).
    pub async fn create_user(
        &self,
        ctx: &ChangeContext,
        email: &Email,
        role: Role,
        password_hash: &str,
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                lock_organisation(conn, ctx.organisation_id).await?;
                let user = insert_user(
                    conn,
                    ctx.organisation_id,
                    email.as_str(),
                    role,
                    password_hash,
                )
                .await?;
                record(
                    conn,
                    ctx,
                    Audit::user(USER_CREATE, &user, None, Some(role.to_string())),
                )
                .await?;
                Ok(user)
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }

    /// Changes a user's role and renews the user's tokenKey with it. Returns
    /// the user and whether anything changed.
    pub async fn update_user_role(
        &self,
        ctx: &ChangeContext,
        user_id: Uuid,
        role: Role,
        etag: Option<&str>,
    ) -> Result<(User, bool), DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                lock_organisation(conn, ctx.organisation_id).await?;
                let user = locked_user(conn, ctx.organisation_id, user_id).await?;
                invariants::etag_matches(&user, etag)?;
                if user.role == role {
                    return Ok((user, false));
                }
                if user.role == Role::NanoAdmin {
                    keeps_an_admin(
                        &user,
                        Some(role),
                        admin_count(conn, ctx.organisation_id).await?,
                    )?;
                }
                let updated = renew_token_key_with_role(conn, &user, role).await?;
                let audit = Audit::user(
                    USER_UPDATE_ROLE,
                    &updated,
                    Some(user.role.to_string()),
                    Some(role.to_string()),
                );
                record(conn, ctx, audit).await?;
                Ok((updated, true))
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }

    /// The first step of a double-confirmed action on a user: stores the
    /// confirmation and returns the user it is about. Refuses at once what the
    /// second step would refuse anyway (e.g. deleting the last nanoAdmin).
    pub async fn create_confirmation(
        &self,
        ctx: &ChangeContext,
        confirmation: NewConfirmation<'_>,
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        conn.transaction::<_, DomainError, _>(async |conn| {
            let user = locked_user(conn, ctx.organisation_id, confirmation.target_id).await?;
            if confirmation.action == ConfirmedAction::DeleteUser && user.role == Role::NanoAdmin {
                keeps_an_admin(&user, None, admin_count(conn, ctx.organisation_id).await?)?;
            }
            insert_confirmation(
                conn,
                ctx,
                confirmation.action,
                confirmation.target_id,
                confirmation.token_hash,
                confirmation.expires_at,
            )
            .await?;
            Ok(user)
        })
        .await
    }

    /// The second step of DeleteUser. Returns the user as it was.
    pub async fn delete_user(
        &self,
        ctx: &ChangeContext,
        user_id: Uuid,
        token_hash: &[u8],
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                confirmed_step(conn, ctx, ConfirmedAction::DeleteUser, user_id, token_hash).await?;
                let user = locked_user(conn, ctx.organisation_id, user_id).await?;
                if user.role == Role::NanoAdmin {
                    keeps_an_admin(&user, None, admin_count(conn, ctx.organisation_id).await?)?;
                }
                diesel::delete(users::table.find(user.id))
                    .execute(conn)
                    .await?;
                record(
                    conn,
                    ctx,
                    Audit::user(USER_DELETE, &user, Some(user.role.to_string()), None),
                )
                .await?;
                Ok(user)
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }

    /// The second step of RenewTokenKey. Returns the user with its new key.
    pub async fn renew_token_key(
        &self,
        ctx: &ChangeContext,
        user_id: Uuid,
        token_hash: &[u8],
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                confirmed_step(
                    conn,
                    ctx,
                    ConfirmedAction::RenewTokenKey,
                    user_id,
                    token_hash,
                )
                .await?;
                let user = locked_user(conn, ctx.organisation_id, user_id).await?;
                let renewed = renew_token_key_with_role(conn, &user, user.role).await?;
                let audit = Audit::user(
                    USER_RENEW_TOKEN_KEY,
                    &renewed,
                    Some(format!("tokenKey {}", user.token_key_fingerprint())),
                    Some(format!("tokenKey {}", renewed.token_key_fingerprint())),
                );
                record(conn, ctx, audit).await?;
                Ok(renewed)
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }
}
