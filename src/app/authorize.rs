//! Asking who one is, and answering internal services' authorization
//! questions: both the per-call check's decision, shown.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::access::MEMBERS_READ;
use crate::auth::{Authenticator, Credential, Principal, Verdict};
use crate::domain::user::{Organisation, User};
use crate::domain::{DomainError, Permission};
use crate::store::Store;

/// What WhoAmI answers: the state the per-call check decided on.
pub struct Identity {
    pub user: Option<Arc<User>>,
    pub organisation: Arc<Organisation>,
}

pub struct Authorization {
    store: Store,
    authenticator: Arc<Authenticator>,
}

impl Authorization {
    pub fn new(store: Store, authenticator: Arc<Authenticator>) -> Self {
        Self {
            store,
            authenticator,
        }
    }

    /// The caller as the per-call check established it, with its
    /// organisation as far as the caller's role may read it elsewhere.
    pub async fn who_am_i(&self, caller: &Principal) -> Result<Identity, DomainError> {
        let mut organisation = self.store.organisation(caller.organisation_id).await?;
        if !caller.can(MEMBERS_READ) {
            organisation = Arc::new(organisation.without_members());
        }
        Ok(Identity {
            user: caller.user.clone(),
            organisation,
        })
    }

    /// Whether `credential` may do `permission` now (for internal services).
    pub async fn authorize(
        &self,
        credential: Credential<'_>,
        permission: Permission,
        organisation_id: Option<Uuid>,
    ) -> Result<Verdict, DomainError> {
        self.authenticator
            .authorize(credential, Some(permission), organisation_id)
            .await
    }

    /// Like [`Self::authorize`] for several permissions, one answer each.
    pub async fn authorize_each(
        &self,
        credential: Credential<'_>,
        permissions: &[Permission],
        organisation_id: Option<Uuid>,
    ) -> Result<Vec<Verdict>, DomainError> {
        self.authenticator
            .authorize_each(credential, permissions, organisation_id)
            .await
    }
}
