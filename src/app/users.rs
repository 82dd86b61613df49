//! Managing the users of the caller's organisation: reading them, creating
//! and inviting, changing roles, deleting and renewing tokenKeys.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::confirm::{self, Confirmation, Step};
use super::outbox::Outbox;
use crate::auth::Principal;
use crate::auth::opaque::{self, INVITE_PREFIX};
use crate::auth::passwords::{Passwords, Requester};
use crate::domain::actor::{Actor, ChangeContext};
use crate::domain::audit::{
    INVITE_CREATE, INVITE_REVOKE, USER_CREATE, USER_DELETE, USER_REACTIVATE, USER_RENEW_TOKEN_KEY,
    USER_SUSPEND, USER_UPDATE_ROLE,
};
use crate::domain::invariants::{ConfirmedAction, etag_matches, keeps_an_admin};
use crate::domain::invite::Invite;
use crate::domain::user::{UserCursor, UserState};
use crate::domain::{DomainError, Permission as P, Role, email::Email, user::User};
use crate::store::audit::Audit;
use crate::store::confirmations::{self, NewConfirmation};
use crate::store::invites::{self, NewInvite};
use crate::store::users::{self, UserQuery};
use crate::store::write::{Change, OrgLock};
use crate::store::{Store, Tx};

/// Lifetimes of what user administration hands out.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The lifetime of an invite whose request gives none.
    pub invite_ttl: Duration,
    /// The lifetime of the confirmation of a delete or renew.
    pub confirmation_ttl: Duration,
}

/// Which users a page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub state: Option<UserState>,
    pub email_prefix: Option<String>,
}

impl UserFilter {
    /// A canonical text of the filter, bound into page tokens.
    pub fn fingerprint(&self) -> String {
        format!(
            "role={};state={};prefix={:?}",
            self.role.map_or("*", Role::as_str),
            self.state.map_or("*", UserState::as_str),
            self.email_prefix
        )
    }
}

/// A page of users and how many match in all.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    pub total_size: i64,
}

/// The outcome of a role change.
#[derive(Debug)]
pub struct RoleChange {
    pub user: User,
    /// False when the user already had the role.
    pub changed: bool,
    /// The user's pending invites revoked with the change.
    pub revoked_invites: usize,
}

/// A new invite and its secret token (shown once).
pub struct NewlyInvited {
    pub invite: Invite,
    pub token: String,
}

pub struct Users {
    store: Store,
    passwords: Passwords,
    settings: AdminSettings,
    outbox: Outbox,
}

impl Users {
    pub fn new(
        store: Store,
        passwords: Passwords,
        settings: AdminSettings,
        outbox: Outbox,
    ) -> Self {
        Self {
            store,
            passwords,
            settings,
            outbox,
        }
    }

    pub async fn get(&self, caller: &Principal, user_id: Uuid) -> Result<Arc<User>, DomainError> {
        self.store.user(caller.organisation_id, user_id).await
    }

    /// A page of the caller's organisation's users matching `filter`.
    pub async fn list(
        &self,
        caller: &Principal,
        filter: UserFilter,
        after: Option<UserCursor>,
        limit: i64,
    ) -> Result<UserPage, DomainError> {
        let users = self
            .store
            .list_users(UserQuery {
                organisation_id: caller.organisation_id,
                role: filter.role,
                state: filter.state,
                email_prefix: filter.email_prefix.clone(),
                after,
                limit,
            })
            .await?;
        let total_size = self.total_size(caller.organisation_id, &filter).await?;
        Ok(UserPage { users, total_size })
    }

    /// How many users match `filter` in all: from the organisation's per-role
    /// counts (cached, exact) rather than a count(*) per page, which
    /// dominated the page time at 100k users; not counted for a prefix
    /// search (0).
    async fn total_size(
        &self,
        organisation_id: Uuid,
        filter: &UserFilter,
    ) -> Result<i64, DomainError> {
        if filter.email_prefix.is_some() {
            return Ok(0);
        }
        let organisation = self.store.organisation(organisation_id).await?;
        let all = organisation.user_count_with(filter.role);
        let Some(state) = filter.state else {
            return Ok(all);
        };
        let suspended: i64 = self
            .store
            .suspended_counts(organisation_id)
            .await?
            .into_iter()
            .filter(|(role, _)| filter.role.is_none_or(|wanted| wanted == *role))
            .map(|(_, count)| count)
            .sum();
        Ok(match state {
            UserState::Suspended => suspended,
            UserState::Active => all.saturating_sub(suspended),
        })
    }

    pub async fn create(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        email: &Email,
        role: Role,
        password: &str,
    ) -> Result<User, DomainError> {
        let ctx = caller.change(request_id);
        let password_hash = self
            .passwords
            .hash_for(password, &Requester::Caller(ctx.actor.to_string()))
            .await?;
        let organisation_id = ctx.organisation_id;
        self.store
            .write(
                &ctx,
                Some(P::UsersCreate),
                OrgLock::Exclusive,
                async |conn| {
                    let user =
                        users::insert(conn, organisation_id, email.as_str(), role, &password_hash)
                            .await?;
                    let audit = Audit::user(USER_CREATE, &user, None, Some(role.to_string()));
                    Ok(Change::audited(user, audit).settling())
                },
            )
            .await
    }

    pub async fn invite(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        email: &Email,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<NewlyInvited, DomainError> {
        let ttl = ttl.unwrap_or(self.settings.invite_ttl);
        let ctx = caller.change(request_id);
        let secret = opaque::generate(INVITE_PREFIX)?;
        let expires_at = Utc::now() + ttl;
        let invite = self
            .store
            .write(
                &ctx,
                Some(P::UsersInvite),
                OrgLock::Exclusive,
                async |conn| {
                    refuse_taken_email(conn, ctx.organisation_id, email).await?;
                    let new = NewInvite {
                        email,
                        role,
                        token_hash: &secret.hash,
                        expires_at,
                    };
                    let invite = invites::insert(conn, &ctx, new).await?;
                    let audit =
                        Audit::invite(INVITE_CREATE, &invite, Some(invite.role.to_string()));
                    Ok(Change::audited(invite, audit))
                },
            )
            .await?;
        // Mailed to the invitee when mail is on; the admin gets the token too.
        let organisation = self.store.organisation(caller.organisation_id).await?;
        self.outbox.invite(
            invite.clone(),
            secret.token.clone(),
            organisation.name.clone(),
        );
        Ok(NewlyInvited {
            invite,
            token: secret.token,
        })
    }

    pub async fn list_invites(
        &self,
        caller: &Principal,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Invite>, DomainError> {
        self.store
            .list_invites(caller.organisation_id, after, limit)
            .await
    }

    pub async fn revoke_invite(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        invite_id: Uuid,
    ) -> Result<Invite, DomainError> {
        let ctx = caller.change(request_id);
        self.store
            .write(
                &ctx,
                Some(P::UsersInvite),
                OrgLock::Exclusive,
                async |conn| {
                    let invite = invites::revoke(conn, ctx.organisation_id, invite_id).await?;
                    let audit = Audit::invite(INVITE_REVOKE, &invite, None);
                    Ok(Change::audited(invite, audit))
                },
            )
            .await
    }

    /// Gives the user `role` and a new tokenKey; a role without
    /// `users.invite` takes the user's pending invites with it.
    pub async fn update_role(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        role: Role,
        etag: Option<&str>,
    ) -> Result<RoleChange, DomainError> {
        let ctx = caller.change(request_id);
        let organisation_id = ctx.organisation_id;
        self.store
            .write(
                &ctx,
                Some(P::UsersUpdateRole),
                OrgLock::Exclusive,
                async |conn| {
                    let user = users::locked(conn, organisation_id, user_id).await?;
                    etag_matches(&user, etag)?;
                    if user.role == role {
                        return Ok(Change::unchanged(RoleChange {
                            user,
                            changed: false,
                            revoked_invites: 0,
                        }));
                    }
                    keeps_an_admin_without(conn, &user, Some(role)).await?;
                    let updated = users::renew_token_key_with_role(conn, &user, role).await?;
                    // Every pending invite's creator holds users.invite (a
                    // migration revoked older ones), so only losing it leaves
                    // invites to revoke.
                    let revoked = if user.role.can(P::UsersInvite) && !role.can(P::UsersInvite) {
                        revoke_invites_of(conn, &updated, "its creator lost users.invite").await?
                    } else {
                        Vec::new()
                    };
                    let audit = Audit::user(
                        USER_UPDATE_ROLE,
                        &updated,
                        Some(user.role.to_string()),
                        Some(role.to_string()),
                    );
                    let outcome = RoleChange {
                        user: updated,
                        changed: true,
                        revoked_invites: revoked.len(),
                    };
                    Ok(Change::audited(outcome, audit).and_all(revoked).settling())
                },
            )
            .await
    }

    /// DeleteUser: the first step without a confirmation token, the second
    /// with it. The user's pending invites go with the user.
    pub async fn delete(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let on = ConfirmedOn {
            action: ConfirmedAction::DeleteUser,
            user_id,
            permission: Some(P::UsersDelete),
        };
        self.confirmed(caller, request_id, on, confirmation_token)
            .await
    }

    /// RenewTokenKey: one's own needs no permission, another user's needs
    /// `users.renew_token`.
    pub async fn renew_token_key(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let on = ConfirmedOn {
            action: ConfirmedAction::RenewTokenKey,
            user_id,
            permission: caller.permission_unless_own(P::UsersRenewToken, user_id)?,
        };
        self.confirmed(caller, request_id, on, confirmation_token)
            .await
    }

    /// SuspendUser: the first step without a confirmation token, the second
    /// with it. The user's sessions and tokens end with a new tokenKey, and
    /// their pending invites are revoked; suspending a suspended user
    /// changes nothing.
    pub async fn suspend(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let on = ConfirmedOn {
            action: ConfirmedAction::SuspendUser,
            user_id,
            permission: Some(P::UsersSuspend),
        };
        self.confirmed(caller, request_id, on, confirmation_token)
            .await
    }

    /// A double-confirmed action on a user: without a confirmation token its
    /// first step ([`Self::ask`]); with one, the action, in one write that
    /// uses the confirmation up.
    async fn confirmed(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        on: ConfirmedOn,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let ctx = caller.change(request_id);
        let ConfirmedOn {
            action,
            user_id,
            permission,
        } = on;
        if confirmation_token.is_empty() {
            return self
                .ask(&ctx, action, user_id, permission)
                .await
                .map(Step::ConfirmationRequired);
        }
        let token_hash = confirm::token_hash(confirmation_token)?;
        let organisation_id = ctx.organisation_id;
        let done = self
            .store
            .write(&ctx, permission, OrgLock::Exclusive, async |conn| {
                confirmations::consume(conn, &ctx, action, user_id, &token_hash).await?;
                let user = users::locked(conn, organisation_id, user_id).await?;
                carry_out(conn, action, user).await
            })
            .await?;
        Ok(Step::Done(done))
    }

    /// Lets a suspended user sign in again; an active user is left as is.
    pub async fn reactivate(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        etag: Option<&str>,
    ) -> Result<User, DomainError> {
        let ctx = caller.change(request_id);
        let organisation_id = ctx.organisation_id;
        self.store
            .write(
                &ctx,
                Some(P::UsersSuspend),
                OrgLock::Exclusive,
                async |conn| {
                    let user = users::locked(conn, organisation_id, user_id).await?;
                    etag_matches(&user, etag)?;
                    if user.is_active() {
                        return Ok(Change::unchanged(user));
                    }
                    let reactivated = users::reactivate(conn, &user).await?;
                    let audit = Audit::user(
                        USER_REACTIVATE,
                        &reactivated,
                        Some(UserState::Suspended.as_str().to_owned()),
                        Some(UserState::Active.as_str().to_owned()),
                    );
                    Ok(Change::audited(reactivated, audit).settling())
                },
            )
            .await
    }

    /// The first step of an action on a user: stores the confirmation and
    /// says what the action will do. Refuses at once what the second step
    /// would refuse anyway (e.g. deleting the last nanoAdmin).
    async fn ask(
        &self,
        ctx: &ChangeContext,
        action: ConfirmedAction,
        user_id: Uuid,
        permission: Option<P>,
    ) -> Result<Confirmation, DomainError> {
        let (secret, expires_at) = confirm::new_secret(self.settings.confirmation_ttl)?;
        let organisation_id = ctx.organisation_id;
        let (user, pending_invites) = self
            .store
            .write(ctx, permission, OrgLock::Exclusive, async |conn| {
                let user = users::locked(conn, organisation_id, user_id).await?;
                let mut pending = 0;
                if matches!(
                    action,
                    ConfirmedAction::DeleteUser | ConfirmedAction::SuspendUser
                ) {
                    keeps_an_admin_without(conn, &user, None).await?;
                    let creator = Actor::User(user.id).to_string();
                    pending = invites::pending_created_by(conn, organisation_id, &creator).await?;
                }
                let confirmation = NewConfirmation {
                    action,
                    target_id: user_id,
                    token_hash: &secret.hash,
                    expires_at,
                };
                confirmations::insert(conn, ctx, confirmation).await?;
                Ok(Change::unchanged((user, pending)))
            })
            .await?;
        Ok(Confirmation {
            token: secret.token,
            expires_at,
            warning: action.warning(&user, pending_invites),
            action,
            pending_invites,
        })
    }
}

/// What a double-confirmed action on a user is, and what it needs.
struct ConfirmedOn {
    action: ConfirmedAction,
    user_id: Uuid,
    permission: Option<P>,
}

/// The second step of `action` on `user`, locked, in the write that used
/// its confirmation up.
async fn carry_out(
    conn: &mut Tx<'_>,
    action: ConfirmedAction,
    user: User,
) -> Result<Change<User>, DomainError> {
    match action {
        ConfirmedAction::DeleteUser => delete_now(conn, user).await,
        ConfirmedAction::RenewTokenKey => renew_now(conn, user).await,
        ConfirmedAction::SuspendUser => suspend_now(conn, user).await,
        ConfirmedAction::RotateApiKey => Err(DomainError::Internal(
            "the API key's rotation is not an action on a user".into(),
        )),
    }
}

async fn delete_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    keeps_an_admin_without(conn, &user, None).await?;
    users::delete(conn, &user).await?;
    let revoked = revoke_invites_of(conn, &user, "its creator was deleted").await?;
    let audit = Audit::user(USER_DELETE, &user, Some(user.role.to_string()), None);
    Ok(Change::audited(user, audit).and_all(revoked).settling())
}

async fn renew_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    let renewed = users::renew_token_key_with_role(conn, &user, user.role).await?;
    let audit = Audit::user(
        USER_RENEW_TOKEN_KEY,
        &renewed,
        Some(format!("tokenKey {}", user.token_key_fingerprint())),
        Some(format!("tokenKey {}", renewed.token_key_fingerprint())),
    );
    Ok(Change::audited(renewed, audit).settling())
}

async fn suspend_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    if !user.is_active() {
        return Ok(Change::unchanged(user));
    }
    keeps_an_admin_without(conn, &user, None).await?;
    let suspended = users::suspend(conn, &user).await?;
    let revoked = revoke_invites_of(conn, &user, "its creator was suspended").await?;
    let audit = Audit::user(
        USER_SUSPEND,
        &suspended,
        Some(UserState::Active.as_str().to_owned()),
        Some(UserState::Suspended.as_str().to_owned()),
    );
    Ok(Change::audited(suspended, audit)
        .and_all(revoked)
        .settling())
}

/// LAST_ADMIN when giving `user` `new_role` (None: deleting or suspending
/// it) would leave the organisation without an active nanoAdmin; counts the
/// admins only when `user` is an active one.
async fn keeps_an_admin_without(
    conn: &mut Tx<'_>,
    user: &User,
    new_role: Option<Role>,
) -> Result<(), DomainError> {
    if user.role != Role::NanoAdmin || !user.is_active() {
        return Ok(());
    }
    let admins = users::admin_count(conn, user.organisation_id).await?;
    keeps_an_admin(user, new_role, admins)
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

/// Revokes the pending invites `user` created; their audit events say `why`.
async fn revoke_invites_of(
    conn: &mut Tx<'_>,
    user: &User,
    why: &str,
) -> Result<Vec<Audit>, DomainError> {
    let creator = Actor::User(user.id).to_string();
    let revoked = invites::revoke_created_by(conn, user.organisation_id, &creator).await?;
    Ok(revoked
        .iter()
        .map(|invite| Audit::invite(INVITE_REVOKE, invite, Some(why.to_owned())))
        .collect())
}
