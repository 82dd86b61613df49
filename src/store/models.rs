//! Rows as Diesel reads and writes them, and their conversion to the domain.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{organisations, users};
use super::text::StoredText as _;
use crate::domain::actor::Actor;
use crate::domain::user::UserState;
use crate::domain::{DomainError, Role, user::User};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: String,
    pub role: String,
    pub token_key: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub state: String,
}

impl TryFrom<UserRow> for User {
    type Error = DomainError;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: row.id,
            organisation_id: row.organisation_id,
            email: row.email,
            role: Role::from_stored(&row.role)?,
            token_key: row.token_key,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_login_at: row.last_login_at,
            state: UserState::from_stored(&row.state)?,
        })
    }
}

/// `Debug` hides the password hash.
#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUserRow<'a> {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: &'a str,
    pub role: &'a str,
    pub token_key: Uuid,
    pub password_hash: &'a str,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = organisations, check_for_backend(diesel::pg::Pg))]
pub struct OrganisationRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub secure_playback: bool,
    pub api_key_fingerprint: Option<String>,
    pub api_key_rotated_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub max_non_revocable_lifetime_seconds: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = organisations)]
pub struct NewOrganisationRow<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub api_key_hash: &'a [u8],
    pub api_key_fingerprint: &'a str,
    pub api_key_rotated_at: DateTime<Utc>,
}

/// A login candidate: a user with that email, and the password hash.
/// `Debug` hides the hash.
#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct LoginRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub token_key: Uuid,
    pub password_hash: String,
    pub state: String,
}

impl LoginRow {
    pub fn is_active(&self) -> bool {
        matches!(UserState::from_stored(&self.state), Ok(UserState::Active))
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = super::schema::invites, check_for_backend(diesel::pg::Pg))]
pub struct InviteRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: String,
    pub role: String,
    pub created_by_user_id: Option<Uuid>,
    pub created_by_key_fingerprint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl TryFrom<InviteRow> for crate::domain::invite::Invite {
    type Error = DomainError;

    fn try_from(row: InviteRow) -> Result<Self, Self::Error> {
        Ok(crate::domain::invite::Invite {
            id: row.id,
            organisation_id: row.organisation_id,
            email: row.email,
            role: Role::from_stored(&row.role)?,
            created_by: creator(row.created_by_user_id, row.created_by_key_fingerprint)?,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}

/// An invite's creator from its two columns, of which exactly one is set.
pub fn creator(
    user_id: Option<Uuid>,
    key_fingerprint: Option<String>,
) -> Result<Actor, DomainError> {
    match (user_id, key_fingerprint) {
        (Some(id), None) => Ok(Actor::User(id)),
        (None, Some(fingerprint)) if !fingerprint.is_empty() => Ok(Actor::ApiKey(fingerprint)),
        _ => Err(DomainError::Internal(
            "a stored invite's creator is not exactly one user or API key".into(),
        )),
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = super::schema::confirmations, check_for_backend(diesel::pg::Pg))]
pub struct ConfirmationRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub actor: String,
    pub action: String,
    pub target_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::audit_events, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub target_label: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub request_id: Option<String>,
    /// The change feed's sequence of the change the event is a target of.
    pub sequence: Option<i64>,
    pub owner_id: Option<Uuid>,
    /// The target's state after the change (see [`crate::domain::change`]).
    pub state: Option<serde_json::Value>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<AuditRow> for crate::domain::audit::AuditEvent {
    fn from(row: AuditRow) -> Self {
        crate::domain::audit::AuditEvent {
            id: row.id,
            occurred_at: row.occurred_at,
            actor: row.actor,
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            target_label: row.target_label,
            before: row.before,
            after: row.after,
            request_id: row.request_id,
            sequence: row.sequence,
        }
    }
}

/// A playback signing key with its private half, to sign with.
#[derive(Queryable, Selectable)]
#[diesel(table_name = super::schema::playback_signing_keys, check_for_backend(diesel::pg::Pg))]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// A playback signing key's public half, to verify with and publish.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::playback_signing_keys, check_for_backend(diesel::pg::Pg))]
pub struct PublicKeyRow {
    pub kid: String,
    pub organisation_id: Uuid,
    pub alg: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub verify_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<PublicKeyRow> for crate::domain::change::SigningKeyInfo {
    fn from(row: PublicKeyRow) -> Self {
        crate::domain::change::SigningKeyInfo {
            kid: row.kid,
            organisation_id: row.organisation_id,
            alg: row.alg,
            public_key: row.public_key,
            created_at: row.created_at,
            retired_at: row.retired_at,
            verify_until: row.verify_until,
            revoked_at: row.revoked_at,
        }
    }
}

/// What is known of an issued playback token (never the token itself).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = super::schema::playback_tokens, check_for_backend(diesel::pg::Pg))]
pub struct PlaybackTokenRow {
    pub revocable: bool,
    pub scope: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for NewUserRow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUserRow")
            .field("id", &self.id)
            .field("organisation_id", &self.organisation_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRow")
            .field("id", &self.id)
            .field("organisation_id", &self.organisation_id)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}
