//! The caller's organisation: its settings and its API key.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::confirm::{self, Confirmable, Preview, Step};
use crate::auth::Principal;
use crate::auth::opaque::{self, API_KEY_PREFIX};
use crate::domain::actor::Actor;
use crate::domain::audit::{INVITE_REVOKE, ORGANISATION_ROTATE_API_KEY, ORGANISATION_UPDATE};
use crate::domain::confirmation::ConfirmedAction;
use crate::domain::{DomainError, user::Organisation};
use crate::store::audit::Audit;
use crate::store::invites;
use crate::store::organisations::{self, ApiKeyHash, organisation_audit};
use crate::store::write::{Change, OrgLock};
use crate::store::{Store, Tx};

/// The changes UpdateOrganisation asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganisationChanges {
    pub name: Option<String>,
    pub secure_playback: Option<bool>,
    pub max_non_revocable_lifetime: Option<Duration>,
}

/// A new API key, shown once.
pub struct RotatedApiKey {
    pub api_key: String,
    pub fingerprint: String,
    pub rotated_at: Option<DateTime<Utc>>,
}

pub struct Organisations {
    store: Store,
    /// The lifetime of the confirmation of an API key rotation.
    confirmation_ttl: Duration,
}

impl Organisations {
    pub fn new(store: Store, confirmation_ttl: Duration) -> Self {
        Self {
            store,
            confirmation_ttl,
        }
    }

    pub async fn get(&self, caller: &Principal) -> Result<Arc<Organisation>, DomainError> {
        self.store.organisation(caller.organisation_id).await
    }

    /// Applies `changes` (AIP-134), unless the organisation changed since
    /// `etag` (AIP-154).
    pub async fn update(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        changes: &OrganisationChanges,
        etag: Option<&str>,
    ) -> Result<Organisation, DomainError> {
        let ctx = caller.change(request_id);
        let organisation_id = ctx.organisation_id;
        self.store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                let before = organisations::load(conn, organisation_id).await?;
                if let Some(etag) = etag
                    && etag != before.etag()
                {
                    return Err(DomainError::Aborted(format!(
                        "the organisation was changed since etag {etag} was read: read it again"
                    )));
                }
                let name = changes.name.clone().unwrap_or_else(|| before.name.clone());
                let secure_playback = changes.secure_playback.unwrap_or(before.secure_playback);
                let max_lifetime = changes
                    .max_non_revocable_lifetime
                    .unwrap_or(before.max_non_revocable_lifetime);
                if name == before.name
                    && secure_playback == before.secure_playback
                    && max_lifetime == before.max_non_revocable_lifetime
                {
                    return Ok(Change::unchanged(before));
                }
                organisations::set_settings(
                    conn,
                    organisation_id,
                    &name,
                    secure_playback,
                    max_lifetime,
                )
                .await?;
                let after = organisations::load(conn, organisation_id).await?;
                let audit = organisation_audit(ORGANISATION_UPDATE, &before, &after);
                Ok(Change::audited(after, audit).settling())
            })
            .await
    }

    /// RotateApiKey: the first step without a confirmation token, the second
    /// with it. Pending invites made with the old key are revoked with it.
    pub async fn rotate_api_key(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        confirmation_token: &str,
    ) -> Result<Step<RotatedApiKey>, DomainError> {
        let ctx = caller.change(request_id);
        let on = RotateApiKey {
            organisation_id: ctx.organisation_id,
        };
        confirm::two_step(
            &self.store,
            &ctx,
            self.confirmation_ttl,
            confirmation_token,
            &on,
        )
        .await
    }
}

/// The double-confirmed rotation of the organisation's API key.
struct RotateApiKey {
    organisation_id: Uuid,
}

impl Confirmable for RotateApiKey {
    type Done = RotatedApiKey;

    fn action(&self) -> ConfirmedAction {
        ConfirmedAction::RotateApiKey
    }

    fn target_id(&self) -> Uuid {
        self.organisation_id
    }

    async fn preview(&self, conn: &mut Tx<'_>) -> Result<Preview, DomainError> {
        let organisation = organisations::load(conn, self.organisation_id).await?;
        let pending_invites = match api_key_actor(&organisation) {
            Some(creator) => {
                invites::pending_created_by(conn, self.organisation_id, &creator).await?
            }
            None => 0,
        };
        Ok(Preview {
            warning: ConfirmedAction::api_key_warning(pending_invites),
            pending_invites,
        })
    }

    async fn carry_out(&self, conn: &mut Tx<'_>) -> Result<Change<RotatedApiKey>, DomainError> {
        let organisation_id = self.organisation_id;
        let key = opaque::generate(API_KEY_PREFIX)?;
        let fingerprint = opaque::fingerprint(&key.hash);
        let new_key = ApiKeyHash {
            hash: &key.hash,
            fingerprint: &fingerprint,
        };
        let before = organisations::load(conn, organisation_id).await?;
        organisations::set_api_key(conn, organisation_id, &new_key).await?;
        let revoked = match api_key_actor(&before) {
            Some(creator) => invites::revoke_created_by(conn, organisation_id, &creator).await?,
            None => Vec::new(),
        };
        let after = organisations::load(conn, organisation_id).await?;
        let audit = organisation_audit(ORGANISATION_ROTATE_API_KEY, &before, &after);
        let revocations = revoked.iter().map(|invite| {
            Audit::invite(
                INVITE_REVOKE,
                invite,
                Some("the API key it was made with was rotated".into()),
            )
        });
        let rotated = RotatedApiKey {
            api_key: key.token,
            fingerprint,
            rotated_at: after.api_key_rotated_at,
        };
        Ok(Change::audited(rotated, audit)
            .and_all(revocations)
            .settling())
    }
}

/// The text form of the actor that acts with the organisation's current API
/// key, as invites record their creator.
fn api_key_actor(organisation: &Organisation) -> Option<Actor> {
    organisation.api_key_fingerprint.clone().map(Actor::ApiKey)
}
