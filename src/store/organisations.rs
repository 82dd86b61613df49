use std::sync::Arc;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::admin::{confirmed_step, insert_confirmation, insert_user, lock_organisation};
use super::audit::{Audit, record};
use super::models::{NewOrganisationRow, OrganisationRow, parse_role};
use super::schema::{organisations, users};
use super::{Store, db_error};
use crate::domain::actor::ChangeContext;
use crate::domain::audit::{ORGANISATION_ROTATE_API_KEY, ORGANISATION_UPDATE};
use crate::domain::invariants::ConfirmedAction;
use crate::domain::{DomainError, Role, email::Email, user::Organisation, user::User};

/// A new API key's stored form.
pub struct ApiKeyHash<'a> {
    pub hash: &'a [u8],
    pub fingerprint: &'a str,
}

/// The changes UpdateOrganisation asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganisationChanges {
    pub name: Option<String>,
    pub secure_playback: Option<bool>,
}

impl Store {
    /// Creates an organisation with its API key and first nanoAdmin, in one
    /// transaction.
    pub async fn create_organisation_with_admin(
        &self,
        name: &str,
        email: &Email,
        password_hash: &str,
        api_key: ApiKeyHash<'_>,
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        let organisation_id = Uuid::now_v7();
        conn.transaction::<_, DomainError, _>(async |conn| {
            diesel::insert_into(organisations::table)
                .values(NewOrganisationRow {
                    id: organisation_id,
                    name,
                    api_key_hash: api_key.hash,
                    api_key_fingerprint: api_key.fingerprint,
                    api_key_rotated_at: Utc::now(),
                })
                .execute(conn)
                .await?;
            insert_user(
                conn,
                organisation_id,
                email.as_str(),
                Role::NanoAdmin,
                password_hash,
            )
            .await
        })
        .await
    }

    /// The organisation whose current API key has this hash.
    pub async fn organisation_by_api_key(&self, hash: &[u8]) -> Result<Option<Uuid>, DomainError> {
        if let Some(organisation_id) = self.cache.api_key(hash) {
            return Ok(Some(organisation_id));
        }
        let epoch = self.cache.epoch();
        let mut conn = self.conn().await?;
        let found = organisations::table
            .filter(organisations::api_key_hash.eq(hash))
            .select(organisations::id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?;
        if let Some(organisation_id) = found {
            self.cache.put_api_key(epoch, hash, organisation_id);
        }
        Ok(found)
    }

    /// The organisation with its user count per role.
    pub async fn organisation(
        &self,
        organisation_id: Uuid,
    ) -> Result<Arc<Organisation>, DomainError> {
        if let Some(organisation) = self.cache.organisation(organisation_id) {
            return Ok(organisation);
        }
        let epoch = self.cache.epoch();
        let mut conn = self.conn().await?;
        let organisation = Arc::new(load_organisation(&mut conn, organisation_id).await?);
        self.cache.put_organisation(epoch, &organisation);
        Ok(organisation)
    }

    /// Changes the organisation's settings (with its audit event).
    pub async fn update_organisation(
        &self,
        ctx: &ChangeContext,
        changes: &OrganisationChanges,
        etag: Option<&str>,
    ) -> Result<Organisation, DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                lock_organisation(conn, ctx.organisation_id).await?;
                let before = load_organisation(conn, ctx.organisation_id).await?;
                if let Some(etag) = etag
                    && etag != before.etag()
                {
                    return Err(DomainError::Aborted(format!(
                        "the organisation was changed since etag {etag} was read: read it again"
                    )));
                }
                let name = changes.name.clone().unwrap_or_else(|| before.name.clone());
                let secure_playback = changes.secure_playback.unwrap_or(before.secure_playback);
                if name == before.name && secure_playback == before.secure_playback {
                    return Ok(before);
                }
                diesel::update(organisations::table.find(ctx.organisation_id))
                    .set((
                        organisations::name.eq(&name),
                        organisations::secure_playback.eq(secure_playback),
                        organisations::version.eq(organisations::version + 1),
                        organisations::updated_at.eq(Utc::now()),
                    ))
                    .execute(conn)
                    .await?;
                recorded_change(conn, ctx, ORGANISATION_UPDATE, &before).await
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }

    /// The first step of RotateApiKey.
    pub async fn create_api_key_confirmation(
        &self,
        ctx: &ChangeContext,
        token_hash: &[u8],
        expires_at: chrono::DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let mut conn = self.conn().await?;
        let target = ctx.organisation_id;
        insert_confirmation(
            &mut conn,
            ctx,
            ConfirmedAction::RotateApiKey,
            target,
            token_hash,
            expires_at,
        )
        .await
    }

    /// The second step of RotateApiKey: the new key replaces the old one.
    pub async fn rotate_api_key(
        &self,
        ctx: &ChangeContext,
        confirmation_hash: &[u8],
        new_key: ApiKeyHash<'_>,
    ) -> Result<Organisation, DomainError> {
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DomainError, _>(async |conn| {
                let organisation_id = ctx.organisation_id;
                confirmed_step(
                    conn,
                    ctx,
                    ConfirmedAction::RotateApiKey,
                    organisation_id,
                    confirmation_hash,
                )
                .await?;
                let before = load_organisation(conn, ctx.organisation_id).await?;
                diesel::update(organisations::table.find(ctx.organisation_id))
                    .set((
                        organisations::api_key_hash.eq(new_key.hash),
                        organisations::api_key_fingerprint.eq(new_key.fingerprint),
                        organisations::api_key_rotated_at.eq(Utc::now()),
                        organisations::version.eq(organisations::version + 1),
                        organisations::updated_at.eq(Utc::now()),
                    ))
                    .execute(conn)
                    .await?;
                recorded_change(conn, ctx, ORGANISATION_ROTATE_API_KEY, &before).await
            })
            .await?;
        drop(conn);
        self.settle().await;
        Ok(changed)
    }
}

/// The organisation after a change, once the change's audit event (the
/// settings before and after) is recorded.
async fn recorded_change(
    conn: &mut AsyncPgConnection,
    ctx: &ChangeContext,
    action: &'static str,
    before: &Organisation,
) -> Result<Organisation, DomainError> {
    let after = load_organisation(conn, ctx.organisation_id).await?;
    record(conn, ctx, organisation_audit(action, before, &after)).await?;
    Ok(after)
}

/// The audit event of an organisation change: the settings before and after
/// (the API key by fingerprint only).
fn organisation_audit(action: &'static str, before: &Organisation, after: &Organisation) -> Audit {
    let describe = |o: &Organisation| {
        format!(
            "name={:?} secure_playback={} api_key={}",
            o.name,
            o.secure_playback,
            o.api_key_fingerprint.as_deref().unwrap_or("none")
        )
    };
    Audit {
        action,
        target_type: "organisation",
        target_id: after.id.to_string(),
        target_label: after.name.clone(),
        before: Some(describe(before)),
        after: Some(describe(after)),
    }
}

async fn load_organisation(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
) -> Result<Organisation, DomainError> {
    let row = organisations::table
        .find(organisation_id)
        .select(OrganisationRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(DomainError::NotFound("organisation"))?;
    let counts: Vec<(String, i64)> = users::table
        .filter(users::organisation_id.eq(organisation_id))
        .group_by(users::role)
        .select((users::role, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    let mut role_counts: Vec<(Role, i64)> = Role::ALL.iter().map(|role| (*role, 0)).collect();
    for (stored, count) in counts {
        let role = parse_role(&stored)?;
        if let Some(entry) = role_counts.iter_mut().find(|(r, _)| *r == role) {
            entry.1 = count;
        }
    }
    Ok(Organisation {
        id: row.id,
        name: row.name,
        created_at: row.created_at,
        role_counts,
        secure_playback: row.secure_playback,
        api_key_fingerprint: row.api_key_fingerprint,
        api_key_rotated_at: row.api_key_rotated_at,
        version: row.version,
    })
}
