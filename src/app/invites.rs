//! Invites: made by a user or the API key with the invite authority,
//! listed and revoked by the organisation's admins, and accepted by the
//! invitee, who joins as a new user and is signed in.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::outbox::{InviteMail, Outbox};
use super::sessions::{Client, LoggedIn, open_session, signed_in};
use crate::auth::Principal;
use crate::auth::access::INVITE_AUTHORITY;
use crate::auth::opaque::{self, INVITE_PREFIX};
use crate::auth::passwords::{Passwords, Requester};
use crate::auth::tokens::AccessTokens;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::{INVITE_ACCEPT, INVITE_CREATE, INVITE_REVOKE, USER_CREATE};
use crate::domain::error::AuthFailure;
use crate::domain::invite::Invite;
use crate::domain::session::SessionLifetime;
use crate::domain::{DomainError, Role, email::Email};
use crate::store::audit::Audit;
use crate::store::invites::{self, NewInvite};
use crate::store::organisations::members_audit;
use crate::store::write::{Change, OrgLock};
use crate::store::{Store, Tx, users};

/// A new invite and its secret token (shown once).
pub struct NewlyInvited {
    pub invite: Invite,
    pub token: String,
}

pub struct Invites {
    store: Store,
    passwords: Passwords,
    tokens: Arc<AccessTokens>,
    outbox: Outbox,
    /// The lifetime of an invite whose request gives none.
    invite_ttl: Duration,
    /// The lifetime of the session an accepted invite opens.
    lifetime: SessionLifetime,
}

impl Invites {
    pub fn new(
        store: Store,
        passwords: Passwords,
        tokens: Arc<AccessTokens>,
        outbox: Outbox,
        invite_ttl: Duration,
        lifetime: SessionLifetime,
    ) -> Self {
        Self {
            store,
            passwords,
            tokens,
            outbox,
            invite_ttl,
            lifetime,
        }
    }

    pub async fn create(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        email: &Email,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<NewlyInvited, DomainError> {
        let ttl = ttl.unwrap_or(self.invite_ttl);
        let ctx = caller.change(request_id);
        let secret = opaque::generate(INVITE_PREFIX)?;
        let expires_at = Utc::now() + ttl;
        let (store, outbox) = (&self.store, &self.outbox);
        let invite = self
            .store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                refuse_taken_email(conn, ctx.organisation_id, email).await?;
                let new = NewInvite {
                    email,
                    role,
                    token_hash: &secret.hash,
                    expires_at,
                };
                let invite = invites::insert(conn, &ctx, new).await?;
                // Mailed to the invitee when mail is on, from the outbox row
                // committed with the invite; the admin gets the token too.
                let mail = InviteMail {
                    invite: &invite,
                    token: &secret.token,
                    request_id: ctx.request_id.as_deref(),
                };
                outbox.queue_invite(conn, store, mail).await?;
                let audit = Audit::invite(INVITE_CREATE, &invite, Some(invite.role.to_string()));
                Ok(Change::audited(invite, audit))
            })
            .await?;
        self.outbox.queued("invite");
        Ok(NewlyInvited {
            invite,
            token: secret.token,
        })
    }

    pub async fn list(
        &self,
        caller: &Principal,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Invite>, DomainError> {
        self.store
            .list_invites(caller.organisation_id, after, limit)
            .await
    }

    pub async fn revoke(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        invite_id: Uuid,
    ) -> Result<Invite, DomainError> {
        let ctx = caller.change(request_id);
        self.store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                let invite = invites::revoke(conn, ctx.organisation_id, invite_id).await?;
                let audit = Audit::invite(INVITE_REVOKE, &invite, None);
                Ok(Change::audited(invite, audit))
            })
            .await
    }

    /// Joins the invite's organisation as a new user and signs them in. The
    /// invite is made on its creator's authority: the write re-checks, under
    /// the organisation's lock, that the creator still holds `users.invite`.
    pub async fn accept(
        &self,
        invite_token: &str,
        password: &str,
        request_id: Option<String>,
        client: &Client,
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
        let creator = origin.created_by.clone();
        let password_hash = self
            .passwords
            .hash_for(password, &Requester::peer(client.peer))
            .await?;
        let ctx = ChangeContext {
            organisation_id: origin.organisation_id,
            actor: creator,
            proof: Proof::Standing,
            permission: Some(INVITE_AUTHORITY),
            request_id,
        };
        let organisation_id = origin.organisation_id;
        let lifetime = self.lifetime;
        let opened = self
            .store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
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
                let opened = open_session(conn, &user, client, lifetime).await?;
                let audit =
                    Audit::invite(INVITE_ACCEPT, &invite, Some(format!("user {}", user.id)));
                let created = Audit::user(USER_CREATE, &user, None, Some(user.role.to_string()));
                let session = opened.audit(&user);
                let members = members_audit(organisation_id, USER_CREATE, user.id);
                let joined = Actor::User(user.id);
                Ok(Change::unchanged(opened)
                    .and_by(joined.clone(), audit)
                    .and_by(joined.clone(), created)
                    .and_by(joined.clone(), members)
                    .and_by(joined, session)
                    .settling())
            })
            .await
            .map_err(|error| match error {
                // The creator lost the authority the invite was made on.
                DomainError::Unauthenticated(_) | DomainError::PermissionDenied(_) => invalid(),
                other => other,
            })?;
        signed_in(&self.tokens, opened)
    }
}

/// ALREADY_EXISTS when the email is a user's or has a pending invite.
async fn refuse_taken_email(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    email: &Email,
) -> Result<(), DomainError> {
    if users::email_taken(conn, organisation_id, email.as_str()).await? {
        return Err(DomainError::AlreadyExists {
            resource: "user",
            message: "a user with this email exists in the organisation".into(),
        });
    }
    if invites::pending_for_email(conn, organisation_id, email.as_str()).await? {
        return Err(DomainError::AlreadyExists {
            resource: "invite",
            message: "this email has a pending invite: revoke it first".into(),
        });
    }
    Ok(())
}
