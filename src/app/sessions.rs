//! Signing in with a password and out, the sessions a sign-in opens and
//! their refresh, and one's own or another user's sessions. (Accepting an
//! invite signs in too: [`super::invites`].)

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::opaque::{self, REFRESH_TOKEN_PREFIX};
use crate::auth::passwords::{Passwords, Requester};
use crate::auth::ratelimit::LoginLimiter;
use crate::auth::tokens::{AccessTokens, IssuedToken, TokenClaims};
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::{
    LOGIN_FAILED, LOGIN_SUCCEEDED, SESSION_LOGOUT, SESSION_OPEN, SESSION_REFRESH,
    SESSION_REFRESH_REUSED, SESSION_REVOKE,
};
use crate::domain::error::AuthFailure;
use crate::domain::session::{EndReason, Session, SessionLifetime, kept_user_agent};
use crate::domain::user::User;
use crate::domain::{DomainError, email::Email};
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::sessions::{self as session_rows, NewSession, SessionQuery};
use crate::store::write::{Change, OrgLock};
use crate::store::{Tx, users};

/// Where a sign-in comes from, as the session records it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub peer: Option<IpAddr>,
    pub user_agent: String,
}

/// A refresh token as issued. `Debug` does not show it.
pub struct IssuedRefresh {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRefresh")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A successful sign-in: a new session and its tokens.
#[derive(Debug)]
pub struct LoggedIn {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub session_id: Uuid,
    pub token: IssuedToken,
    pub refresh: IssuedRefresh,
}

/// A refreshed session's new tokens.
#[derive(Debug)]
pub struct Refreshed {
    pub token: IssuedToken,
    pub refresh: IssuedRefresh,
}

/// A page of sessions, and which is the caller's.
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub current: Option<Uuid>,
}

pub struct Sessions {
    store: Store,
    tokens: Arc<AccessTokens>,
    passwords: Passwords,
    login_limiter: Arc<LoginLimiter>,
    lifetime: SessionLifetime,
    /// The failed logins' audit writes under way off the answer's path: one
    /// permit each.
    failed_login_audits: Arc<Semaphore>,
}

/// How many failed logins' audit events may be written off the answer's
/// path at once; past that, a failed login writes its own before answering
/// (slower then, but no event is dropped).
pub const FAILED_LOGIN_AUDITS_IN_FLIGHT: u32 = 256;

/// The default session lifetime: 30 days after the last refresh, at most
/// 90 days after the login.
pub const DEFAULT_LIFETIME: SessionLifetime = SessionLifetime {
    idle: std::time::Duration::from_secs(30 * 86_400),
    absolute: std::time::Duration::from_secs(90 * 86_400),
};

/// What a refresh found.
enum RefreshOutcome {
    Refreshed(Refreshed),
    Reused,
    Invalid,
}

impl Sessions {
    pub fn new(
        store: Store,
        tokens: Arc<AccessTokens>,
        passwords: Passwords,
        login_limiter: Arc<LoginLimiter>,
    ) -> Self {
        Self {
            store,
            tokens,
            passwords,
            login_limiter,
            lifetime: DEFAULT_LIFETIME,
            failed_login_audits: Arc::new(Semaphore::new(FAILED_LOGIN_AUDITS_IN_FLIGHT as usize)),
        }
    }

    /// These sessions, lasting `lifetime`.
    pub fn with_lifetime(self, lifetime: SessionLifetime) -> Self {
        Self { lifetime, ..self }
    }

    /// Signs a user in and opens a session. An unknown email and a wrong
    /// password fail alike and take the same time: both run one password
    /// verification and answer; a wrong password is audited in the user's
    /// organisation, but off the answer's path (the write would make its
    /// answer slower than an unknown email's), an unknown email only counted.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        organisation_id: Option<Uuid>,
        client: &Client,
        request_id: Option<String>,
    ) -> Result<LoggedIn, DomainError> {
        let attempt = self
            .login_limiter
            .admit(email.as_str(), client.peer)
            .await?;
        let requester = Requester::peer(client.peer);
        let candidates = self
            .store
            .login_candidates(email.as_str(), organisation_id)
            .await?;
        // Exactly one verification whatever the number of candidates, so that
        // neither the time nor the CPU a login costs tells how many
        // organisations hold the email.
        let Some(first) = candidates.first() else {
            self.passwords.verify_decoy(password, &requester).await?;
            crate::metrics::metrics().record_login("unknown_email");
            return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin));
        };
        if !self
            .passwords
            .verify(password, &first.password_hash, &requester)
            .await?
        {
            crate::metrics::metrics().record_login("wrong_password");
            self.audit_failed_login(first.organisation_id, first.id, client, request_id)
                .await;
            return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin));
        }
        self.login_limiter.succeeded(attempt).await?;
        if candidates.len() > 1 {
            return Err(DomainError::FailedPrecondition {
                reason: "ORGANISATION_REQUIRED",
                message: "this email signs in to several organisations: give organisation_id"
                    .into(),
            });
        }
        if !first.is_active() {
            crate::metrics::metrics().record_login("suspended");
            return Err(suspended());
        }
        let ctx = ChangeContext {
            organisation_id: first.organisation_id,
            actor: Actor::User(first.id),
            proof: Proof::Standing,
            permission: None,
            request_id,
        };
        let user_id = first.id;
        let organisation_id = first.organisation_id;
        let lifetime = self.lifetime;
        let opened = self
            .store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let user = users::locked(conn, organisation_id, user_id).await?;
                let opened = open_session(conn, &user, client, lifetime).await?;
                let audit = Audit::user(LOGIN_SUCCEEDED, &user, None, Some(client_text(client)));
                let session = opened.audit(&user);
                Ok(Change::audited(opened, audit).and(session))
            })
            .await
            .map_err(|error| match error {
                // Deleted since the password was checked.
                DomainError::Unauthenticated(_) | DomainError::NotFound(_) => {
                    DomainError::Unauthenticated(AuthFailure::InvalidLogin)
                }
                other => other,
            })?;
        crate::metrics::metrics().record_login("succeeded");
        signed_in(&self.tokens, opened)
    }

    /// Records a failed login in the user's organisation, in a task of its
    /// own so that the answer does not wait for it; at most
    /// [`FAILED_LOGIN_AUDITS_IN_FLIGHT`] at once, past which the login waits
    /// for its own. A write that fails is logged and counted
    /// (`usermgmt_failed_login_audits_total{outcome="failed"}`).
    async fn audit_failed_login(
        &self,
        organisation_id: Uuid,
        user_id: Uuid,
        client: &Client,
        request_id: Option<String>,
    ) {
        let ctx = ChangeContext {
            organisation_id,
            actor: Actor::User(user_id),
            proof: Proof::Standing,
            permission: None,
            request_id,
        };
        let detail = format!("reason: wrong password; {}", client_text(client));
        let write = record_failed_login(self.store.clone(), ctx, user_id, detail);
        match Arc::clone(&self.failed_login_audits).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    write.await;
                    drop(permit);
                });
            }
            Err(_) => write.await,
        }
    }

    /// Waits, at most `within`, for the failed logins' audit writes still
    /// under way (at shutdown, once no call is served any more); those
    /// still unwritten then are logged and counted as lost.
    pub async fn finish_audits(&self, within: std::time::Duration) {
        let all = self
            .failed_login_audits
            .acquire_many(FAILED_LOGIN_AUDITS_IN_FLIGHT);
        if tokio::time::timeout(within, all).await.is_err() {
            let lost = FAILED_LOGIN_AUDITS_IN_FLIGHT as usize
                - self.failed_login_audits.available_permits();
            tracing::warn!(
                lost,
                "failed logins' audit events still unwritten at shutdown"
            );
            for _ in 0..lost {
                crate::metrics::metrics().record_failed_login_audit("lost");
            }
        }
    }

    /// Exchanges a refresh token for new tokens of its session. A token
    /// used before ends the session (someone else holds a copy).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        request_id: Option<String>,
    ) -> Result<Refreshed, DomainError> {
        let invalid = || DomainError::Unauthenticated(AuthFailure::RefreshTokenInvalid);
        if !opaque::well_formed(refresh_token, REFRESH_TOKEN_PREFIX) {
            return Err(invalid());
        }
        let token_hash = opaque::hash(refresh_token);
        let (organisation_id, user_id) = self
            .store
            .refresh_token_owner(&token_hash)
            .await?
            .ok_or_else(invalid)?;
        let ctx = ChangeContext {
            organisation_id,
            actor: Actor::User(user_id),
            proof: Proof::Standing,
            permission: None,
            request_id,
        };
        let lifetime = self.lifetime;
        let tokens = Arc::clone(&self.tokens);
        let outcome = self
            .store
            .write(&ctx, OrgLock::Shared, async |conn| {
                rotate_refresh_token(conn, &token_hash, organisation_id, lifetime, &tokens).await
            })
            .await
            .map_err(|error| match error {
                // The user was deleted meanwhile.
                DomainError::Unauthenticated(_) | DomainError::NotFound(_) => invalid(),
                other => other,
            })?;
        match outcome {
            RefreshOutcome::Refreshed(refreshed) => Ok(refreshed),
            RefreshOutcome::Reused => Err(DomainError::Unauthenticated(
                AuthFailure::RefreshTokenReused,
            )),
            RefreshOutcome::Invalid => Err(invalid()),
        }
    }

    /// Ends the caller's session.
    pub async fn logout(
        &self,
        caller: &Principal,
        request_id: Option<String>,
    ) -> Result<(), DomainError> {
        let (Some(session_id), Some(user)) = (caller.session_id(), caller.user.clone()) else {
            return Err(no_session());
        };
        self.store
            .write(&caller.change(request_id), OrgLock::Shared, async |conn| {
                session_rows::end(conn, session_id, EndReason::Logout).await?;
                let audit = Audit::session(SESSION_LOGOUT, session_id, &user);
                Ok(Change::audited((), audit).settling())
            })
            .await
    }

    /// At most `limit` live sessions of a user after `after`: the caller's
    /// own (`user_id` none or the caller), or, with `sessions.manage`,
    /// another's of the organisation.
    pub async fn list_sessions(
        &self,
        caller: &Principal,
        user_id: Option<Uuid>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<SessionPage, DomainError> {
        let user_id = user_id
            .or(caller.user_id())
            .ok_or_else(|| DomainError::invalid("user_id", "is required with an API key"))?;
        caller.may_act_on(user_id)?;
        // NOT_FOUND for a user of another organisation, as everywhere.
        self.store.user(caller.organisation_id, user_id).await?;
        let sessions = self
            .store
            .list_sessions(SessionQuery {
                organisation_id: caller.organisation_id,
                user_id,
                after,
                limit,
            })
            .await?;
        Ok(SessionPage {
            sessions,
            current: caller.session_id(),
        })
    }

    /// Ends one session: the caller's own, or with `sessions.manage` any of
    /// the organisation.
    pub async fn revoke_session(
        &self,
        caller: &Principal,
        session_id: Uuid,
        request_id: Option<String>,
    ) -> Result<(), DomainError> {
        let organisation_id = caller.organisation_id;
        let owner = self
            .store
            .session_owner(organisation_id, session_id)
            .await?
            .ok_or(DomainError::NotFound("session"))?;
        let ctx = caller.change_on(owner, request_id)?;
        self.store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let session = session_rows::locked_live(conn, organisation_id, session_id)
                    .await?
                    .filter(|session| session.user_id == owner)
                    .ok_or(DomainError::NotFound("session"))?;
                let user = users::locked(conn, organisation_id, session.user_id).await?;
                session_rows::end(conn, session_id, EndReason::Revoked).await?;
                let audit = Audit::session(SESSION_REVOKE, session_id, &user);
                Ok(Change::audited((), audit).settling())
            })
            .await
    }
}

/// Writes a failed login's audit event as `ctx`'s user (gone meanwhile:
/// nobody to record it for), and counts the outcome.
async fn record_failed_login(store: Store, ctx: ChangeContext, user_id: Uuid, detail: String) {
    let organisation_id = ctx.organisation_id;
    let recorded = store
        .write(&ctx, OrgLock::Shared, async |conn| {
            let user = users::locked(conn, organisation_id, user_id).await?;
            let audit = Audit::user(LOGIN_FAILED, &user, None, Some(detail));
            Ok(Change::audited((), audit))
        })
        .await;
    let outcome = match recorded {
        Ok(()) => "written",
        Err(DomainError::Unauthenticated(_) | DomainError::NotFound(_)) => "user_gone",
        Err(error) => {
            tracing::warn!(
                %organisation_id,
                %user_id,
                %error,
                "a failed login's audit event could not be written"
            );
            "failed"
        }
    };
    crate::metrics::metrics().record_failed_login_audit(outcome);
}

/// The answer to a sign-in that opened `opened`: its tokens.
pub(crate) fn signed_in(tokens: &AccessTokens, opened: Opened) -> Result<LoggedIn, DomainError> {
    let Opened {
        session,
        refresh_token,
    } = opened;
    let token = issue(tokens, &session)?;
    Ok(LoggedIn {
        user_id: session.user_id,
        organisation_id: session.organisation_id,
        session_id: session.id,
        token,
        refresh: IssuedRefresh {
            token: refresh_token,
            expires_at: session.expires_at,
        },
    })
}

/// A session just opened, with its first refresh token.
pub(crate) struct Opened {
    session: Session,
    refresh_token: String,
}

impl Opened {
    /// The audit event of the session's opening, for `user`.
    pub(crate) fn audit(&self, user: &User) -> Audit {
        Audit::session(SESSION_OPEN, self.session.id, user)
    }
}

/// Opens a session of `user` with its first refresh token, and records the
/// sign-in, on the change's connection.
pub(crate) async fn open_session(
    conn: &mut Tx<'_>,
    user: &User,
    client: &Client,
    lifetime: SessionLifetime,
) -> Result<Opened, DomainError> {
    session_rows::forget_old(conn, user.id).await?;
    let now = Utc::now();
    let address = client.peer.map(|peer| peer.to_string()).unwrap_or_default();
    let user_agent = kept_user_agent(&client.user_agent);
    let session = session_rows::insert(
        conn,
        NewSession {
            organisation_id: user.organisation_id,
            user_id: user.id,
            token_key: user.token_key,
            expires_at: lifetime.expiry(now, now),
            absolute_expires_at: lifetime.absolute_expiry(now),
            client_address: &address,
            user_agent: &user_agent,
        },
    )
    .await?;
    let refresh = opaque::generate(REFRESH_TOKEN_PREFIX)?;
    session_rows::add_refresh_token(conn, session.id, &refresh.hash).await?;
    users::logged_in(conn, user.id).await?;
    Ok(Opened {
        session,
        refresh_token: refresh.token,
    })
}

/// The refresh itself, on the change's connection: the presented token is
/// used up and replaced, the session's end slides; a token used before
/// ends the session instead.
async fn rotate_refresh_token(
    conn: &mut Tx<'_>,
    token_hash: &[u8],
    organisation_id: Uuid,
    lifetime: SessionLifetime,
    tokens: &AccessTokens,
) -> Result<Change<RefreshOutcome>, DomainError> {
    let Some(state) = session_rows::locked_refresh(conn, token_hash).await? else {
        return Ok(Change::unchanged(RefreshOutcome::Invalid));
    };
    let now = Utc::now();
    let session = state.session;
    if session.organisation_id != organisation_id || !session.live(now) {
        return Ok(Change::unchanged(RefreshOutcome::Invalid));
    }
    let user = users::locked(conn, organisation_id, session.user_id).await?;
    if state.used {
        session_rows::end(conn, session.id, EndReason::RefreshReused).await?;
        let audit = Audit::session(SESSION_REFRESH_REUSED, session.id, &user);
        return Ok(Change::audited(RefreshOutcome::Reused, audit).settling());
    }
    if user.token_key != session.token_key {
        return Ok(Change::unchanged(RefreshOutcome::Invalid));
    }
    session_rows::use_refresh_token(conn, token_hash).await?;
    let next = opaque::generate(REFRESH_TOKEN_PREFIX)?;
    session_rows::add_refresh_token(conn, session.id, &next.hash).await?;
    let expires_at = lifetime.expiry(session.created_at, now);
    session_rows::refreshed(conn, session.id, now, expires_at).await?;
    let refreshed = Session {
        expires_at,
        last_refreshed_at: Some(now),
        ..session
    };
    let token = issue(tokens, &refreshed)?;
    let audit = Audit::session(SESSION_REFRESH, refreshed.id, &user);
    let outcome = RefreshOutcome::Refreshed(Refreshed {
        token,
        refresh: IssuedRefresh {
            token: next.token,
            expires_at,
        },
    });
    Ok(Change::audited(outcome, audit))
}

/// An access token of `session`, expiring with it at the latest.
fn issue(tokens: &AccessTokens, session: &Session) -> Result<IssuedToken, DomainError> {
    tokens
        .issue_until(
            TokenClaims {
                user_id: session.user_id,
                organisation_id: session.organisation_id,
                token_key: session.token_key,
                session_id: session.id,
            },
            Some(session.expires_at),
        )
        .map_err(|e| DomainError::Internal(format!("signing a token: {e}")))
}

/// How the audit log names where a sign-in came from.
pub(crate) fn client_text(client: &Client) -> String {
    match client.peer {
        Some(peer) => format!("peer {peer}"),
        None => "peer unknown".into(),
    }
}

/// The refusal of a suspended user's sign-in, once the password was right.
fn suspended() -> DomainError {
    DomainError::FailedPrecondition {
        reason: "USER_SUSPENDED",
        message:
            "this account is suspended: an administrator of the organisation can reactivate it"
                .into(),
    }
}

/// The refusal of a session call made with the organisation API key.
pub(crate) fn no_session() -> DomainError {
    DomainError::FailedPrecondition {
        reason: "SESSION_REQUIRED",
        message: "this call needs a signed-in user's access token: an API key or API token has no session"
            .into(),
    }
}
