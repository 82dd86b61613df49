use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use uuid::Uuid;

use super::models::{NewOrganisationRow, NewUserRow, OrganisationRow, UserRow, parse_role};
use super::schema::{organisations, users};
use super::{Store, db_error, is_unique_violation};
use crate::domain::{DomainError, Role, email::Email, user::Organisation, user::User};

impl Store {
    /// Creates an organisation with its first nanoAdmin, in one transaction.
    pub async fn create_organisation_with_admin(
        &self,
        name: &str,
        email: &Email,
        password_hash: &str,
    ) -> Result<User, DomainError> {
        let mut conn = self.conn().await?;
        let organisation_id = Uuid::now_v7();
        let row = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::insert_into(organisations::table)
                    .values(NewOrganisationRow {
                        id: organisation_id,
                        name,
                    })
                    .execute(conn)
                    .await?;
                diesel::insert_into(users::table)
                    .values(NewUserRow {
                        id: Uuid::now_v7(),
                        organisation_id,
                        email: email.as_str(),
                        role: Role::NanoAdmin.as_str(),
                        token_key: Uuid::new_v4(),
                        password_hash,
                    })
                    .returning(UserRow::as_returning())
                    .get_result(conn)
                    .await
            })
            .await
            .map_err(|error| {
                if is_unique_violation(&error) {
                    DomainError::AlreadyExists {
                        resource: "user",
                        message: "a user with this email exists".into(),
                    }
                } else {
                    db_error(error)
                }
            })?;
        row.try_into()
    }

    /// The organisation with its user count per role.
    pub async fn organisation(&self, organisation_id: Uuid) -> Result<Organisation, DomainError> {
        let mut conn = self.conn().await?;
        let row = organisations::table
            .find(organisation_id)
            .select(OrganisationRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?
            .ok_or(DomainError::NotFound("organisation"))?;
        let counts: Vec<(String, i64)> = users::table
            .filter(users::organisation_id.eq(organisation_id))
            .group_by(users::role)
            .select((users::role, diesel::dsl::count_star()))
            .load(&mut conn)
            .await
            .map_err(db_error)?;
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
        })
    }
}
