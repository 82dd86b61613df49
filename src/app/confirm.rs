//! Double-confirmed actions: the first step hands out a confirmation, the
//! second carries the action out with it.

use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use crate::auth::opaque::{self, CONFIRMATION_PREFIX, OpaqueToken};
use crate::domain::DomainError;
use crate::domain::actor::ChangeContext;
use crate::domain::confirmation::ConfirmedAction;
use crate::store::confirmations::{self, NewConfirmation};
use crate::store::write::{Change, OrgLock};
use crate::store::{Store, Tx};

/// The first step's answer: nothing has changed yet.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub warning: String,
    pub action: ConfirmedAction,
    /// How many pending invites the action revokes with it.
    pub pending_invites: i64,
}

/// A step of a double-confirmed action.
#[derive(Debug)]
pub enum Step<T> {
    ConfirmationRequired(Confirmation),
    Done(T),
}

/// What the first step tells of the second: the consequences, in plain
/// language, and how many pending invites go with the action.
pub(crate) struct Preview {
    pub warning: String,
    pub pending_invites: i64,
}

/// A double-confirmed action: what it is about, and what each of its steps
/// does inside its write (which holds the organisation's lock exclusively).
pub(crate) trait Confirmable: Sync {
    type Done: Send;

    fn action(&self) -> ConfirmedAction;

    /// What the confirmation is bound to (a user, the organisation).
    fn target_id(&self) -> Uuid;

    /// The first step: refuses at once what the second would refuse anyway
    /// (deleting the last nanoAdmin), and says what the second will do.
    fn preview(
        &self,
        conn: &mut Tx<'_>,
    ) -> impl Future<Output = Result<Preview, DomainError>> + Send;

    /// The second step: the action, in the write that used the confirmation up.
    fn carry_out(
        &self,
        conn: &mut Tx<'_>,
    ) -> impl Future<Output = Result<Change<Self::Done>, DomainError>> + Send;
}

/// A double-confirmed action as `ctx`'s caller asks for it: without a
/// confirmation token its first step, which stores a confirmation valid for
/// `ttl` and changes nothing else; with one, the action, in one write that
/// uses the confirmation up (bound to this caller, action and target).
pub(crate) async fn two_step<C: Confirmable>(
    store: &Store,
    ctx: &ChangeContext,
    ttl: Duration,
    confirmation_token: &str,
    on: &C,
) -> Result<Step<C::Done>, DomainError> {
    let action = on.action();
    let target_id = on.target_id();
    if confirmation_token.is_empty() {
        let (secret, expires_at) = new_secret(ttl)?;
        let preview = store
            .write(ctx, OrgLock::Exclusive, async |conn| {
                let preview = on.preview(conn).await?;
                let confirmation = NewConfirmation {
                    action,
                    target_id,
                    token_hash: &secret.hash,
                    expires_at,
                };
                confirmations::insert(conn, ctx, confirmation).await?;
                Ok(Change::unchanged(preview))
            })
            .await?;
        return Ok(Step::ConfirmationRequired(Confirmation {
            token: secret.token,
            expires_at,
            warning: preview.warning,
            action,
            pending_invites: preview.pending_invites,
        }));
    }
    let token_hash = token_hash(confirmation_token)?;
    let done = store
        .write(ctx, OrgLock::Exclusive, async |conn| {
            confirmations::consume(conn, ctx, action, target_id, &token_hash).await?;
            on.carry_out(conn).await
        })
        .await?;
    Ok(Step::Done(done))
}

/// A new confirmation secret and its expiry.
fn new_secret(ttl: Duration) -> Result<(OpaqueToken, DateTime<Utc>), DomainError> {
    Ok((opaque::generate(CONFIRMATION_PREFIX)?, Utc::now() + ttl))
}

/// The stored hash of a confirmation token given back in a second step.
fn token_hash(confirmation_token: &str) -> Result<Vec<u8>, DomainError> {
    if confirmation_token.len() > opaque::MAX_LEN {
        return Err(DomainError::invalid("confirmation_token", "is too long"));
    }
    Ok(opaque::hash(confirmation_token))
}
