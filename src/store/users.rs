//! Users: the per-call check's cached read, pages, login candidates, and the
//! queries the write path's changes run on its connection.

use std::sync::Arc;

use chrono::Utc;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::audit::Audit;
use super::models::{LoginRow, NewUserRow, UserRow};
use super::schema::users;
use super::text::StoredText as _;
use super::write::Change;
use super::{Store, db_error, is_unique_violation};
use crate::domain::audit::{API_TOKEN_END, SESSION_END, USER_CREATE};
use crate::domain::email::EmailPrefix;
use crate::domain::session::EndReason;
use crate::domain::user::{UserCursor, UserState};
use crate::domain::{DomainError, Role, user::User};

/// A page of users: `limit` users after `after`, in id (= creation) order,
/// or in email order when searching by `email_prefix`.
#[derive(Debug, Clone)]
pub struct UserQuery {
    pub organisation_id: Uuid,
    pub role: Option<Role>,
    pub state: Option<UserState>,
    pub email_prefix: Option<EmailPrefix>,
    pub after: Option<UserCursor>,
    pub limit: i64,
}

/// The users `list_users` found, and, when it stopped reading before the
/// page was full or the range ended, the last row it read: the next page
/// starts after that row (it may be short, even empty, and still not the
/// last).
#[derive(Debug, Clone)]
pub struct UserList {
    pub users: Vec<User>,
    pub resume_after: Option<UserCursor>,
}

impl UserList {
    fn complete(users: Vec<User>) -> Self {
        Self {
            users,
            resume_after: None,
        }
    }
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
        self.read_through(
            |cache| cache.user(organisation_id, user_id),
            async || {
                let mut conn = self.conn().await?;
                let row = users::table
                    .filter(users::organisation_id.eq(organisation_id))
                    .filter(users::id.eq(user_id))
                    .select(UserRow::as_select())
                    .first(&mut conn)
                    .await
                    .optional()
                    .map_err(db_error)?;
                Ok(row.map(User::try_from).transpose()?.map(Arc::new))
            },
            |cache, epoch, user| cache.put_user(epoch, user),
        )
        .await
    }

    /// A page of users, by keyset on the id, or on (email, id) when
    /// searching by the start of the email (an index serves each).
    pub async fn list_users(&self, query: UserQuery) -> Result<UserList, DomainError> {
        let mut conn = self.conn().await?;
        let Some(prefix) = &query.email_prefix else {
            let mut select = filtered(&query).order(users::id.asc()).limit(query.limit);
            if let Some(after) = &query.after {
                select = select.filter(users::id.gt(after.id));
            }
            let rows = select.load(&mut conn).await.map_err(db_error)?;
            let users = rows
                .into_iter()
                .map(User::try_from)
                .collect::<Result<_, _>>()?;
            return Ok(UserList::complete(users));
        };
        // The prefix's range of the (organisation, email_order, id) index
        // holds every match and may hold more (the end of the prefix can be
        // the start of a longer character): each batch of the range is
        // filtered by `EmailPrefix::matches` until the page is full, the
        // range ends, or `SEARCH_MAX_EXAMINED` rows (at least the page) are
        // read; then the caller resumes after the last row read.
        let batch = query.limit.max(SEARCH_BATCH);
        let bound = query.limit.max(SEARCH_MAX_EXAMINED);
        let mut examined: i64 = 0;
        let mut after = query.after.as_ref().and_then(|cursor| {
            cursor
                .email
                .as_ref()
                .map(|email| (email.clone(), cursor.id))
        });
        let mut found = Vec::new();
        loop {
            let take = batch.min(bound.saturating_sub(examined));
            let mut select = filtered(&query)
                .filter(in_ranges(prefix.ranges()))
                .order((users::email_order.asc(), users::id.asc()))
                .limit(take);
            if let Some((email, id)) = after.take() {
                // The cursor holds the email as stored: lower() puts it in
                // the column's order, as for the rows.
                let key = lower(email);
                select = select.filter(
                    users::email_order
                        .gt(key.clone())
                        .or(users::email_order.eq(key).and(users::id.gt(id))),
                );
            }
            let rows: Vec<UserRow> = select.load(&mut conn).await.map_err(db_error)?;
            let read = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            examined = examined.saturating_add(read);
            after = rows.last().map(|row| (row.email.clone(), row.id));
            for row in rows {
                if prefix.matches(&row.email) {
                    found.push(User::try_from(row)?);
                    if i64::try_from(found.len()).is_ok_and(|n| n >= query.limit) {
                        return Ok(UserList::complete(found));
                    }
                }
            }
            let Some((email, id)) = after.clone() else {
                return Ok(UserList::complete(found));
            };
            if read < take {
                return Ok(UserList::complete(found));
            }
            if examined >= bound {
                return Ok(UserList {
                    users: found,
                    resume_after: Some(UserCursor {
                        id,
                        email: Some(email),
                    }),
                });
            }
        }
    }

    /// Refreshes the planner's statistics of the users table (after a bulk
    /// load).
    pub async fn analyze_users(&self) -> Result<(), DomainError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("ANALYZE users")
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// How many suspended users the organisation has, by role.
    pub async fn suspended_counts(
        &self,
        organisation_id: Uuid,
    ) -> Result<Vec<(Role, i64)>, DomainError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(String, i64)> = users::table
            .filter(users::organisation_id.eq(organisation_id))
            .filter(users::state.eq(UserState::Suspended.stored()))
            .group_by(users::role)
            .select((users::role, diesel::dsl::count_star()))
            .load(&mut conn)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|(role, count)| Ok((Role::from_stored(&role)?, count)))
            .collect()
    }

    /// The users a login with this email may be for, across organisations
    /// unless one is given: the oldest, and whether there is another.
    pub async fn login_candidates(
        &self,
        email: &str,
        organisation_id: Option<Uuid>,
    ) -> Result<Vec<LoginRow>, DomainError> {
        self.users_by_email(email, organisation_id, 2).await
    }

    /// The users with this (normalised) email, in one organisation or in
    /// every one, oldest first, at most `limit`.
    pub async fn users_by_email(
        &self,
        email: &str,
        organisation_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<LoginRow>, DomainError> {
        let mut conn = self.conn().await?;
        let mut select = users::table
            .filter(lower(users::email).eq(email))
            .select(LoginRow::as_select())
            // The oldest first: without an organisation, the password is
            // checked against the email's oldest user only.
            .order((users::created_at.asc(), users::id.asc()))
            .limit(limit)
            .into_boxed();
        if let Some(organisation_id) = organisation_id {
            select = select.filter(users::organisation_id.eq(organisation_id));
        }
        select.load(&mut conn).await.map_err(db_error)
    }

    /// The user's password hash.
    pub async fn password_hash(
        &self,
        organisation_id: Uuid,
        user_id: Uuid,
    ) -> Result<String, DomainError> {
        let mut conn = self.conn().await?;
        users::table
            .filter(users::organisation_id.eq(organisation_id))
            .filter(users::id.eq(user_id))
            .select(users::password_hash)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?
            .ok_or(DomainError::NotFound("user"))
    }

    /// Inserts many users with one password hash, in one statement (seeding).
    pub async fn insert_users(
        &self,
        organisation_id: Uuid,
        users: &[(String, Role)],
        password_hash: &str,
    ) -> Result<(), DomainError> {
        let rows: Vec<NewUserRow<'_>> = users
            .iter()
            .map(|(email, role)| new_user(organisation_id, email, *role, password_hash))
            .collect();
        self.operate(async |conn| {
            let inserted: Vec<UserRow> = diesel::insert_into(users::table)
                .values(&rows)
                .returning(UserRow::as_returning())
                .get_results(conn.pg())
                .await
                .map_err(user_exists_error)?;
            let mut change = Change::unchanged(()).settling();
            let mut last = None;
            for row in inserted {
                let user = User::try_from(row)?;
                let role = Some(user.role.to_string());
                last = Some(user.id);
                change =
                    change.and_in(organisation_id, Audit::user(USER_CREATE, &user, None, role));
            }
            // The role counts changed with them: once per batch.
            if let Some(user_id) = last {
                let members =
                    super::organisations::members_audit(organisation_id, USER_CREATE, user_id);
                change = change.and_in(organisation_id, members);
            }
            Ok(change)
        })
        .await
    }
}

/// How many rows of a prefix's range a search reads at a time.
const SEARCH_BATCH: i64 = 100;

/// The most rows of a prefix's ranges one search call reads (or the page
/// size, if larger): a prefix ending in an accent ("é") ranges over every
/// email starting with the bare letter, which need not match, and one call
/// must not read the whole organisation.
const SEARCH_MAX_EXAMINED: i64 = 10 * SEARCH_BATCH;

type Condition = Box<dyn BoxableExpression<users::table, Pg, SqlType = Bool>>;

/// `email_order` in one of `ranges` (each `[from, to)`, `to` absent: no
/// end); a single range is the plain condition the index serves, as before.
fn in_ranges(ranges: &[(String, Option<String>)]) -> Condition {
    let range = |(from, to): &(String, Option<String>)| -> Condition {
        let from = users::email_order.ge(from.clone());
        match to {
            Some(to) => Box::new(from.and(users::email_order.lt(to.clone()))),
            None => Box::new(from),
        }
    };
    let mut ranges = ranges.iter();
    let Some(first) = ranges.next() else {
        // No string sorts before the empty one: nothing.
        return Box::new(users::email_order.lt(String::new()));
    };
    ranges.fold(range(first), |any, next| Box::new(any.or(range(next))))
}

type UserSelect = diesel::dsl::IntoBoxed<
    'static,
    diesel::dsl::Select<users::table, diesel::dsl::AsSelect<UserRow, diesel::pg::Pg>>,
    diesel::pg::Pg,
>;

/// The organisation's users with the query's role and state, boxed.
fn filtered(query: &UserQuery) -> UserSelect {
    let mut select = users::table
        .select(UserRow::as_select())
        .into_boxed()
        .filter(users::organisation_id.eq(query.organisation_id));
    if let Some(role) = query.role {
        select = select.filter(users::role.eq(role.stored()));
    }
    if let Some(state) = query.state {
        select = select.filter(users::state.eq(state.stored()));
    }
    select
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// The user, locked for the change (NOT_FOUND also for other organisations').
pub async fn locked(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    user_id: Uuid,
) -> Result<User, DomainError> {
    users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::id.eq(user_id))
        .select(UserRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("user"))?
        .try_into()
}

/// The users of the organisation with these ids, as the transaction sees
/// them (the change feed's states); those gone are missing.
pub(super) async fn by_ids(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<User>, DomainError> {
    let rows: Vec<UserRow> = users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::id.eq_any(ids))
        .select(UserRow::as_select())
        .load(conn.pg())
        .await?;
    rows.into_iter().map(User::try_from).collect()
}

/// The audit events of the credentials of `user` that a change is about to
/// end, read before the change: its live sessions but `keep_session` and,
/// when `tokens` (the change renews the tokenKey or deletes the user), its
/// working personal API tokens; each says `why`. Captured after the change,
/// each is a tombstone in the change feed.
pub async fn ending_credentials(
    conn: &mut Tx<'_>,
    user: &User,
    keep_session: Option<Uuid>,
    tokens: bool,
    why: &str,
) -> Result<Vec<Audit>, DomainError> {
    let mut audits = Vec::new();
    for session_id in super::sessions::live_of_user(conn, user.id, keep_session).await? {
        let mut audit = Audit::session(SESSION_END, session_id, user);
        audit.after = Some(format!("user {}; {why}", user.id));
        audits.push(audit);
    }
    if tokens {
        for token in super::api_tokens::working_of_user(conn, user.id, user.token_key).await? {
            let mut audit = Audit::api_token(API_TOKEN_END, &token);
            audit.after = Some(format!("user {}; {why}", user.id));
            audits.push(audit);
        }
    }
    Ok(audits)
}

/// How many active nanoAdmins the organisation has.
pub async fn admin_count(conn: &mut Tx<'_>, organisation_id: Uuid) -> Result<i64, DomainError> {
    Ok(users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::role.eq(Role::NanoAdmin.stored()))
        .filter(users::state.eq(UserState::Active.stored()))
        .count()
        .get_result(conn.pg())
        .await?)
}

fn user_exists_error(error: diesel::result::Error) -> DomainError {
    if is_unique_violation(&error) {
        DomainError::AlreadyExists {
            resource: "user",
            message: "a user with this email exists in the organisation".into(),
        }
    } else {
        error.into()
    }
}

/// Whether a user of the organisation has this (normalised) email.
pub async fn email_taken(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    email: &str,
) -> Result<bool, DomainError> {
    let count: i64 = users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(lower(users::email).eq(email))
        .count()
        .get_result(conn.pg())
        .await?;
    Ok(count > 0)
}

/// A new user's row: a time-ordered id and a fresh tokenKey.
fn new_user<'a>(
    organisation_id: Uuid,
    email: &'a str,
    role: Role,
    password_hash: &'a str,
) -> NewUserRow<'a> {
    NewUserRow {
        id: Uuid::now_v7(),
        organisation_id,
        email,
        role: role.stored(),
        token_key: Uuid::new_v4(),
        password_hash,
    }
}

/// Inserts a user with a fresh tokenKey.
pub async fn insert(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    email: &str,
    role: Role,
    password_hash: &str,
) -> Result<User, DomainError> {
    diesel::insert_into(users::table)
        .values(new_user(organisation_id, email, role, password_hash))
        .returning(UserRow::as_returning())
        .get_result(conn.pg())
        .await
        .map_err(user_exists_error)?
        .try_into()
}

/// Gives the user a new tokenKey (so every token the user holds fails on
/// its next call) and the role `role`, as one new version of the user, and
/// ends every session of the user.
pub async fn renew_token_key_with_role(
    conn: &mut Tx<'_>,
    user: &User,
    role: Role,
) -> Result<User, DomainError> {
    super::sessions::end_all_of_user(conn, user.id, None, EndReason::TokenKeyRenewed).await?;
    diesel::update(users::table.find(user.id))
        .set((
            users::role.eq(role.stored()),
            users::token_key.eq(Uuid::new_v4()),
            users::version.eq(users::version + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn.pg())
        .await?
        .try_into()
}

/// Suspends the user: a new tokenKey (ending every session, access token
/// and API token of theirs) and the state suspended, as one new version.
pub async fn suspend(conn: &mut Tx<'_>, user: &User) -> Result<User, DomainError> {
    super::sessions::end_all_of_user(conn, user.id, None, EndReason::UserSuspended).await?;
    diesel::update(users::table.find(user.id))
        .set((
            users::state.eq(UserState::Suspended.stored()),
            users::token_key.eq(Uuid::new_v4()),
            users::version.eq(users::version + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn.pg())
        .await?
        .try_into()
}

/// Lets the user act again, as one new version (their old credentials stay
/// dead: the suspension renewed the tokenKey).
pub async fn reactivate(conn: &mut Tx<'_>, user: &User) -> Result<User, DomainError> {
    diesel::update(users::table.find(user.id))
        .set((
            users::state.eq(UserState::Active.stored()),
            users::version.eq(users::version + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn.pg())
        .await?
        .try_into()
}

/// Records a sign-in.
pub async fn logged_in(conn: &mut Tx<'_>, user_id: Uuid) -> Result<(), DomainError> {
    diesel::update(users::table.find(user_id))
        .set(users::last_login_at.eq(Utc::now()))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Sets the user's password hash (a new version of the user).
pub async fn set_password(
    conn: &mut Tx<'_>,
    user_id: Uuid,
    password_hash: &str,
) -> Result<(), DomainError> {
    diesel::update(users::table.find(user_id))
        .set((
            users::password_hash.eq(password_hash),
            users::version.eq(users::version + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Tx<'_>, user: &User) -> Result<(), DomainError> {
    diesel::delete(users::table.find(user.id))
        .execute(conn.pg())
        .await?;
    Ok(())
}
