//! Double-confirmed actions: the first step hands out a confirmation, the
//! second carries the action out with it.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::auth::opaque::{self, CONFIRMATION_PREFIX, OpaqueToken};
use crate::domain::DomainError;
use crate::domain::invariants::ConfirmedAction;

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

/// A new confirmation secret and its expiry.
pub(crate) fn new_secret(ttl: Duration) -> Result<(OpaqueToken, DateTime<Utc>), DomainError> {
    Ok((opaque::generate(CONFIRMATION_PREFIX)?, Utc::now() + ttl))
}

/// The stored hash of a confirmation token given back in a second step.
pub(crate) fn token_hash(confirmation_token: &str) -> Result<Vec<u8>, DomainError> {
    if confirmation_token.len() > opaque::MAX_LEN {
        return Err(DomainError::invalid("confirmation_token", "is too long"));
    }
    Ok(opaque::hash(confirmation_token))
}
