//! Rows as Diesel reads and writes them, and their conversion to the domain.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{organisations, users};
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
}

impl TryFrom<UserRow> for User {
    type Error = DomainError;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        Ok(User {
            id: row.id,
            organisation_id: row.organisation_id,
            email: row.email,
            role: parse_role(&row.role)?,
            token_key: row.token_key,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub fn parse_role(stored: &str) -> Result<Role, DomainError> {
    stored
        .parse()
        .map_err(|_| DomainError::Internal(format!("stored role {stored:?} is unknown")))
}

#[derive(Debug, Insertable)]
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
}

#[derive(Debug, Insertable)]
#[diesel(table_name = organisations)]
pub struct NewOrganisationRow<'a> {
    pub id: Uuid,
    pub name: &'a str,
}

/// What the per-call check needs of a user: the current role and tokenKey.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct CredentialRow {
    pub role: String,
    pub token_key: Uuid,
}

/// A login candidate: a user with that email, and the password hash.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct LoginRow {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub token_key: Uuid,
    pub password_hash: String,
}
