//! Double-confirmed actions: what each is, the consequences its first step
//! warns of, and when a stored confirmation confirms a second step.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::DomainError;
use super::user::User;

/// The double-confirmed actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmedAction {
    DeleteUser,
    RenewTokenKey,
    RotateApiKey,
    SuspendUser,
}

impl ConfirmedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmedAction::DeleteUser => super::audit::USER_DELETE,
            ConfirmedAction::RenewTokenKey => super::audit::USER_RENEW_TOKEN_KEY,
            ConfirmedAction::RotateApiKey => super::audit::ORGANISATION_ROTATE_API_KEY,
            ConfirmedAction::SuspendUser => super::audit::USER_SUSPEND,
        }
    }

    /// The consequences of rotating the API key, in plain language.
    /// The consequences of rotating the API key, with which `pending_invites`
    /// pending invites were made.
    pub fn api_key_warning(pending_invites: i64) -> String {
        format!(
            "Rotating the API key makes the current key stop working at once, for every service that uses it.{} \
             The new key is shown once, in the answer of the second step: store it before you close it.",
            invites_revoked(pending_invites)
        )
    }

    /// The consequences, in plain language, for the confirmation dialog: of the action on `user`, who has `pending_invites`
    /// pending invites of their own making.
    pub fn warning(self, user: &User, pending_invites: i64) -> String {
        let email = &user.email;
        match self {
            ConfirmedAction::RotateApiKey => Self::api_key_warning(pending_invites),
            ConfirmedAction::DeleteUser => format!(
                "Deleting {email} cannot be undone: all of {email}'s access tokens stop working at once \
                 and {email} can no longer log in.{} Playback tokens {email} issued stay valid until they expire.",
                invites_revoked(pending_invites)
            ),
            ConfirmedAction::SuspendUser => format!(
                "Suspending {email} makes all of {email}'s sessions, access tokens and API tokens stop working at once \
                 and {email} can no longer log in until reactivated; reactivating does not bring the old credentials back.{} \
                 {email} keeps their role and history. Playback tokens {email} issued stay valid until they expire.",
                invites_revoked(pending_invites)
            ),
            ConfirmedAction::RenewTokenKey => format!(
                "Renewing the tokenKey of {email} makes all of {email}'s access tokens stop working at once; \
                 {email} must log in again. Playback tokens {email} issued stay valid until they expire."
            ),
        }
    }
}

/// The warning's sentence about the pending invites an action revokes.
fn invites_revoked(pending_invites: i64) -> String {
    match pending_invites {
        0 => String::new(),
        1 => " Its one pending invite is revoked with it.".to_owned(),
        n => format!(" Its {n} pending invites are revoked with it."),
    }
}

/// A stored confirmation, as the second step finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfirmation {
    pub organisation_id: Uuid,
    pub actor: String,
    pub action: String,
    pub target_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// What the second step confirms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirming<'a> {
    pub organisation_id: Uuid,
    pub actor: &'a str,
    pub action: ConfirmedAction,
    pub target_id: Uuid,
}

/// Whether `stored` confirms exactly `confirming`, now.
pub fn confirmation_valid(
    stored: Option<&StoredConfirmation>,
    confirming: &Confirming<'_>,
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    let fail = |reason: &'static str, message: &str| {
        Err(DomainError::FailedPrecondition {
            reason,
            message: message.to_owned(),
        })
    };
    let Some(stored) = stored else {
        return fail(
            "CONFIRMATION_INVALID",
            "the confirmation token is not valid: start again",
        );
    };
    if stored.used {
        return fail(
            "CONFIRMATION_USED",
            "the confirmation token was already used: start again",
        );
    }
    if stored.expires_at <= now {
        return fail(
            "CONFIRMATION_EXPIRED",
            "the confirmation token has expired: start again",
        );
    }
    let bound_here = stored.organisation_id == confirming.organisation_id
        && stored.actor == confirming.actor
        && stored.action == confirming.action.as_str()
        && stored.target_id == confirming.target_id;
    if !bound_here {
        return fail(
            "CONFIRMATION_MISMATCH",
            "the confirmation token was issued to another caller, for another action or another user",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_bound_single_use_and_short_lived() {
        let now = Utc::now();
        let stored = StoredConfirmation {
            organisation_id: Uuid::nil(),
            actor: "user:a".into(),
            action: "user.delete".into(),
            target_id: Uuid::nil(),
            expires_at: now + chrono::Duration::minutes(5),
            used: false,
        };
        let confirming = Confirming {
            organisation_id: Uuid::nil(),
            actor: "user:a",
            action: ConfirmedAction::DeleteUser,
            target_id: Uuid::nil(),
        };
        let reason = |result: Result<(), DomainError>| match result {
            Err(DomainError::FailedPrecondition { reason, .. }) => reason,
            _ => "ok",
        };
        assert_eq!(
            reason(confirmation_valid(Some(&stored), &confirming, now)),
            "ok"
        );
        assert_eq!(
            reason(confirmation_valid(None, &confirming, now)),
            "CONFIRMATION_INVALID"
        );
        let used = StoredConfirmation {
            used: true,
            ..stored.clone()
        };
        assert_eq!(
            reason(confirmation_valid(Some(&used), &confirming, now)),
            "CONFIRMATION_USED"
        );
        let later = now + chrono::Duration::minutes(6);
        assert_eq!(
            reason(confirmation_valid(Some(&stored), &confirming, later)),
            "CONFIRMATION_EXPIRED"
        );
        let other_action = Confirming {
            action: ConfirmedAction::RenewTokenKey,
            ..confirming.clone()
        };
        assert_eq!(
            reason(confirmation_valid(Some(&stored), &other_action, now)),
            "CONFIRMATION_MISMATCH"
        );
        let other_caller = Confirming {
            actor: "user:b",
            ..confirming.clone()
        };
        assert_eq!(
            reason(confirmation_valid(Some(&stored), &other_caller, now)),
            "CONFIRMATION_MISMATCH"
        );
        let other_target = Confirming {
            target_id: Uuid::now_v7(),
            ..confirming
        };
        assert_eq!(
            reason(confirmation_valid(Some(&stored), &other_target, now)),
            "CONFIRMATION_MISMATCH"
        );
    }
}
