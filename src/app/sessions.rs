//! Signing in (with a password, or by accepting an invite), asking who one
//! is, and answering internal services' authorization questions.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::auth::opaque::{self, INVITE_PREFIX};
use crate::auth::passwords::{Passwords, Requester};
use crate::auth::ratelimit::{Limited, LoginLimiter};
use crate::auth::tokens::{AccessTokens, IssuedToken, TokenClaims};
use crate::auth::{Authenticator, Credential, Principal, Verdict};
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::INVITE_ACCEPT;
use crate::domain::error::AuthFailure;
use crate::domain::user::{Organisation, User};
use crate::domain::{DomainError, Permission, email::Email};
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::invites;
use crate::store::users;
use crate::store::write::{Change, OrgLock};

/// A successful sign-in.
#[derive(Debug)]
pub struct LoggedIn {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub token: IssuedToken,
}

/// What WhoAmI answers: the state the per-call check decided on.
pub struct Identity {
    pub user: Option<Arc<User>>,
    pub organisation: Arc<Organisation>,
}

pub struct Sessions {
    store: Store,
    authenticator: Arc<Authenticator>,
    tokens: Arc<AccessTokens>,
    passwords: Passwords,
    login_limiter: LoginLimiter,
}

impl Sessions {
    pub fn new(
        store: Store,
        authenticator: Arc<Authenticator>,
        tokens: Arc<AccessTokens>,
        passwords: Passwords,
        login_limiter: LoginLimiter,
    ) -> Self {
        Self {
            store,
            authenticator,
            tokens,
            passwords,
            login_limiter,
        }
    }

    /// Signs a user in. An unknown email and a wrong password fail alike and
    /// cost about the same time.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        organisation_id: Option<Uuid>,
        peer: Option<IpAddr>,
    ) -> Result<LoggedIn, DomainError> {
        self.login_limiter
            .check(email.as_str(), peer)
            .map_err(rate_limited)?;
        let requester = Requester::peer(peer);
        let candidates = self
            .store
            .login_candidates(email.as_str(), organisation_id)
            .await?;
        // Exactly one verification whatever the number of candidates, so that
        // neither the time nor the CPU a login costs tells how many
        // organisations hold the email.
        let Some(first) = candidates.first() else {
            self.passwords.verify_decoy(password, &requester).await?;
            return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin));
        };
        if !self
            .passwords
            .verify(password, &first.password_hash, &requester)
            .await?
        {
            return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin));
        }
        if candidates.len() > 1 {
            return Err(DomainError::FailedPrecondition {
                reason: "ORGANISATION_REQUIRED",
                message: "this email signs in to several organisations: give organisation_id"
                    .into(),
            });
        }
        self.logged_in(first.id, first.organisation_id, first.token_key)
    }

    /// Joins the invite's organisation as a new user and signs them in. The
    /// invite is made on its creator's authority: the write re-checks, under
    /// the organisation's lock, that the creator still holds `users.invite`.
    pub async fn accept_invite(
        &self,
        invite_token: &str,
        password: &str,
        request_id: Option<String>,
        peer: Option<IpAddr>,
    ) -> Result<LoggedIn, DomainError> {
        let invalid = || DomainError::Unauthenticated(AuthFailure::InviteInvalid);
        if !opaque::well_formed(invite_token, INVITE_PREFIX) {
            return Err(invalid());
        }
        let token_hash = opaque::hash(invite_token);
        // Looked up before the costly hashing, and again in the transaction.
        let origin = self
            .store
            .pending_invite_origin(&token_hash)
            .await?
            .ok_or_else(invalid)?;
        let creator: Actor = origin.created_by.parse().map_err(|()| invalid())?;
        let password_hash = self
            .passwords
            .hash_for(password, &Requester::peer(peer))
            .await?;
        let ctx = ChangeContext {
            organisation_id: origin.organisation_id,
            actor: creator,
            proof: Proof::Standing,
            request_id,
        };
        let organisation_id = origin.organisation_id;
        let user = self
            .store
            .write(
                &ctx,
                Some(Permission::UsersInvite),
                OrgLock::Exclusive,
                async |conn| {
                    let invite = invites::locked_pending(conn, &token_hash)
                        .await?
                        .filter(|invite| invite.created_by == origin.created_by)
                        .ok_or_else(invalid)?;
                    let user = users::insert(
                        conn,
                        organisation_id,
                        &invite.email,
                        invite.role,
                        &password_hash,
                    )
                    .await?;
                    invites::mark_accepted(conn, invite.id, user.id).await?;
                    let audit =
                        Audit::invite(INVITE_ACCEPT, &invite, Some(format!("user {}", user.id)));
                    let joined = Actor::User(user.id);
                    Ok(Change::unchanged(user).and_by(joined, audit).settling())
                },
            )
            .await
            .map_err(|error| match error {
                // The creator lost the authority the invite was made on.
                DomainError::Unauthenticated(_) | DomainError::PermissionDenied(_) => invalid(),
                other => other,
            })?;
        self.logged_in(user.id, user.organisation_id, user.token_key)
    }

    /// The caller as the per-call check established it, with its
    /// organisation as far as the caller's role may read it elsewhere.
    pub async fn who_am_i(&self, caller: &Principal) -> Result<Identity, DomainError> {
        let mut organisation = self.store.organisation(caller.organisation_id).await?;
        if !caller.can(Permission::UsersRead) {
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

    fn logged_in(
        &self,
        user_id: Uuid,
        organisation_id: Uuid,
        token_key: Uuid,
    ) -> Result<LoggedIn, DomainError> {
        let token = self
            .tokens
            .issue(TokenClaims {
                user_id,
                organisation_id,
                token_key,
            })
            .map_err(|e| DomainError::Internal(format!("signing a token: {e}")))?;
        Ok(LoggedIn {
            user_id,
            organisation_id,
            token,
        })
    }
}

/// RESOURCE_EXHAUSTED with the limit that refused and when to retry.
fn rate_limited(limited: Limited) -> DomainError {
    DomainError::ResourceExhausted {
        reason: "LOGIN_RATE_LIMITED",
        message: format!(
            "too many login attempts for this {}: retry later",
            limited.limit
        ),
        retry_after: limited.retry_after,
        metadata: vec![("limit", limited.limit.to_owned())],
    }
}
