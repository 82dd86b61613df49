use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::actor::Actor;
use super::error::DomainError;
use super::role::Role;

const MIN_INVITE_TTL: Duration = Duration::from_secs(60);
const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A pending invitation to join an organisation with a role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invite {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_by: Actor,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The lifetime a request asks of a new invite, if any, within bounds.
pub fn requested_ttl(requested: Option<Duration>) -> Result<Option<Duration>, DomainError> {
    match requested {
        None => Ok(None),
        Some(ttl) if (MIN_INVITE_TTL..=MAX_INVITE_TTL).contains(&ttl) => Ok(Some(ttl)),
        Some(_) => Err(DomainError::invalid(
            "ttl",
            "must be between 1 minute and 30 days",
        )),
    }
}
