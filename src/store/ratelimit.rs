//! The login rate limits' shared state: one GCRA state per key in
//! PostgreSQL, so that every replica counts against the same limits (the
//! migration's `usermgmt_take_login_attempt` takes from several at once).
//! The password reset requests' limits are buckets of the same table, under
//! keys of their own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bytea, Interval};
use diesel_async::RunQueryDsl;

use super::schema::login_known_peers;
use super::write::Tx;
use super::{Store, db_error, interval};
use crate::domain::DomainError;

/// One limit to take an attempt from: its key (a SHA-256), one attempt
/// more every `period`, `burst` attempts at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Which limit this is, for the caller's error.
    pub name: &'static str,
    pub key: [u8; 32],
    pub period: Duration,
    pub burst: u32,
}

#[derive(QueryableByName)]
struct Waited {
    #[diesel(sql_type = Interval)]
    wait: diesel::pg::data_types::PgInterval,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    limiting: i32,
}

diesel::table! {
    login_limits (key) {
        key -> Bytea,
        tat -> Timestamptz,
    }
}

impl Store {
    /// Takes one attempt from every bucket, or from none: `Ok(None)` when
    /// taken, else the bucket that waits longest and how long until every
    /// bucket allows one.
    pub async fn take_login_attempt<'b>(
        &self,
        buckets: &'b [Bucket],
    ) -> Result<Option<(&'b Bucket, Duration)>, DomainError> {
        let mut sorted: Vec<&Bucket> = buckets.iter().collect();
        sorted.sort_by_key(|bucket| bucket.key);
        sorted.dedup_by(|a, b| a.key == b.key);
        let keys: Vec<Vec<u8>> = sorted.iter().map(|bucket| bucket.key.to_vec()).collect();
        let periods: Vec<_> = sorted
            .iter()
            .map(|bucket| interval(bucket.period))
            .collect();
        let bursts: Vec<_> = sorted
            .iter()
            .map(|bucket| interval(bucket.period.saturating_mul(bucket.burst)))
            .collect();
        let mut conn = self.conn().await?;
        let waited: Waited =
            diesel::sql_query("SELECT wait, limiting FROM usermgmt_take_login_attempt($1, $2, $3)")
                .bind::<Array<Bytea>, _>(keys)
                .bind::<Array<Interval>, _>(periods)
                .bind::<Array<Interval>, _>(bursts)
                .get_result(&mut conn)
                .await
                .map_err(db_error)?;
        const DAY_MICROS: i64 = 86_400_000_000;
        let micros = waited
            .wait
            .microseconds
            .saturating_add(i64::from(waited.wait.days).saturating_mul(DAY_MICROS))
            .saturating_add(i64::from(waited.wait.months).saturating_mul(30 * DAY_MICROS));
        let limiting = usize::try_from(waited.limiting)
            .ok()
            .and_then(|position| position.checked_sub(1))
            .and_then(|index| sorted.get(index));
        Ok(limiting.map(|bucket| {
            let wait = u64::try_from(micros).unwrap_or(0).max(1);
            (*bucket, Duration::from_micros(wait))
        }))
    }

    /// Gives back the attempt taken from each of `buckets` (the attempt
    /// succeeded, and they count failures only).
    pub async fn refund_login_attempt(&self, buckets: &[Bucket]) -> Result<(), DomainError> {
        let mut conn = self.conn().await?;
        for bucket in buckets {
            diesel::update(login_limits::table.find(bucket.key.to_vec()))
                .set(login_limits::tat.eq(login_limits::tat - interval(bucket.period)))
                .execute(&mut conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// Whether `key` (an email and a peer) signed in successfully lately.
    pub async fn is_known_peer(&self, key: &[u8; 32]) -> Result<bool, DomainError> {
        let mut conn = self.conn().await?;
        let count: i64 = login_known_peers::table
            .filter(login_known_peers::key.eq(key.to_vec()))
            .filter(login_known_peers::until.gt(diesel::dsl::now))
            .count()
            .get_result(&mut conn)
            .await
            .map_err(db_error)?;
        Ok(count > 0)
    }

    /// Remembers `key` (an address known to the email of `email_key`) as
    /// known until `until`.
    pub async fn remember_peer(
        &self,
        key: &[u8; 32],
        email_key: &[u8; 32],
        until: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let mut conn = self.conn().await?;
        remember(&mut conn, key, email_key, until).await
    }

    /// Deletes the limits and known peers that have run out.
    pub async fn forget_spent_limits(&self) -> Result<(), DomainError> {
        let mut conn = self.conn().await?;
        diesel::delete(login_limits::table.filter(login_limits::tat.lt(diesel::dsl::now)))
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        diesel::delete(
            login_known_peers::table.filter(login_known_peers::until.lt(diesel::dsl::now)),
        )
        .execute(&mut conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

async fn remember(
    conn: &mut diesel_async::AsyncPgConnection,
    key: &[u8; 32],
    email_key: &[u8; 32],
    until: DateTime<Utc>,
) -> Result<(), DomainError> {
    diesel::insert_into(login_known_peers::table)
        .values((
            login_known_peers::key.eq(key.to_vec()),
            login_known_peers::email_key.eq(email_key.to_vec()),
            login_known_peers::until.eq(until),
        ))
        .on_conflict(login_known_peers::key)
        .do_update()
        .set((
            login_known_peers::email_key.eq(email_key.to_vec()),
            login_known_peers::until.eq(until),
        ))
        .execute(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// A new password of the email of `email_key`, in the change's
/// transaction: every address known to the email is forgotten (those that
/// knew the old password lose their exemption with it), then `keep` (key
/// and until), the address that set the new one, is remembered again.
/// How many were forgotten.
pub async fn new_password(
    conn: &mut Tx<'_>,
    email_key: &[u8; 32],
    keep: Option<(&[u8; 32], DateTime<Utc>)>,
) -> Result<usize, DomainError> {
    let forgotten = diesel::delete(
        login_known_peers::table.filter(login_known_peers::email_key.eq(email_key.to_vec())),
    )
    .execute(conn.pg())
    .await
    .map_err(db_error)?;
    if let Some((key, until)) = keep {
        remember(conn.pg(), key, email_key, until).await?;
    }
    Ok(forgotten)
}
