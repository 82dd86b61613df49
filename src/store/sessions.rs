//! Sessions and their refresh tokens: the per-call check's cached read, the
//! session list, and the queries the write path's changes run.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::cache::SessionCheck;
use super::schema::{refresh_tokens, sessions};
use super::text::StoredText as _;
use super::{Store, db_error};
use crate::domain::DomainError;
use crate::domain::session::{EndReason, Session};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
struct SessionRow {
    id: Uuid,
    organisation_id: Uuid,
    user_id: Uuid,
    token_key: Uuid,
    created_at: DateTime<Utc>,
    last_refreshed_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    client_address: String,
    user_agent: String,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: row.id,
            organisation_id: row.organisation_id,
            user_id: row.user_id,
            token_key: row.token_key,
            created_at: row.created_at,
            last_refreshed_at: row.last_refreshed_at,
            expires_at: row.expires_at,
            absolute_expires_at: row.absolute_expires_at,
            ended_at: row.ended_at,
            client_address: row.client_address,
            user_agent: row.user_agent,
        }
    }
}

/// A session to open.
pub struct NewSession<'a> {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub token_key: Uuid,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub client_address: &'a str,
    pub user_agent: &'a str,
}

/// A page of a user's live sessions, in id (= creation) order.
#[derive(Debug, Clone, Copy)]
pub struct SessionQuery {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// What a refresh token's row says of it and its session.
pub struct RefreshState {
    pub session: Session,
    pub used: bool,
}

impl Store {
    /// The session as the per-call check needs it, when it is live (from the
    /// cache when it may answer). `None`: unknown, ended or expired.
    pub async fn live_session(
        &self,
        organisation_id: Uuid,
        session_id: Uuid,
    ) -> Result<Option<SessionCheck>, DomainError> {
        self.read_through(
            |cache| cache.session(organisation_id, session_id),
            async || {
                let mut conn = self.conn().await?;
                let row = sessions::table
                    .filter(sessions::organisation_id.eq(organisation_id))
                    .filter(sessions::id.eq(session_id))
                    .filter(sessions::ended_at.is_null())
                    .filter(sessions::expires_at.gt(diesel::dsl::now))
                    .select((sessions::user_id, sessions::token_key, sessions::expires_at))
                    .first::<(Uuid, Uuid, DateTime<Utc>)>(&mut conn)
                    .await
                    .optional()
                    .map_err(db_error)?;
                Ok(row.map(|(user_id, token_key, expires_at)| SessionCheck {
                    organisation_id,
                    user_id,
                    token_key,
                    expires_at,
                }))
            },
            |cache, epoch, check| cache.put_session(epoch, session_id, *check),
        )
        .await
    }

    /// A page of the user's live sessions.
    pub async fn list_sessions(&self, query: SessionQuery) -> Result<Vec<Session>, DomainError> {
        let mut conn = self.conn().await?;
        let mut select = sessions::table
            .filter(sessions::organisation_id.eq(query.organisation_id))
            .filter(sessions::user_id.eq(query.user_id))
            .filter(sessions::ended_at.is_null())
            .filter(sessions::expires_at.gt(diesel::dsl::now))
            .select(SessionRow::as_select())
            .order(sessions::id.asc())
            .limit(query.limit)
            .into_boxed();
        if let Some(after) = query.after {
            select = select.filter(sessions::id.gt(after));
        }
        let rows = select.load(&mut conn).await.map_err(db_error)?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    /// The user of a live session of the organisation.
    pub async fn session_owner(
        &self,
        organisation_id: Uuid,
        session_id: Uuid,
    ) -> Result<Option<Uuid>, DomainError> {
        let mut conn = self.conn().await?;
        sessions::table
            .filter(sessions::organisation_id.eq(organisation_id))
            .filter(sessions::id.eq(session_id))
            .filter(sessions::ended_at.is_null())
            .filter(sessions::expires_at.gt(diesel::dsl::now))
            .select(sessions::user_id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)
    }

    /// The organisation and user of the session a refresh token belongs to,
    /// to lock before the refresh (read again, locked, in its transaction).
    pub async fn refresh_token_owner(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(Uuid, Uuid)>, DomainError> {
        let mut conn = self.conn().await?;
        refresh_tokens::table
            .inner_join(sessions::table)
            .filter(refresh_tokens::token_hash.eq(token_hash))
            .select((sessions::organisation_id, sessions::user_id))
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)
    }
}

/// The sessions of the organisation with these ids, ended or not, as the
/// transaction sees them (the change feed's states); those gone are
/// missing.
pub(super) async fn by_ids(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Session>, DomainError> {
    let rows: Vec<SessionRow> = sessions::table
        .filter(sessions::organisation_id.eq(organisation_id))
        .filter(sessions::id.eq_any(ids))
        .select(SessionRow::as_select())
        .load(conn.pg())
        .await?;
    Ok(rows.into_iter().map(Session::from).collect())
}

/// The ids of the user's live sessions but `keep`: those a change of the
/// user is about to end.
pub async fn live_of_user(
    conn: &mut Tx<'_>,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<Vec<Uuid>, DomainError> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .filter(sessions::id.ne(keep.unwrap_or(Uuid::nil())))
        .select(sessions::id)
        .order(sessions::id)
        .load(conn.pg())
        .await?)
}

/// Opens a session; returns it.
pub async fn insert(conn: &mut Tx<'_>, new: NewSession<'_>) -> Result<Session, DomainError> {
    let row: SessionRow = diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(Uuid::now_v7()),
            sessions::organisation_id.eq(new.organisation_id),
            sessions::user_id.eq(new.user_id),
            sessions::token_key.eq(new.token_key),
            sessions::expires_at.eq(new.expires_at),
            sessions::absolute_expires_at.eq(new.absolute_expires_at),
            sessions::client_address.eq(new.client_address),
            sessions::user_agent.eq(new.user_agent),
        ))
        .returning(SessionRow::as_returning())
        .get_result(conn.pg())
        .await?;
    Ok(row.into())
}

/// Gives the session a refresh token (by its hash).
pub async fn add_refresh_token(
    conn: &mut Tx<'_>,
    session_id: Uuid,
    token_hash: &[u8],
) -> Result<(), DomainError> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(token_hash),
            refresh_tokens::session_id.eq(session_id),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// The refresh token and its session, both locked for the refresh.
pub async fn locked_refresh(
    conn: &mut Tx<'_>,
    token_hash: &[u8],
) -> Result<Option<RefreshState>, DomainError> {
    let found = refresh_tokens::table
        .inner_join(sessions::table)
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select((refresh_tokens::used_at, SessionRow::as_select()))
        .for_update()
        .first::<(Option<DateTime<Utc>>, SessionRow)>(conn.pg())
        .await
        .optional()?;
    Ok(found.map(|(used_at, row)| RefreshState {
        session: row.into(),
        used: used_at.is_some(),
    }))
}

/// Marks a refresh token used.
pub async fn use_refresh_token(conn: &mut Tx<'_>, token_hash: &[u8]) -> Result<(), DomainError> {
    diesel::update(refresh_tokens::table.find(token_hash))
        .set(refresh_tokens::used_at.eq(Utc::now()))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Records a refresh: the session lasts until `expires_at` now.
pub async fn refreshed(
    conn: &mut Tx<'_>,
    session_id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), DomainError> {
    diesel::update(sessions::table.find(session_id))
        .set((
            sessions::last_refreshed_at.eq(now),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// The live session of the organisation, locked; `None` when there is none.
pub async fn locked_live(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    session_id: Uuid,
) -> Result<Option<Session>, DomainError> {
    let row = sessions::table
        .filter(sessions::organisation_id.eq(organisation_id))
        .filter(sessions::id.eq(session_id))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select(SessionRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?;
    Ok(row.map(Session::from))
}

/// Ends one session.
pub async fn end(
    conn: &mut Tx<'_>,
    session_id: Uuid,
    reason: EndReason,
) -> Result<(), DomainError> {
    diesel::update(sessions::table.find(session_id))
        .filter(sessions::ended_at.is_null())
        .set((
            sessions::ended_at.eq(Utc::now()),
            sessions::end_reason.eq(reason.stored()),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Ends every session of the user but `keep`; returns how many ended.
pub async fn end_all_of_user(
    conn: &mut Tx<'_>,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: EndReason,
) -> Result<usize, DomainError> {
    let keep = keep.unwrap_or(Uuid::nil());
    Ok(diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::ended_at.is_null())
            .filter(sessions::id.ne(keep)),
    )
    .set((
        sessions::ended_at.eq(Utc::now()),
        sessions::end_reason.eq(reason.stored()),
    ))
    .execute(conn.pg())
    .await?)
}

/// Whether the session is live and the user's, with the tokenKey it was
/// admitted with (the write path's re-check, after the organisation's lock).
/// The row is read `FOR SHARE`: ending the session (which takes the
/// organisation's lock only shared) waits until this write has committed,
/// and a write that waited for an end sees the session ended.
pub async fn still_live(
    conn: &mut Tx<'_>,
    session_id: Uuid,
    user_id: Uuid,
    token_key: Uuid,
) -> Result<bool, DomainError> {
    let live = sessions::table
        .filter(sessions::id.eq(session_id))
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::token_key.eq(token_key))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select(sessions::id)
        .for_share()
        .first::<Uuid>(conn.pg())
        .await
        .optional()?;
    Ok(live.is_some())
}

/// Deletes the user's sessions that ended or expired more than a day ago
/// (their refresh tokens go with them), so that a user's rows stay few.
pub async fn forget_old(conn: &mut Tx<'_>, user_id: Uuid) -> Result<(), DomainError> {
    let day_ago = Utc::now() - chrono::Duration::days(1);
    diesel::delete(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(
                sessions::ended_at
                    .lt(day_ago)
                    .or(sessions::expires_at.lt(day_ago)),
            ),
    )
    .execute(conn.pg())
    .await?;
    Ok(())
}
