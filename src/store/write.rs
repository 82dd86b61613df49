//! The one write path. Every change a call makes runs through
//! [`Store::write`], which in one transaction:
//!
//! 1. takes the caller's organisation row lock, the lock that deletion, role
//!    changes, tokenKey renewal and API key rotation take exclusively;
//! 2. re-verifies the caller against the rows as they are now: the user
//!    still exists with the tokenKey the call was admitted with and a role
//!    that holds the permission, and the call's session is still live (or
//!    its personal API token still works and holds the permission too); or
//!    the API key is still the organisation's;
//! 3. runs the change and records its audit events;
//! 4. commits, then waits until every replica's cache has dropped what the
//!    change made stale.
//!
//! So a write either commits before a revocation of its caller, or fails
//! after it with nothing changed: never lands after the revocation was
//! acknowledged.

use diesel::sql_types::{Bytea, Nullable, Text};
use diesel::{OptionalExtension as _, QueryableByName};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use std::collections::BTreeMap;

use super::Store;
use super::audit::{Audit, Author, record};
use super::text::StoredText as _;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::api_token::allows;
use crate::domain::change::Position;
use crate::domain::error::AuthFailure;
use crate::domain::permission::PermissionSet;
use crate::domain::{DomainError, Permission, Role};

/// The connection a change runs on, inside the write path's transaction.
/// Only the write path makes one, and the store's functions that run inside
/// a write take it; a read through [`Store`]'s methods takes a connection of
/// the pool instead, outside the transaction.
pub struct Tx<'c>(&'c mut AsyncPgConnection);

impl<'c> Tx<'c> {
    /// A read outside the write path on a pooled connection, for the
    /// store's readers that share the write path's queries.
    pub(super) fn over(conn: &'c mut super::Conn) -> Self {
        Tx(conn)
    }

    /// The connection, for the store's queries.
    pub(super) fn pg(&mut self) -> &mut AsyncPgConnection {
        self.0
    }
}

/// A change made on the write path's connection, inside its transaction:
/// an `async |conn| { … }` closure whose future is `Send`.
pub trait Mutation<'r, T>: FnOnce(&'r mut Tx<'r>) -> <Self as Mutation<'r, T>>::Fut {
    type Fut: Future<Output = Result<Change<T>, DomainError>> + Send;
}

impl<'r, T, F, Fut> Mutation<'r, T> for F
where
    F: FnOnce(&'r mut Tx<'r>) -> Fut,
    Fut: Future<Output = Result<Change<T>, DomainError>> + Send,
{
    type Fut = Fut;
}

/// How a write holds its organisation's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgLock {
    /// Alone: changes whose checks must not race (users, the organisation).
    Exclusive,
    /// Beside other shared writers, but never beside an exclusive one (and so
    /// never beside a revocation): issuing and revoking playback tokens.
    Shared,
}

/// What a change did: its result, the audit events to record with it, and
/// whether it touched rows that replicas cache.
#[must_use]
pub struct Change<T> {
    value: T,
    audits: Vec<Recorded>,
    settles: bool,
}

/// An audit event a change records: in the caller's organisation (or, for an
/// operator's change, the one it names), by the caller (or the actor it
/// names).
struct Recorded {
    organisation_id: Option<Uuid>,
    actor: Option<Actor>,
    audit: Audit,
}

impl<T> Change<T> {
    /// Nothing was changed (nothing to record, nothing to settle).
    pub fn unchanged(value: T) -> Self {
        Self {
            value,
            audits: Vec::new(),
            settles: false,
        }
    }

    /// A change recorded by `audit`, made by the caller.
    pub fn audited(value: T, audit: Audit) -> Self {
        Self::unchanged(value).and(audit)
    }

    /// Records `audit` too.
    pub fn and(mut self, audit: Audit) -> Self {
        self.audits.push(Recorded {
            organisation_id: None,
            actor: None,
            audit,
        });
        self
    }

    /// Records `audit` too, as made by `actor` rather than the caller (the
    /// user an accepted invite created).
    pub fn and_by(mut self, actor: Actor, audit: Audit) -> Self {
        self.audits.push(Recorded {
            organisation_id: None,
            actor: Some(actor),
            audit,
        });
        self
    }

    /// Records every one of `audits` too.
    pub fn and_all(self, audits: impl IntoIterator<Item = Audit>) -> Self {
        audits.into_iter().fold(self, Self::and)
    }

    /// Records `audit` too, in the organisation `organisation_id`: an
    /// operator's change ([`Store::operate`]), which has no organisation of
    /// its own, names the one each of its events is in
    /// ([`crate::domain::change::DEPLOYMENT`] for what belongs to none).
    /// Made by the operator.
    pub fn and_in(mut self, organisation_id: Uuid, audit: Audit) -> Self {
        self.audits.push(Recorded {
            organisation_id: Some(organisation_id),
            actor: None,
            audit,
        });
        self
    }

    /// The change touched users or the organisation: wait for every replica
    /// to drop its cached copies before answering.
    pub fn settling(mut self) -> Self {
        self.settles = true;
        self
    }
}

/// The caller of a write, as the write path re-verifies it.
#[derive(Clone, Copy)]
struct Caller<'a> {
    ctx: &'a ChangeContext,
    permission: Option<Permission>,
    lock: OrgLock,
}

impl Store {
    /// Runs `change` as `ctx`'s caller, whose role must hold
    /// `ctx.permission` (the one the call was admitted with; none: any
    /// role), through the one write path described in this module.
    pub async fn write<T, F>(
        &self,
        ctx: &ChangeContext,
        lock: OrgLock,
        change: F,
    ) -> Result<T, DomainError>
    where
        T: Send,
        for<'r> F:
            AsyncFnOnce(&'r mut Tx<'r>) -> Result<Change<T>, DomainError> + Mutation<'r, T> + Send,
    {
        let caller = Caller {
            ctx,
            permission: ctx.permission,
            lock,
        };
        self.commit(Some(caller), change).await
    }

    /// An operator's change from the command line (provisioning, seeding,
    /// services, key rewrap), or internal bookkeeping (the mail outbox's: a
    /// reset request's row, which must be the same write whoever the email
    /// is; claiming, retrying and deleting rows; the change feed's
    /// retention): the same path, with no caller to re-verify and no
    /// organisation to lock. An operator's change records its audit events
    /// with [`Change::and_in`], as made by [`Actor::Operator`]: each
    /// organisation it changed takes its next sequence number (in id order,
    /// so that two operators' changes never wait for each other in a
    /// cycle). Bookkeeping records none: it changes no resource.
    pub async fn operate<T, F>(&self, change: F) -> Result<T, DomainError>
    where
        T: Send,
        for<'r> F:
            AsyncFnOnce(&'r mut Tx<'r>) -> Result<Change<T>, DomainError> + Mutation<'r, T> + Send,
    {
        self.commit(None, change).await
    }

    async fn commit<T, F>(&self, caller: Option<Caller<'_>>, change: F) -> Result<T, DomainError>
    where
        T: Send,
        for<'r> F:
            AsyncFnOnce(&'r mut Tx<'r>) -> Result<Change<T>, DomainError> + Mutation<'r, T> + Send,
    {
        let mut conn = self.conn().await?;
        let done = conn
            .transaction::<_, DomainError, _>(async |conn| {
                if let Some(caller) = caller {
                    lock_and_recheck(&mut Tx(conn), caller).await?;
                }
                let mut done = change(&mut Tx(conn)).await?;
                let audits = std::mem::take(&mut done.audits);
                let position = match caller {
                    Some(caller) => record_call(&mut Tx(conn), caller.ctx, audits).await?,
                    None => record_operator(&mut Tx(conn), audits).await?,
                };
                Ok((done, position))
            })
            .await?;
        let (done, position) = done;
        drop(conn);
        if let Some(position) = position {
            super::feed::note_receipt(position);
        }
        if done.settles {
            self.settle().await;
        }
        Ok(done.value)
    }
}

/// Records a call's audit events, all in the caller's organisation.
async fn record_call(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    audits: Vec<Recorded>,
) -> Result<Option<Position>, DomainError> {
    if audits.iter().any(|r| {
        r.organisation_id
            .is_some_and(|id| id != ctx.organisation_id)
    }) {
        return Err(DomainError::Internal(
            "a call's change audits in another organisation".into(),
        ));
    }
    let audits = audits.into_iter().map(|r| (r.actor, r.audit)).collect();
    record(conn, Author::of(ctx), audits).await
}

/// Records an operator's audit events: one change (and sequence number) per
/// organisation they are in, the organisations in id order. Returns the
/// position of the last.
async fn record_operator(
    conn: &mut Tx<'_>,
    audits: Vec<Recorded>,
) -> Result<Option<Position>, DomainError> {
    let mut by_organisation: BTreeMap<Uuid, Vec<(Option<Actor>, Audit)>> = BTreeMap::new();
    for recorded in audits {
        let organisation_id = recorded.organisation_id.ok_or_else(|| {
            DomainError::Internal("an operator's change names no organisation to audit in".into())
        })?;
        by_organisation
            .entry(organisation_id)
            .or_default()
            .push((recorded.actor, recorded.audit));
    }
    let mut last = None;
    for (organisation_id, audits) in by_organisation {
        let author = Author {
            organisation_id,
            actor: &Actor::Operator,
            request_id: None,
        };
        last = record(conn, author, audits).await?.or(last);
    }
    Ok(last)
}

/// Takes the organisation's row lock, then checks that the caller may still
/// make the change.
async fn lock_and_recheck(conn: &mut Tx<'_>, caller: Caller<'_>) -> Result<(), DomainError> {
    let locked = lock_organisation(conn, caller.ctx, caller.lock).await?;
    recheck(conn, locked, caller.ctx, caller.permission).await
}

impl Store {
    /// Whether `ctx`'s caller still stands as it was admitted, by the rows as
    /// they are now (the write path's re-check, without its lock): for a
    /// watcher of the change feed, which must stop at its revocation. Its
    /// user must still exist, active (a suspended user's credentials fail
    /// like a deleted one's, as at the lock), with the tokenKey it was
    /// admitted with. A personal API token revoked or expired fails with
    /// `API_TOKEN_INVALID`, as any call with it is answered; one whose user
    /// changed with `TOKEN_REVOKED`. Returns the user's current role (none
    /// for the API key).
    pub async fn recheck(&self, ctx: &ChangeContext) -> Result<Option<Role>, DomainError> {
        let mut conn = self.conn().await?;
        let member = ctx.actor.user_id().unwrap_or(Uuid::nil());
        let current = diesel::sql_query(
            "SELECT o.api_key_hash AS key_hash, o.api_key_fingerprint AS key_fingerprint, \
                    u.role AS member_role, u.token_key AS member_token_key \
             FROM organisations o \
             LEFT JOIN users u ON u.organisation_id = o.id AND u.id = $2 AND u.state = 'active' \
             WHERE o.id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(ctx.organisation_id)
        .bind::<diesel::sql_types::Uuid, _>(member)
        .get_result::<Locked>(&mut *conn)
        .await
        .optional()?
        .ok_or(DomainError::NotFound("organisation"))?;
        let role = match (&ctx.actor, &current.member_role) {
            (Actor::User(_), Some(role)) => Some(Role::from_stored(role)?),
            _ => None,
        };
        let user_unchanged = match ctx.proof {
            Proof::ApiToken { token_key, .. } => current.member_with(token_key).is_ok(),
            _ => false,
        };
        match recheck(&mut Tx(&mut conn), current, ctx, ctx.permission).await {
            Err(DomainError::Unauthenticated(AuthFailure::TokenRevoked)) if user_unchanged => {
                Err(DomainError::Unauthenticated(AuthFailure::ApiTokenInvalid))
            }
            checked => checked.map(|()| role),
        }
    }
}

/// Checks the caller against `locked`, what the lock (or a plain read) found
/// of its organisation and user now.
async fn recheck(
    conn: &mut Tx<'_>,
    locked: Locked,
    ctx: &ChangeContext,
    permission: Option<Permission>,
) -> Result<(), DomainError> {
    match (&ctx.proof, &ctx.actor) {
        (Proof::ApiKey(hash), Actor::ApiKey(_)) => {
            let current = locked.key_hash.unwrap_or_default();
            ct_same(&current, hash, AuthFailure::ApiKeyInvalid)
        }
        (Proof::Standing, Actor::ApiKey(fingerprint)) => {
            let current = locked.key_fingerprint.unwrap_or_default();
            ct_same(
                current.as_bytes(),
                fingerprint.as_bytes(),
                AuthFailure::ApiKeyInvalid,
            )
        }
        (
            Proof::Session {
                token_key,
                session_id,
            },
            Actor::User(user_id),
        ) => {
            let role = locked.member_with(*token_key)?;
            if !super::sessions::still_live(conn, *session_id, *user_id, *token_key).await? {
                return Err(DomainError::Unauthenticated(AuthFailure::TokenRevoked));
            }
            holds(role, permission)
        }
        (
            Proof::ApiToken {
                token_key,
                token_id,
            },
            Actor::User(user_id),
        ) => {
            let role = locked.member_with(*token_key)?;
            let restriction =
                super::api_tokens::still_working(conn, *token_id, *user_id, *token_key)
                    .await?
                    .ok_or(DomainError::Unauthenticated(AuthFailure::TokenRevoked))?;
            holds_within(role, restriction, permission)
        }
        (Proof::Standing, Actor::User(_)) => holds(locked.member()?.0, permission),
        (Proof::ApiKey(_), Actor::User(_))
        | (Proof::Session { .. } | Proof::ApiToken { .. }, Actor::ApiKey(_))
        | (_, Actor::Operator) => Err(DomainError::Internal(
            "a caller's proof does not match its actor".into(),
        )),
    }
}

/// Ok when `current` equals `presented` (in constant time), else `failure`.
fn ct_same(current: &[u8], presented: &[u8], failure: AuthFailure) -> Result<(), DomainError> {
    if bool::from(current.ct_eq(presented)) {
        Ok(())
    } else {
        Err(DomainError::Unauthenticated(failure))
    }
}

/// What the lock read: the organisation's current API key, and the calling
/// user's current role and tokenKey (none when the caller is no user, or no
/// longer exists).
#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Nullable<Bytea>)]
    key_hash: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    key_fingerprint: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    member_role: Option<String>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    member_token_key: Option<Uuid>,
}

impl Locked {
    /// The calling user's role and tokenKey; TOKEN_REVOKED when it is gone.
    fn member(&self) -> Result<(Role, Uuid), DomainError> {
        match (&self.member_role, self.member_token_key) {
            (Some(role), Some(token_key)) => Ok((Role::from_stored(role)?, token_key)),
            _ => Err(DomainError::Unauthenticated(AuthFailure::TokenRevoked)),
        }
    }

    /// The calling user's role, while its tokenKey is still `token_key`
    /// (compared in constant time); TOKEN_REVOKED otherwise.
    fn member_with(&self, token_key: Uuid) -> Result<Role, DomainError> {
        let (role, current_key) = self.member()?;
        ct_same(
            current_key.as_bytes(),
            token_key.as_bytes(),
            AuthFailure::TokenRevoked,
        )?;
        Ok(role)
    }
}

/// Takes the organisation's row lock and reads what the re-check needs, after
/// the lock (the migration's `usermgmt_lock_organisation` says why it is one
/// function); NOT_FOUND when the organisation does not exist.
async fn lock_organisation(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    lock: OrgLock,
) -> Result<Locked, DomainError> {
    // The nil id matches no user: the caller is the API key.
    let member = ctx.actor.user_id().unwrap_or(Uuid::nil());
    diesel::sql_query("SELECT * FROM usermgmt_lock_organisation($1, $2, $3)")
        .bind::<diesel::sql_types::Uuid, _>(ctx.organisation_id)
        .bind::<diesel::sql_types::Uuid, _>(member)
        .bind::<diesel::sql_types::Bool, _>(lock == OrgLock::Exclusive)
        .get_result::<Locked>(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("organisation"))
}

fn holds(role: Role, permission: Option<Permission>) -> Result<(), DomainError> {
    holds_within(role, PermissionSet::default(), permission)
}

/// Like [`holds`], for a caller restricted to `restriction` (a personal API
/// token's permissions; empty: not restricted).
fn holds_within(
    role: Role,
    restriction: PermissionSet,
    permission: Option<Permission>,
) -> Result<(), DomainError> {
    match permission {
        Some(permission) if !allows(role, restriction, permission) => {
            Err(DomainError::PermissionDenied(permission))
        }
        _ => Ok(()),
    }
}
