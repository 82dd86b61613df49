use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Tx;
use super::audit::Audit;
use super::models::{NewOrganisationRow, OrganisationRow};
use super::schema::{organisations, users};
use super::text::StoredText as _;
use super::write::Change;
use super::{Store, db_error};
use crate::domain::audit::{ORGANISATION_CREATE, ORGANISATION_MEMBERS, USER_CREATE};
use crate::domain::{DomainError, Role, email::Email, user::Organisation, user::User};

/// A new API key's stored form.
pub struct ApiKeyHash<'a> {
    pub hash: &'a [u8],
    pub fingerprint: &'a str,
}

impl Store {
    /// Creates an organisation with its API key and first nanoAdmin, in one
    /// transaction (the operator's bootstrap).
    pub async fn create_organisation_with_admin(
        &self,
        name: &str,
        email: &Email,
        password_hash: &str,
        api_key: ApiKeyHash<'_>,
    ) -> Result<User, DomainError> {
        let organisation_id = Uuid::now_v7();
        self.operate(async |conn| {
            diesel::insert_into(organisations::table)
                .values(NewOrganisationRow {
                    id: organisation_id,
                    name,
                    api_key_hash: api_key.hash,
                    api_key_fingerprint: api_key.fingerprint,
                    api_key_rotated_at: Utc::now(),
                })
                .execute(conn.pg())
                .await?;
            let admin = super::users::insert(
                conn,
                organisation_id,
                email.as_str(),
                Role::NanoAdmin,
                password_hash,
            )
            .await?;
            let created = Audit {
                action: ORGANISATION_CREATE,
                target_type: "organisation",
                target_id: organisation_id.to_string(),
                target_label: name.to_owned(),
                before: None,
                after: Some(format!("api_key={}", api_key.fingerprint)),
                owner: None,
            };
            let first_admin =
                Audit::user(USER_CREATE, &admin, None, Some(Role::NanoAdmin.to_string()));
            Ok(Change::unchanged(admin)
                .and_in(organisation_id, created)
                .and_in(organisation_id, first_admin))
        })
        .await
    }

    /// The organisation whose current API key has this hash.
    pub async fn organisation_by_api_key(&self, hash: &[u8]) -> Result<Option<Uuid>, DomainError> {
        self.read_through(
            |cache| cache.api_key(hash),
            async || {
                let mut conn = self.conn().await?;
                organisations::table
                    .filter(organisations::api_key_hash.eq(hash))
                    .select(organisations::id)
                    .first(&mut conn)
                    .await
                    .optional()
                    .map_err(db_error)
            },
            |cache, epoch, organisation_id| cache.put_api_key(epoch, hash, *organisation_id),
        )
        .await
    }

    /// The organisation with its user count per role.
    pub async fn organisation(
        &self,
        organisation_id: Uuid,
    ) -> Result<Arc<Organisation>, DomainError> {
        self.read_through(
            |cache| cache.organisation(organisation_id),
            async || {
                let mut conn = self.conn().await?;
                Ok(Some(Arc::new(
                    read_organisation(&mut conn, organisation_id).await?,
                )))
            },
            |cache, epoch, organisation| cache.put_organisation(epoch, organisation),
        )
        .await?
        .ok_or(DomainError::NotFound("organisation"))
    }
}

/// Sets the organisation's settings (a new version of it).
pub async fn set_settings(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    name: &str,
    secure_playback: bool,
    max_non_revocable_lifetime: Duration,
) -> Result<(), DomainError> {
    let max_lifetime_seconds = i64::try_from(max_non_revocable_lifetime.as_secs())
        .map_err(|_| DomainError::Internal("a lifetime ceiling out of range".into()))?;
    diesel::update(organisations::table.find(organisation_id))
        .set((
            organisations::name.eq(name),
            organisations::secure_playback.eq(secure_playback),
            organisations::max_non_revocable_lifetime_seconds.eq(max_lifetime_seconds),
            organisations::version.eq(organisations::version + 1),
            organisations::updated_at.eq(Utc::now()),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Replaces the organisation's API key (a new version of it).
pub async fn set_api_key(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    new_key: &ApiKeyHash<'_>,
) -> Result<(), DomainError> {
    diesel::update(organisations::table.find(organisation_id))
        .set((
            organisations::api_key_hash.eq(new_key.hash),
            organisations::api_key_fingerprint.eq(new_key.fingerprint),
            organisations::api_key_rotated_at.eq(Utc::now()),
            organisations::version.eq(organisations::version + 1),
            organisations::updated_at.eq(Utc::now()),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// The audit event of an organisation change: the settings before and after
/// (the API key by fingerprint only).
pub fn organisation_audit(
    action: &'static str,
    before: &Organisation,
    after: &Organisation,
) -> Audit {
    let describe = |o: &Organisation| {
        format!(
            "name={:?} secure_playback={} max_non_revocable_lifetime={}s api_key={}",
            o.name,
            o.secure_playback,
            o.max_non_revocable_lifetime.as_secs(),
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
        owner: None,
    }
}

/// The audit event of a change of the organisation's members, made with
/// the change of the user `user_id` that `action` names: the organisation's
/// role counts changed with it (the change feed carries them).
pub fn members_audit(organisation_id: Uuid, action: &str, user_id: Uuid) -> Audit {
    Audit {
        action: ORGANISATION_MEMBERS,
        target_type: "organisation",
        target_id: organisation_id.to_string(),
        target_label: String::new(),
        before: None,
        after: Some(format!("{action} user {user_id}")),
        owner: None,
    }
}

/// The organisation as the transaction sees it, with its user count per role.
pub async fn load(conn: &mut Tx<'_>, organisation_id: Uuid) -> Result<Organisation, DomainError> {
    read_organisation(conn.pg(), organisation_id).await
}

/// The organisation's name, as the transaction sees it.
pub async fn name(conn: &mut Tx<'_>, organisation_id: Uuid) -> Result<String, DomainError> {
    organisations::table
        .find(organisation_id)
        .select(organisations::name)
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("organisation"))
}

/// The organisation with its user count per role, on `conn`.
async fn read_organisation(
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
        let role = Role::from_stored(&stored)?;
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
        max_non_revocable_lifetime: Duration::from_secs(
            u64::try_from(row.max_non_revocable_lifetime_seconds).unwrap_or(0),
        ),
    })
}
