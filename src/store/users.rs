use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::models::{LoginRow, UserRow};
use super::schema::users;
use super::{Store, db_error};
use crate::domain::{DomainError, Role, user::User};

/// A page of users: `limit` users after `after`, in id (= creation) order.
#[derive(Debug, Clone, Copy)]
pub struct UserQuery {
    pub organisation_id: Uuid,
    pub role: Option<Role>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl Store {
    /// One user of the organisation; NOT_FOUND also for other organisations'.
    pub async fn user(
        &self,
        organisation_id: Uuid,
        user_id: Uuid,
    ) -> Result<Arc<User>, DomainError> {
        self.current_user(organisation_id, user_id)
            .await?
            .ok_or(DomainError::NotFound("user"))
    }

    /// The user as the database holds it now (from the cache when it may
    /// answer, else from the database, filling the cache): what every call
    /// is checked against. `None` when the user does not exist (any more).
    pub async fn current_user(
        &self,
        organisation_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Arc<User>>, DomainError> {
        if let Some(user) = self.cache.user(organisation_id, user_id) {
            return Ok(Some(user));
        }
        let epoch = self.cache.epoch();
        let mut conn = self.conn().await?;
        let row = users::table
            .filter(users::organisation_id.eq(organisation_id))
            .filter(users::id.eq(user_id))
            .select(UserRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?;
        let user = row.map(User::try_from).transpose()?.map(Arc::new);
        if let Some(user) = &user {
            self.cache.put_user(epoch, user);
        }
        Ok(user)
    }

    /// A page of users, by keyset on the id (an index serves each filter).
    pub async fn list_users(&self, query: UserQuery) -> Result<Vec<User>, DomainError> {
        let mut conn = self.conn().await?;
        let mut select = users::table
            .filter(users::organisation_id.eq(query.organisation_id))
            .select(UserRow::as_select())
            .order(users::id.asc())
            .limit(query.limit)
            .into_boxed();
        if let Some(role) = query.role {
            select = select.filter(users::role.eq(role.as_str()));
        }
        if let Some(after) = query.after {
            select = select.filter(users::id.gt(after));
        }
        let rows = select.load(&mut conn).await.map_err(db_error)?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// The users a login with this email may be for, across organisations
    /// unless one is given.
    pub async fn login_candidates(
        &self,
        email: &str,
        organisation_id: Option<Uuid>,
    ) -> Result<Vec<LoginRow>, DomainError> {
        let mut conn = self.conn().await?;
        let mut select = users::table
            .filter(lower(users::email).eq(email))
            .select(LoginRow::as_select())
            .limit(20)
            .into_boxed();
        if let Some(organisation_id) = organisation_id {
            select = select.filter(users::organisation_id.eq(organisation_id));
        }
        select.load(&mut conn).await.map_err(db_error)
    }
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
