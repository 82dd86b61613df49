//! Personal API tokens: the per-call check's cached read, the token list,
//! the queries the write path's changes run, and the batched record of use.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::cache::ApiTokenCheck;
use super::schema::{api_tokens, users};
use super::text::StoredText as _;
use super::{Store, db_error};
use crate::domain::DomainError;
use crate::domain::api_token::ApiToken;
use crate::domain::permission::{Permission, PermissionSet};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg))]
struct ApiTokenRow {
    id: Uuid,
    organisation_id: Uuid,
    user_id: Uuid,
    name: String,
    permissions: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiTokenRow> for ApiToken {
    type Error = DomainError;

    fn try_from(row: ApiTokenRow) -> Result<Self, Self::Error> {
        Ok(ApiToken {
            id: row.id,
            organisation_id: row.organisation_id,
            user_id: row.user_id,
            name: row.name,
            permissions: parse_permissions(&row.permissions)?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        })
    }
}

fn parse_permissions(stored: &[String]) -> Result<PermissionSet, DomainError> {
    stored
        .iter()
        .map(|id| Permission::from_stored(id))
        .collect()
}

fn permission_ids(set: PermissionSet) -> Vec<String> {
    set.iter().map(|p| p.stored().to_owned()).collect()
}

/// A token to create.
pub struct NewApiToken<'a> {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub token_key: Uuid,
    pub token_hash: &'a [u8],
    pub name: &'a str,
    pub permissions: PermissionSet,
    pub expires_at: DateTime<Utc>,
}

/// A page of a user's working tokens, in id (= creation) order.
#[derive(Debug, Clone, Copy)]
pub struct ApiTokenQuery {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// A use of a token, as the batch records it.
#[derive(Debug, Clone, Copy)]
pub struct TokenUse {
    pub token_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A token used for the first time, to audit.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct FirstUse {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organisation_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub user_id: Uuid,
}

impl Store {
    /// The token as the per-call check needs it, while it is unrevoked and
    /// unexpired (from the cache when it may answer). `None`: unknown,
    /// revoked or expired.
    pub async fn working_api_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<ApiTokenCheck>, DomainError> {
        self.read_through(
            |cache| cache.api_token(token_hash),
            async || {
                let mut conn = self.conn().await?;
                let row = api_tokens::table
                    .filter(api_tokens::token_hash.eq(token_hash))
                    .filter(api_tokens::revoked_at.is_null())
                    .filter(api_tokens::expires_at.gt(diesel::dsl::now))
                    .select((
                        api_tokens::id,
                        api_tokens::organisation_id,
                        api_tokens::user_id,
                        api_tokens::token_key,
                        api_tokens::expires_at,
                        api_tokens::permissions,
                    ))
                    .first::<(Uuid, Uuid, Uuid, Uuid, DateTime<Utc>, Vec<String>)>(&mut conn)
                    .await
                    .optional()
                    .map_err(db_error)?;
                let Some((id, organisation_id, user_id, token_key, expires_at, permissions)) = row
                else {
                    return Ok(None);
                };
                Ok(Some(ApiTokenCheck {
                    id,
                    organisation_id,
                    user_id,
                    token_key,
                    expires_at,
                    permissions: parse_permissions(&permissions)?,
                }))
            },
            |cache, epoch, check| cache.put_api_token(epoch, token_hash, *check),
        )
        .await
    }

    /// A page of the user's tokens that still work.
    pub async fn list_api_tokens(
        &self,
        query: ApiTokenQuery,
    ) -> Result<Vec<ApiToken>, DomainError> {
        let mut conn = self.conn().await?;
        let mut select = api_tokens::table
            .filter(api_tokens::organisation_id.eq(query.organisation_id))
            .filter(api_tokens::user_id.eq(query.user_id))
            .filter(api_tokens::revoked_at.is_null())
            .filter(api_tokens::expires_at.gt(diesel::dsl::now))
            .select(ApiTokenRow::as_select())
            .order(api_tokens::id.asc())
            .limit(query.limit)
            .into_boxed();
        if let Some(after) = query.after {
            select = select.filter(api_tokens::id.gt(after));
        }
        let rows = select.load(&mut conn).await.map_err(db_error)?;
        rows.into_iter().map(ApiToken::try_from).collect()
    }

    /// The user of a working token of the organisation.
    pub async fn api_token_owner(
        &self,
        organisation_id: Uuid,
        token_id: Uuid,
    ) -> Result<Option<Uuid>, DomainError> {
        let mut conn = self.conn().await?;
        api_tokens::table
            .filter(api_tokens::organisation_id.eq(organisation_id))
            .filter(api_tokens::id.eq(token_id))
            .filter(api_tokens::revoked_at.is_null())
            .filter(api_tokens::expires_at.gt(diesel::dsl::now))
            .select(api_tokens::user_id)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)
    }

    /// Records a batch of uses: `last_used_at` of each token, and
    /// `first_used_at` of those never used before, which it returns. Not a
    /// call's change: nothing is re-checked, no cache is settled (the check
    /// does not read these columns).
    pub async fn record_api_token_uses(
        &self,
        uses: &[TokenUse],
    ) -> Result<Vec<FirstUse>, DomainError> {
        if uses.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = uses.iter().map(|u| u.token_id).collect();
        let times: Vec<DateTime<Utc>> = uses.iter().map(|u| u.at).collect();
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "UPDATE api_tokens t SET last_used_at = GREATEST(t.last_used_at, u.at), \
                 first_used_at = COALESCE(t.first_used_at, u.at) \
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) \
             WHERE t.id = u.id \
             RETURNING t.id, t.organisation_id, t.user_id, \
                 t.first_used_at = u.at AS first",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&ids)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Timestamptz>, _>(&times)
        .load::<UseRecorded>(&mut conn)
        .await
        .map_err(db_error)
        .map(|rows| {
            rows.into_iter()
                .filter(|row| row.first)
                .map(|row| FirstUse {
                    id: row.id,
                    organisation_id: row.organisation_id,
                    user_id: row.user_id,
                })
                .collect()
        })
    }
}

#[derive(QueryableByName)]
struct UseRecorded {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    organisation_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    first: bool,
}

/// The tokens of the organisation with these ids, as the transaction sees
/// them (the change feed's states), each with whether it still works: it is
/// unrevoked, unexpired, and made under its user's current tokenKey. Those
/// gone are missing.
pub(super) async fn by_ids(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<(ApiToken, bool)>, DomainError> {
    let rows: Vec<(ApiTokenRow, Option<DateTime<Utc>>, Uuid, Uuid)> = api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::organisation_id.eq(organisation_id))
        .filter(api_tokens::id.eq_any(ids))
        .select((
            ApiTokenRow::as_select(),
            api_tokens::revoked_at,
            api_tokens::token_key,
            users::token_key,
        ))
        .load(conn.pg())
        .await?;
    let now = Utc::now();
    rows.into_iter()
        .map(|(row, revoked_at, made_under, current)| {
            let token = ApiToken::try_from(row)?;
            let works = revoked_at.is_none() && token.expires_at > now && made_under == current;
            Ok((token, works))
        })
        .collect()
}

/// The user's tokens that work under `token_key`: those a renewal of the
/// tokenKey (or the user's deletion) is about to end.
pub async fn working_of_user(
    conn: &mut Tx<'_>,
    user_id: Uuid,
    token_key: Uuid,
) -> Result<Vec<ApiToken>, DomainError> {
    let rows: Vec<ApiTokenRow> = api_tokens::table
        .filter(api_tokens::user_id.eq(user_id))
        .filter(api_tokens::token_key.eq(token_key))
        .filter(api_tokens::revoked_at.is_null())
        .filter(api_tokens::expires_at.gt(diesel::dsl::now))
        .select(ApiTokenRow::as_select())
        .order(api_tokens::id)
        .load(conn.pg())
        .await?;
    rows.into_iter().map(ApiToken::try_from).collect()
}

/// Creates a token; returns it.
pub async fn insert(conn: &mut Tx<'_>, new: NewApiToken<'_>) -> Result<ApiToken, DomainError> {
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::id.eq(Uuid::now_v7()),
            api_tokens::organisation_id.eq(new.organisation_id),
            api_tokens::user_id.eq(new.user_id),
            api_tokens::token_key.eq(new.token_key),
            api_tokens::token_hash.eq(new.token_hash),
            api_tokens::name.eq(new.name),
            api_tokens::permissions.eq(permission_ids(new.permissions)),
            api_tokens::expires_at.eq(new.expires_at),
        ))
        .returning(ApiTokenRow::as_returning())
        .get_result(conn.pg())
        .await?
        .try_into()
}

/// The working token of the organisation, locked; NOT_FOUND when there is
/// none (unknown, revoked, expired, or another organisation's).
pub async fn locked_working(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    token_id: Uuid,
) -> Result<ApiToken, DomainError> {
    api_tokens::table
        .filter(api_tokens::organisation_id.eq(organisation_id))
        .filter(api_tokens::id.eq(token_id))
        .filter(api_tokens::revoked_at.is_null())
        .filter(api_tokens::expires_at.gt(diesel::dsl::now))
        .select(ApiTokenRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("api token"))?
        .try_into()
}

pub async fn revoke(conn: &mut Tx<'_>, token_id: Uuid) -> Result<(), DomainError> {
    diesel::update(api_tokens::table.find(token_id))
        .filter(api_tokens::revoked_at.is_null())
        .set(api_tokens::revoked_at.eq(Utc::now()))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// What the write path's re-check reads of a token: its permissions, when
/// it still works for this user and tokenKey.
pub async fn still_working(
    conn: &mut Tx<'_>,
    token_id: Uuid,
    user_id: Uuid,
    token_key: Uuid,
) -> Result<Option<PermissionSet>, DomainError> {
    let permissions = api_tokens::table
        .filter(api_tokens::id.eq(token_id))
        .filter(api_tokens::user_id.eq(user_id))
        .filter(api_tokens::token_key.eq(token_key))
        .filter(api_tokens::revoked_at.is_null())
        .filter(api_tokens::expires_at.gt(diesel::dsl::now))
        .select(api_tokens::permissions)
        .for_share()
        .first::<Vec<String>>(conn.pg())
        .await
        .optional()?;
    permissions.as_deref().map(parse_permissions).transpose()
}

/// The token of the organisation, whatever its state; NOT_FOUND when none.
pub async fn by_id(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    token_id: Uuid,
) -> Result<ApiToken, DomainError> {
    api_tokens::table
        .filter(api_tokens::organisation_id.eq(organisation_id))
        .filter(api_tokens::id.eq(token_id))
        .select(ApiTokenRow::as_select())
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("api token"))?
        .try_into()
}
