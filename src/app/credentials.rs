//! A user's own password: changing it, and resetting it through a mailed
//! link.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use super::outbox::Outbox;
use super::sessions::no_session;
use crate::auth::Principal;
use crate::auth::opaque::{self, RESET_TOKEN_PREFIX};
use crate::auth::passwords::{Passwords, Requester};
use crate::auth::ratelimit::LoginLimiter;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::{USER_CHANGE_PASSWORD, USER_RESET_PASSWORD};
use crate::domain::error::AuthFailure;
use crate::domain::session::EndReason;
use crate::domain::{DomainError, email::Email};
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::sessions as session_rows;
use crate::store::write::{Change, OrgLock};
use crate::store::{ratelimit as limit_rows, resets, users};

pub struct Credentials {
    store: Store,
    passwords: Passwords,
    login_limiter: Arc<LoginLimiter>,
    outbox: Outbox,
}

impl Credentials {
    pub fn new(
        store: Store,
        passwords: Passwords,
        login_limiter: Arc<LoginLimiter>,
        outbox: Outbox,
    ) -> Self {
        Self {
            store,
            passwords,
            login_limiter,
            outbox,
        }
    }

    /// Changes the caller's password, knowing the current one, and ends
    /// every other session of the caller. A wrong current password counts
    /// against the login limits like a failed login. The addresses known to
    /// the email (exempt from its failed-login ceiling) are forgotten, but
    /// for the caller's, which knows the new password.
    pub async fn change_password(
        &self,
        caller: &Principal,
        current_password: &str,
        new_password: &str,
        peer: Option<IpAddr>,
        request_id: Option<String>,
    ) -> Result<(), DomainError> {
        let (Some(session_id), Some(user)) = (caller.session_id(), caller.user.clone()) else {
            return Err(no_session());
        };
        let attempt = self.login_limiter.admit(&user.email, peer).await?;
        let requester = Requester::peer(peer);
        let stored = self
            .store
            .password_hash(caller.organisation_id, user.id)
            .await?;
        if !self
            .passwords
            .verify(current_password, &stored, &requester)
            .await?
        {
            return Err(DomainError::invalid(
                "current_password",
                "is not the caller's current password",
            ));
        }
        self.login_limiter.passed(&attempt).await?;
        let new_hash = self.passwords.hash_for(new_password, &requester).await?;
        let organisation_id = caller.organisation_id;
        let known = self.login_limiter.new_password(&user.email, peer);
        self.store
            .write(&caller.change(request_id), OrgLock::Shared, async |conn| {
                let user = users::locked(conn, organisation_id, user.id).await?;
                let why = "its user's password changed";
                let ending =
                    users::ending_credentials(conn, &user, Some(session_id), false, why).await?;
                users::set_password(conn, user.id, &new_hash).await?;
                let keep = known.keep.as_ref().map(|(peer, until)| (&peer.key, *until));
                limit_rows::new_password(conn, &known.email_key, keep).await?;
                let ended = session_rows::end_all_of_user(
                    conn,
                    user.id,
                    Some(session_id),
                    EndReason::PasswordChanged,
                )
                .await?;
                let audit = Audit::user(
                    USER_CHANGE_PASSWORD,
                    &user,
                    None,
                    Some(format!("other sessions ended: {ended}")),
                );
                Ok(Change::audited((), audit).and_all(ending).settling())
            })
            .await
    }

    /// Queues a reset request in the outbox (one row, whatever the email):
    /// the answer is the same, and as quick, whether the email exists or
    /// not. Only the reset requests' own limits may refuse it (it takes
    /// nothing from the login limits, so a flood of requests cannot lock the
    /// user out).
    pub async fn request_password_reset(
        &self,
        email: Email,
        organisation_id: Option<Uuid>,
        peer: Option<IpAddr>,
        request_id: Option<String>,
    ) -> Result<(), DomainError> {
        self.login_limiter.admit_reset(email.as_str(), peer).await?;
        self.outbox
            .request_password_reset(&self.store, &email, organisation_id, request_id.as_deref())
            .await
    }

    /// Sets a new password with a reset token and renews the user's
    /// tokenKey, which ends every session and token of the user, and
    /// forgets every address known to the user's email (each earns its
    /// exemption again at its next sign-in).
    pub async fn reset_password(
        &self,
        reset_token: &str,
        new_password: &str,
        peer: Option<IpAddr>,
        request_id: Option<String>,
    ) -> Result<(), DomainError> {
        let invalid = || DomainError::Unauthenticated(AuthFailure::ResetTokenInvalid);
        if !opaque::well_formed(reset_token, RESET_TOKEN_PREFIX) {
            return Err(invalid());
        }
        let token_hash = opaque::hash(reset_token);
        // Looked up before the costly hashing, and again in the transaction.
        let pending = self
            .store
            .pending_reset(&token_hash)
            .await?
            .ok_or_else(invalid)?;
        let new_hash = self
            .passwords
            .hash_for(new_password, &Requester::peer(peer))
            .await?;
        let ctx = ChangeContext {
            organisation_id: pending.organisation_id,
            actor: Actor::User(pending.user_id),
            proof: Proof::Standing,
            permission: None,
            request_id,
        };
        let login_limiter = &self.login_limiter;
        self.store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                let reset = resets::locked_pending(conn, &token_hash)
                    .await?
                    .filter(|reset| reset.user_id == pending.user_id)
                    .ok_or_else(invalid)?;
                let user = users::locked(conn, reset.organisation_id, reset.user_id).await?;
                users::set_password(conn, user.id, &new_hash).await?;
                let known = login_limiter.new_password(&user.email, None);
                limit_rows::new_password(conn, &known.email_key, None).await?;
                let why = "its user's password was reset";
                let ended = users::ending_credentials(conn, &user, None, true, why).await?;
                let renewed = users::renew_token_key_with_role(conn, &user, user.role).await?;
                resets::use_all_of_user(conn, user.id).await?;
                let audit = Audit::user(
                    USER_RESET_PASSWORD,
                    &renewed,
                    Some(user.token_key_fingerprint()),
                    Some(renewed.token_key_fingerprint()),
                );
                Ok(Change::audited((), audit).and_all(ended).settling())
            })
            .await
            .map_err(|error| match error {
                // The user was deleted meanwhile.
                DomainError::Unauthenticated(_) | DomainError::NotFound(_) => invalid(),
                other => other,
            })
    }
}
