//! The one query of `usermgmt bench-tokens`: sessions opened in bulk for
//! benchmark users, outside any call (and so across organisations).

use diesel::QueryableByName;
use diesel_async::RunQueryDsl as _;
use uuid::Uuid;

use super::{Store, db_error};
use crate::domain::DomainError;

/// A session opened for a benchmark user: what its access token carries.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct BenchSession {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organisation_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub token_key: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub session_id: Uuid,
}

const OPEN: &str = "INSERT INTO sessions \
     (id, organisation_id, user_id, token_key, expires_at, absolute_expires_at, user_agent) \
     SELECT gen_random_uuid(), organisation_id, id, token_key, now() + interval '1 day', \
            now() + interval '1 day', 'loadgen' FROM chosen \
     RETURNING user_id, organisation_id, token_key, id AS session_id";

impl Store {
    /// Opens a day-long session for each of the first `count` users (by
    /// id), of `organisation_id` or of every organisation, in one statement,
    /// as a login would; fewer when there are fewer users.
    pub async fn open_bench_sessions(
        &self,
        organisation_id: Option<Uuid>,
        count: u32,
    ) -> Result<Vec<BenchSession>, DomainError> {
        let limit = i64::from(count);
        let mut conn = self.conn().await?;
        let opened = match organisation_id {
            Some(organisation_id) => {
                diesel::sql_query(format!(
                    "WITH chosen AS (SELECT id, organisation_id, token_key FROM users \
                     WHERE organisation_id = $1 ORDER BY id LIMIT $2) {OPEN}"
                ))
                .bind::<diesel::sql_types::Uuid, _>(organisation_id)
                .bind::<diesel::sql_types::BigInt, _>(limit)
                .load(&mut conn)
                .await
            }
            None => {
                diesel::sql_query(format!(
                    "WITH chosen AS (SELECT id, organisation_id, token_key FROM users \
                     ORDER BY id LIMIT $1) {OPEN}"
                ))
                .bind::<diesel::sql_types::BigInt, _>(limit)
                .load(&mut conn)
                .await
            }
        };
        opened.map_err(db_error)
    }
}
