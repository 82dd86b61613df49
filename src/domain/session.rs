//! Sessions: what a login opens and how long it lasts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A session as the per-call check and the session list read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    /// The user's tokenKey at login: the session ends when it is renewed.
    /// Never serialised (the change feed's stored state holds no tokenKey):
    /// a session read back from the feed has the nil id here.
    #[serde(skip, default)]
    pub token_key: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub client_address: String,
    pub user_agent: String,
}

impl Session {
    /// Whether the session may still be used at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.ended_at.is_none() && self.expires_at > now
    }
}

/// Why a session ended, as the database records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    Revoked,
    RefreshReused,
    PasswordChanged,
    PasswordReset,
    TokenKeyRenewed,
    UserSuspended,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Revoked => "revoked",
            EndReason::RefreshReused => "refresh_token_reused",
            EndReason::PasswordChanged => "password_changed",
            EndReason::PasswordReset => "password_reset",
            EndReason::TokenKeyRenewed => "token_key_renewed",
            EndReason::UserSuspended => "user_suspended",
        }
    }
}

/// How long sessions last: `idle` after the login or the last refresh, and
/// never longer than `absolute` after the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    pub idle: Duration,
    pub absolute: Duration,
}

impl SessionLifetime {
    /// When a session opened at `created_at` ends if it is refreshed (or
    /// opened) at `now` and not again.
    pub fn expiry(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let cap = add(created_at, self.absolute);
        add(now, self.idle).min(cap)
    }

    /// The absolute end of a session opened at `created_at`.
    pub fn absolute_expiry(&self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        add(created_at, self.absolute)
    }
}

/// `at + duration`, saturating at the largest time chrono represents.
fn add(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|duration| at.checked_add_signed(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The longest a user agent is kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// `user_agent` cut to what is kept: at most [`MAX_USER_AGENT_CHARS`]
/// characters, control characters dropped.
pub fn kept_user_agent(user_agent: &str) -> String {
    user_agent
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_slides_the_end_up_to_the_absolute_cap() {
        let lifetime = SessionLifetime {
            idle: Duration::from_secs(30 * 86_400),
            absolute: Duration::from_secs(90 * 86_400),
        };
        let login = Utc::now();
        assert_eq!(
            lifetime.expiry(login, login),
            login + chrono::Duration::days(30)
        );
        let late = login + chrono::Duration::days(80);
        assert_eq!(
            lifetime.expiry(login, late),
            login + chrono::Duration::days(90),
            "never beyond the cap"
        );
    }

    #[test]
    fn extreme_lifetimes_saturate() {
        let lifetime = SessionLifetime {
            idle: Duration::MAX,
            absolute: Duration::MAX,
        };
        assert_eq!(
            lifetime.expiry(Utc::now(), Utc::now()),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn user_agents_are_cut_and_cleaned() {
        let long = "a\u{0}b".repeat(200);
        let kept = kept_user_agent(&long);
        assert_eq!(kept.chars().count(), MAX_USER_AGENT_CHARS);
        assert!(!kept.contains('\u{0}'));
    }
}
