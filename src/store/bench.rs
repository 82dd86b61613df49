//! The one query of `usermgmt bench-tokens`: sessions opened in bulk for
//! benchmark users, outside any call (and so across organisations), as an
//! operator's change.

use diesel::QueryableByName;
use diesel_async::RunQueryDsl as _;
use uuid::Uuid;

use super::audit::Audit;
use super::write::Change;
use super::{Store, db_error};
use crate::domain::DomainError;
use crate::domain::audit::SESSION_OPEN;

/// A session opened for a benchmark user: what its access token carries.
#[derive(Debug, Clone, QueryableByName)]
pub struct BenchSession {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub organisation_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub token_key: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub session_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub email: String,
}

/// Opens the sessions of the users `chosen`; reads each with its user's
/// email.
const OPEN: &str = ", opened AS (INSERT INTO sessions \
     (id, organisation_id, user_id, token_key, expires_at, absolute_expires_at, user_agent) \
     SELECT gen_random_uuid(), organisation_id, id, token_key, now() + interval '1 day', \
            now() + interval '1 day', 'loadgen' FROM chosen \
     RETURNING user_id, organisation_id, token_key, id AS session_id) \
     SELECT o.*, c.email FROM opened o JOIN chosen c ON c.id = o.user_id";

impl Store {
    /// Opens a day-long session for each of the first `count` users (by
    /// id), of `organisation_id` or of every organisation, in one statement,
    /// as a login would; fewer when there are fewer users. An operator's
    /// change: each session opened is a change of its organisation.
    pub async fn open_bench_sessions(
        &self,
        organisation_id: Option<Uuid>,
        count: u32,
    ) -> Result<Vec<BenchSession>, DomainError> {
        let limit = i64::from(count);
        self.operate(async |conn| {
            let opened: Vec<BenchSession> =
                match organisation_id {
                    Some(organisation_id) => diesel::sql_query(format!(
                        "WITH chosen AS (SELECT id, organisation_id, token_key, email FROM users \
                         WHERE organisation_id = $1 ORDER BY id LIMIT $2) {OPEN}"
                    ))
                    .bind::<diesel::sql_types::Uuid, _>(organisation_id)
                    .bind::<diesel::sql_types::BigInt, _>(limit)
                    .load(conn.pg())
                    .await,
                    None => diesel::sql_query(format!(
                        "WITH chosen AS (SELECT id, organisation_id, token_key, email FROM users \
                         ORDER BY id LIMIT $1) {OPEN}"
                    ))
                    .bind::<diesel::sql_types::BigInt, _>(limit)
                    .load(conn.pg())
                    .await,
                }
                .map_err(db_error)?;
            let audits: Vec<(Uuid, Audit)> = opened
                .iter()
                .map(|s| {
                    let audit = Audit::session_of(SESSION_OPEN, s.session_id, s.user_id, &s.email);
                    (s.organisation_id, audit)
                })
                .collect();
            let change = audits.into_iter().fold(
                Change::unchanged(opened),
                |change, (organisation_id, audit)| change.and_in(organisation_id, audit),
            );
            Ok(change)
        })
        .await
    }
}
