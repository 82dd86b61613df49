//! The audit log's vocabulary.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const USER_CREATE: &str = "user.create";
pub const USER_UPDATE_ROLE: &str = "user.update_role";
pub const USER_DELETE: &str = "user.delete";
pub const USER_RENEW_TOKEN_KEY: &str = "user.renew_token_key";
pub const INVITE_CREATE: &str = "invite.create";
pub const INVITE_REVOKE: &str = "invite.revoke";
pub const INVITE_ACCEPT: &str = "invite.accept";
pub const ORGANISATION_UPDATE: &str = "organisation.update";
pub const ORGANISATION_ROTATE_API_KEY: &str = "organisation.rotate_api_key";
/// The organisation's members changed (a user created, deleted or given
/// another role): its role counts with them.
pub const ORGANISATION_MEMBERS: &str = "organisation.members";
pub const PLAYBACK_TOKEN_ISSUE: &str = "playback_token.issue";
pub const PLAYBACK_TOKEN_REVOKE: &str = "playback_token.revoke";
pub const PLAYBACK_KEY_CREATE: &str = "playback_key.create";
pub const PLAYBACK_KEY_ROTATE: &str = "playback_key.rotate";
pub const PLAYBACK_KEY_REVOKE: &str = "playback_key.revoke";
pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
pub const LOGIN_FAILED: &str = "login.failed";
pub const SESSION_LOGOUT: &str = "session.logout";
pub const SESSION_REVOKE: &str = "session.revoke";
pub const SESSION_REFRESH_REUSED: &str = "session.refresh_token_reused";
pub const USER_CHANGE_PASSWORD: &str = "user.change_password";
pub const USER_RESET_PASSWORD: &str = "user.reset_password";
pub const USER_REQUEST_PASSWORD_RESET: &str = "user.request_password_reset";
pub const USER_SUSPEND: &str = "user.suspend";
pub const USER_REACTIVATE: &str = "user.reactivate";
pub const API_TOKEN_CREATE: &str = "api_token.create";
pub const API_TOKEN_FIRST_USE: &str = "api_token.first_use";
pub const API_TOKEN_REVOKE: &str = "api_token.revoke";
/// A sign-in (or an accepted invite) opened this session.
pub const SESSION_OPEN: &str = "session.open";
/// A refresh token was exchanged: the session's end slid.
pub const SESSION_REFRESH: &str = "session.refresh";
/// The session ended with a change of its user (tokenKey renewed, role
/// changed, password changed or reset, suspended or deleted).
pub const SESSION_END: &str = "session.end";
/// The personal API token stopped working with a change of its user
/// (tokenKey renewed, role changed, password reset, suspended or deleted).
pub const API_TOKEN_END: &str = "api_token.end";
/// A rotation retired the key: it verifies until `verify_until`.
pub const PLAYBACK_KEY_RETIRE: &str = "playback_key.retire";
/// The operator re-sealed the key's private half (`usermgmt keys rewrap`).
pub const PLAYBACK_KEY_REWRAP: &str = "playback_key.rewrap";
/// The operator created the organisation (`usermgmt bootstrap`, seeding).
pub const ORGANISATION_CREATE: &str = "organisation.create";
/// The operator registered an internal service (the deployment's feed).
pub const SERVICE_REGISTER: &str = "service.register";
/// The operator revoked an internal service (the deployment's feed).
pub const SERVICE_REVOKE: &str = "service.revoke";

/// Whether an audit event of `action` records a change of the
/// organisation's state, and so is a target of a change in the change feed
/// (every other write of a call records one: a write that changes something
/// without an event that is a change is a bug). The two exceptions change
/// nothing a Get or List RPC shows, and the feed must not tell whether an
/// account exists or is being attacked:
///
/// - a failed sign-in (`login.failed`): it counts against the login limits
///   only;
/// - a password reset request (`user.request_password_reset`): it stores a
///   reset and queues its mail, neither of them a resource; the reset itself
///   (`user.reset_password`) is a change.
pub fn is_change(action: &str) -> bool {
    !matches!(action, LOGIN_FAILED | USER_REQUEST_PASSWORD_RESET)
}

/// One recorded change. Holds no secrets: no tokens, keys or hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub target_label: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub request_id: Option<String>,
    /// The change feed's sequence of the change it is a target of.
    pub sequence: Option<i64>,
}

/// Which events to list; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target_id: Option<String>,
    pub action: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Only the events of the change feed's changes after this sequence,
    /// oldest first by (sequence, id); none: every event, newest first.
    pub after_sequence: Option<i64>,
}

impl AuditFilter {
    /// A canonical text of the filter, bound into page tokens.
    pub fn fingerprint(&self) -> String {
        let mut text = format!(
            "actor={:?};target={:?};action={:?};start={:?};end={:?}",
            self.actor,
            self.target_id,
            self.action,
            self.start_time.map(|t| t.timestamp_micros()),
            self.end_time.map(|t| t.timestamp_micros()),
        );
        if let Some(after) = self.after_sequence {
            text.push_str(&format!(";after_sequence={after}"));
        }
        text
    }
}

/// Where a page of events in the change feed's order starts: after the
/// event `id` of the change `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceCursor {
    pub sequence: i64,
    pub id: Uuid,
}

impl SequenceCursor {
    /// The cursor after `event` (which has a sequence in this order).
    pub fn after(event: &AuditEvent) -> Self {
        SequenceCursor {
            sequence: event.sequence.unwrap_or_default(),
            id: event.id,
        }
    }
}

impl super::paging::Cursor for SequenceCursor {
    fn encode(&self, filter: &str) -> String {
        super::paging::KeyedCursor {
            after: self.id,
            key: self.sequence.to_string(),
        }
        .encode(filter)
    }
}

impl super::paging::TokenCursor for SequenceCursor {
    fn decode(raw: &str, filter: &str) -> Result<Option<Self>, super::DomainError> {
        let Some(cursor) = super::paging::KeyedCursor::decode(raw, filter)? else {
            return Ok(None);
        };
        let sequence = cursor.key.parse().map_err(|_| {
            super::DomainError::invalid("page_token", "is not a page token of this query")
        })?;
        Ok(Some(SequenceCursor {
            sequence,
            id: cursor.after,
        }))
    }
}
