//! When personal API tokens were last used, recorded without a database
//! write per call: each call notes the time in memory, and a task writes the
//! batch every flush interval (and audits each token's first use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::API_TOKEN_FIRST_USE;
use crate::store::Store;
use crate::store::api_tokens::{self, FirstUse, TokenUse};
use crate::store::audit::Audit;
use crate::store::write::{Change, OrgLock};

/// The uses noted since the last flush: the latest per token.
#[derive(Default)]
pub struct ApiTokenUsage {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl ApiTokenUsage {
    /// Notes that `token_id` was used now.
    pub fn touch(&self, token_id: Uuid) {
        let now = Utc::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(token_id, now);
    }

    fn take(&self) -> Vec<TokenUse> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .map(|(token_id, at)| TokenUse { token_id, at })
            .collect()
    }

    /// Puts back uses a failed flush could not write (a later use wins).
    fn restore(&self, uses: Vec<TokenUse>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for TokenUse { token_id, at } in uses {
            let latest = pending.entry(token_id).or_insert(at);
            *latest = (*latest).max(at);
        }
    }

    /// Writes the uses noted so far and audits first uses.
    pub async fn flush(&self, store: &Store) -> Result<(), DomainError> {
        let uses = self.take();
        if uses.is_empty() {
            return Ok(());
        }
        let first_uses = match store.record_api_token_uses(&uses).await {
            Ok(first_uses) => first_uses,
            Err(error) => {
                self.restore(uses);
                return Err(error);
            }
        };
        for first_use in first_uses {
            audit_first_use(store, first_use).await;
        }
        Ok(())
    }
}

/// Writes the uses every `interval` until aborted.
pub async fn flush_every(usage: Arc<ApiTokenUsage>, store: Store, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = usage.flush(&store).await {
            tracing::warn!(%error, "could not record the use of API tokens; retrying");
        }
    }
}

/// Records a token's first use in its organisation, as made by its user;
/// nothing when the user is gone or suspended meanwhile.
async fn audit_first_use(store: &Store, first_use: FirstUse) {
    let ctx = ChangeContext {
        organisation_id: first_use.organisation_id,
        actor: Actor::User(first_use.user_id),
        proof: Proof::Standing,
        permission: None,
        request_id: None,
    };
    let recorded = store
        .write(&ctx, OrgLock::Shared, async |conn| {
            let token = api_tokens::by_id(conn, first_use.organisation_id, first_use.id).await?;
            Ok(Change::audited(
                (),
                Audit::api_token(API_TOKEN_FIRST_USE, &token),
            ))
        })
        .await;
    if let Err(error) = recorded {
        tracing::debug!(%error, token_id = %first_use.id, "first use of an API token not audited");
    }
}
