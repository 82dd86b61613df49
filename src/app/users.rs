//! Managing the users of the caller's organisation: reading them, creating
//! and inviting, changing roles, deleting and renewing tokenKeys.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::confirm::{self, Confirmable, Preview, Step};
use crate::auth::Principal;
use crate::auth::access::INVITE_AUTHORITY;
use crate::auth::passwords::{Passwords, Requester};
use crate::domain::actor::{Actor, ChangeContext};
use crate::domain::audit::{
    INVITE_REVOKE, USER_CREATE, USER_DELETE, USER_REACTIVATE, USER_RENEW_TOKEN_KEY, USER_SUSPEND,
    USER_UPDATE_ROLE,
};
use crate::domain::confirmation::ConfirmedAction;
use crate::domain::email::EmailPrefix;
use crate::domain::invariants::{etag_matches, keeps_an_admin};
use crate::domain::user::{UserCursor, UserState};
use crate::domain::{DomainError, Role, email::Email, user::User};
use crate::store::audit::Audit;
use crate::store::invites::{self};
use crate::store::organisations::members_audit;
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
    pub email_prefix: Option<EmailPrefix>,
}

impl UserFilter {
    /// A canonical text of the filter, bound into page tokens.
    pub fn fingerprint(&self) -> String {
        format!(
            "role={};state={};prefix={:?}",
            self.role.map_or("*", Role::as_str),
            self.state.map_or("*", UserState::as_str),
            self.email_prefix.as_ref().map(EmailPrefix::canonical)
        )
    }
}

/// A page of users and how many match in all.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Set when a search stopped reading before the page was full: the
    /// next page starts after this row (see `store::users::UserList`).
    pub resume_after: Option<UserCursor>,
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

pub struct Users {
    store: Store,
    passwords: Passwords,
    settings: AdminSettings,
}

impl Users {
    pub fn new(store: Store, passwords: Passwords, settings: AdminSettings) -> Self {
        Self {
            store,
            passwords,
            settings,
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
        let list = self
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
        Ok(UserPage {
            users: list.users,
            resume_after: list.resume_after,
            total_size,
        })
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
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                let user =
                    users::insert(conn, organisation_id, email.as_str(), role, &password_hash)
                        .await?;
                let audit = Audit::user(USER_CREATE, &user, None, Some(role.to_string()));
                let members = members_audit(organisation_id, USER_CREATE, user.id);
                Ok(Change::audited(user, audit).and(members).settling())
            })
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
            .write(&ctx, OrgLock::Exclusive, async |conn| {
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
                let ended =
                    users::ending_credentials(conn, &user, None, true, "its user's role changed")
                        .await?;
                let updated = users::renew_token_key_with_role(conn, &user, role).await?;
                // Every pending invite's creator holds users.invite (a
                // migration revoked older ones), so only losing it leaves
                // invites to revoke.
                let revoked = if user.role.can(INVITE_AUTHORITY) && !role.can(INVITE_AUTHORITY) {
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
                let members = members_audit(organisation_id, USER_UPDATE_ROLE, user_id);
                Ok(Change::audited(outcome, audit)
                    .and(members)
                    .and_all(revoked)
                    .and_all(ended)
                    .settling())
            })
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
        let ctx = caller.change(request_id);
        self.confirmed(&ctx, UserAction::Delete, user_id, confirmation_token)
            .await
    }

    /// RenewTokenKey: one's own needs no permission, another user's needs
    /// the rule's.
    pub async fn renew_token_key(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let ctx = caller.change_on(user_id, request_id)?;
        self.confirmed(&ctx, UserAction::RenewTokenKey, user_id, confirmation_token)
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
        let ctx = caller.change(request_id);
        self.confirmed(&ctx, UserAction::Suspend, user_id, confirmation_token)
            .await
    }

    async fn confirmed(
        &self,
        ctx: &ChangeContext,
        action: UserAction,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step<User>, DomainError> {
        let on = OnUser {
            action,
            organisation_id: ctx.organisation_id,
            user_id,
        };
        let ttl = self.settings.confirmation_ttl;
        confirm::two_step(&self.store, ctx, ttl, confirmation_token, &on).await
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
            .write(&ctx, OrgLock::Exclusive, async |conn| {
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
            })
            .await
    }
}

/// The double-confirmed actions on a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserAction {
    Delete,
    RenewTokenKey,
    Suspend,
}

/// A double-confirmed action on one user of the organisation.
struct OnUser {
    action: UserAction,
    organisation_id: Uuid,
    user_id: Uuid,
}

impl Confirmable for OnUser {
    type Done = User;

    fn action(&self) -> ConfirmedAction {
        match self.action {
            UserAction::Delete => ConfirmedAction::DeleteUser,
            UserAction::RenewTokenKey => ConfirmedAction::RenewTokenKey,
            UserAction::Suspend => ConfirmedAction::SuspendUser,
        }
    }

    fn target_id(&self) -> Uuid {
        self.user_id
    }

    async fn preview(&self, conn: &mut Tx<'_>) -> Result<Preview, DomainError> {
        let user = users::locked(conn, self.organisation_id, self.user_id).await?;
        let mut pending_invites = 0;
        if matches!(self.action, UserAction::Delete | UserAction::Suspend) {
            keeps_an_admin_without(conn, &user, None).await?;
            let creator = Actor::User(user.id);
            pending_invites =
                invites::pending_created_by(conn, self.organisation_id, &creator).await?;
        }
        Ok(Preview {
            warning: self.action().warning(&user, pending_invites),
            pending_invites,
        })
    }

    async fn carry_out(&self, conn: &mut Tx<'_>) -> Result<Change<User>, DomainError> {
        let user = users::locked(conn, self.organisation_id, self.user_id).await?;
        match self.action {
            UserAction::Delete => delete_now(conn, user).await,
            UserAction::RenewTokenKey => renew_now(conn, user).await,
            UserAction::Suspend => suspend_now(conn, user).await,
        }
    }
}

async fn delete_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    keeps_an_admin_without(conn, &user, None).await?;
    let ended = users::ending_credentials(conn, &user, None, true, "its user was deleted").await?;
    users::delete(conn, &user).await?;
    let revoked = revoke_invites_of(conn, &user, "its creator was deleted").await?;
    let audit = Audit::user(USER_DELETE, &user, Some(user.role.to_string()), None);
    let members = members_audit(user.organisation_id, USER_DELETE, user.id);
    Ok(Change::audited(user, audit)
        .and(members)
        .and_all(revoked)
        .and_all(ended)
        .settling())
}

async fn renew_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    let why = "its user's tokenKey was renewed";
    let ended = users::ending_credentials(conn, &user, None, true, why).await?;
    let renewed = users::renew_token_key_with_role(conn, &user, user.role).await?;
    let audit = Audit::user(
        USER_RENEW_TOKEN_KEY,
        &renewed,
        Some(format!("tokenKey {}", user.token_key_fingerprint())),
        Some(format!("tokenKey {}", renewed.token_key_fingerprint())),
    );
    Ok(Change::audited(renewed, audit).and_all(ended).settling())
}

async fn suspend_now(conn: &mut Tx<'_>, user: User) -> Result<Change<User>, DomainError> {
    if !user.is_active() {
        return Ok(Change::unchanged(user));
    }
    keeps_an_admin_without(conn, &user, None).await?;
    let ended =
        users::ending_credentials(conn, &user, None, true, "its user was suspended").await?;
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
        .and_all(ended)
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

/// Revokes the pending invites `user` created; their audit events say `why`.
async fn revoke_invites_of(
    conn: &mut Tx<'_>,
    user: &User,
    why: &str,
) -> Result<Vec<Audit>, DomainError> {
    let creator = Actor::User(user.id);
    let revoked = invites::revoke_created_by(conn, user.organisation_id, &creator).await?;
    Ok(revoked
        .iter()
        .map(|invite| Audit::invite(INVITE_REVOKE, invite, Some(why.to_owned())))
        .collect())
}
