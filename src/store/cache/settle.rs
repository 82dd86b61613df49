//! The writer's half of the protocol: after a commit, a probe and the wait
//! for every counted replica's acknowledgement (or the writer's deadline);
//! and a replica's leaving, so that writers stop waiting for it.

use super::{CHANNEL, GONE_AFTER, MAX_SETTLE};
use crate::domain::DomainError;
use crate::store::schema::{cache_acks, cache_replicas};
use crate::store::{Store, interval};

impl Store {
    /// Returns once every caching replica has dropped what a change this
    /// store just committed made stale (see [`crate::store::cache`]). A change's call must
    /// not return before.
    pub async fn settle(&self) {
        if let Err(error) = self.try_settle().await {
            tracing::warn!(%error, "cannot confirm cache invalidation; waiting the leases out");
            tokio::time::sleep(MAX_SETTLE).await;
        }
    }

    /// Unregisters this replica's cache (at shutdown), so that writers stop
    /// waiting for it at once rather than when its lease runs out.
    pub async fn leave_cache(&self) {
        use diesel::{ExpressionMethods as _, QueryDsl as _};
        use diesel_async::RunQueryDsl as _;
        let replica = self.cache.replica_id();
        if let Ok(mut conn) = self.conn().await {
            let _ = diesel::delete(cache_replicas::table.filter(cache_replicas::id.eq(replica)))
                .execute(&mut conn)
                .await;
        }
    }

    async fn try_settle(&self) -> Result<(), DomainError> {
        use diesel::{BoolExpressionMethods as _, ExpressionMethods as _, QueryDsl as _};
        use diesel_async::RunQueryDsl as _;
        let probe = uuid::Uuid::new_v4();
        let deadline = tokio::time::Instant::now() + MAX_SETTLE;
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(format!("probe:{probe}"))
            .execute(&mut conn)
            .await?;
        let gone_after = interval(GONE_AFTER);
        loop {
            let acknowledged = cache_acks::table
                .filter(cache_acks::probe_id.eq(probe))
                .filter(cache_acks::replica_id.eq(cache_replicas::id));
            let waiting: i64 = cache_replicas::table
                .filter((cache_replicas::lease_until + gone_after).gt(diesel::dsl::now))
                .filter(diesel::dsl::not(diesel::dsl::exists(acknowledged)))
                .count()
                .get_result(&mut conn)
                .await?;
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // With this probe's acknowledgements go those that arrived after
        // their writer had given up: older than the longest settle.
        diesel::delete(
            cache_acks::table.filter(
                cache_acks::probe_id
                    .eq(probe)
                    .or((cache_acks::created_at + interval(MAX_SETTLE)).lt(diesel::dsl::now)),
            ),
        )
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}
