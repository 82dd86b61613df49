//! Personal API tokens: creating one for oneself, listing and revoking
//! one's own (or, with `api_tokens.manage`, anyone's in the organisation).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sessions::no_session;
use crate::auth::Principal;
use crate::auth::opaque::{self, API_TOKEN_PREFIX};
use crate::domain::DomainError;
use crate::domain::api_token::ApiToken;
use crate::domain::audit::{API_TOKEN_CREATE, API_TOKEN_REVOKE};
use crate::domain::permission::PermissionSet;
use crate::store::Store;
use crate::store::api_tokens::{self, ApiTokenQuery, NewApiToken};
use crate::store::audit::Audit;
use crate::store::users;
use crate::store::write::{Change, OrgLock};

/// A new token and its secret (shown once).
pub struct NewlyCreated {
    pub api_token: ApiToken,
    pub token: String,
}

/// What a new token is to be.
pub struct TokenRequest {
    pub name: String,
    pub expires_at: DateTime<Utc>,
    pub permissions: PermissionSet,
}

pub struct ApiTokens {
    store: Store,
}

impl ApiTokens {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Creates a token for the caller, bound to the caller's current
    /// tokenKey. Needs a signed-in session: a token cannot mint tokens.
    pub async fn create(
        &self,
        caller: &Principal,
        request: TokenRequest,
        request_id: Option<String>,
    ) -> Result<NewlyCreated, DomainError> {
        let user_id = match (caller.has_session(), caller.user_id()) {
            (true, Some(user_id)) => user_id,
            _ => return Err(no_session()),
        };
        let secret = opaque::generate(API_TOKEN_PREFIX)?;
        let ctx = caller.change(request_id);
        let organisation_id = caller.organisation_id;
        let api_token = self
            .store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let user = users::locked(conn, organisation_id, user_id).await?;
                // The role may have changed since admission: the write path
                // re-checked the tokenKey, and a role change renews it.
                if !request
                    .permissions
                    .is_subset_of(PermissionSet::of_role(user.role))
                {
                    return Err(DomainError::invalid(
                        "permissions",
                        "must be permissions of the caller's role",
                    ));
                }
                let token = api_tokens::insert(
                    conn,
                    NewApiToken {
                        organisation_id,
                        user_id,
                        token_key: user.token_key,
                        token_hash: &secret.hash,
                        name: &request.name,
                        permissions: request.permissions,
                        expires_at: request.expires_at,
                    },
                )
                .await?;
                let audit = Audit::api_token(API_TOKEN_CREATE, &token);
                Ok(Change::audited(token, audit))
            })
            .await?;
        Ok(NewlyCreated {
            api_token,
            token: secret.token,
        })
    }

    /// A page of a user's working tokens: the caller's own when `user_id` is
    /// none, another's with `api_tokens.manage`.
    pub async fn list(
        &self,
        caller: &Principal,
        user_id: Option<Uuid>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, DomainError> {
        let user_id = user_id
            .or(caller.user_id())
            .ok_or_else(|| DomainError::invalid("user_id", "is required with an API key"))?;
        caller.may_act_on(user_id)?;
        // NOT_FOUND for a user of another organisation, as everywhere.
        self.store.user(caller.organisation_id, user_id).await?;
        self.store
            .list_api_tokens(ApiTokenQuery {
                organisation_id: caller.organisation_id,
                user_id,
                after,
                limit,
            })
            .await
    }

    /// Revokes a token: the caller's own, or with `api_tokens.manage` any of
    /// the organisation.
    pub async fn revoke(
        &self,
        caller: &Principal,
        token_id: Uuid,
        request_id: Option<String>,
    ) -> Result<ApiToken, DomainError> {
        let organisation_id = caller.organisation_id;
        let owner = self
            .store
            .api_token_owner(organisation_id, token_id)
            .await?
            .ok_or(DomainError::NotFound("api token"))?;
        let ctx = caller.change_on(owner, request_id)?;
        self.store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let token = api_tokens::locked_working(conn, organisation_id, token_id).await?;
                if token.user_id != owner {
                    return Err(DomainError::NotFound("api token"));
                }
                api_tokens::revoke(conn, token_id).await?;
                let audit = Audit::api_token(API_TOKEN_REVOKE, &token);
                Ok(Change::audited(token, audit).settling())
            })
            .await
    }
}
