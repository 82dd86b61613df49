//! Personal API tokens: what a user may hand to a script, and its limits.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::error::DomainError;
use super::permission::{Permission, PermissionSet};
use super::role::Role;

/// The longest a personal API token may live.
pub const MAX_LIFETIME: TimeDelta = TimeDelta::days(365);
pub const MAX_NAME_CHARS: usize = 100;

/// A personal API token as its user and admins see it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// What it was created with; empty: the whole role.
    pub permissions: PermissionSet,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Whether a caller whose user holds `role` now, restricted to
/// `restriction` (empty: not restricted, the whole role), may use
/// `permission`: never more than the current role, whatever a token was
/// created with.
pub fn allows(role: Role, restriction: PermissionSet, permission: Permission) -> bool {
    role.can(permission) && (restriction.is_empty() || restriction.contains(permission))
}

/// Checks a new token's name: trimmed, 1 to 100 characters, readable
/// (`text::display_name`).
pub fn validate_name(field: &str, name: &str) -> Result<String, DomainError> {
    super::text::display_name(field, name, MAX_NAME_CHARS)
}

/// Checks a new token's expiry: required, in the future, within a year.
pub fn validate_expiry(
    field: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    let expires_at = expires_at.ok_or_else(|| DomainError::invalid(field, "is required"))?;
    if expires_at <= now {
        return Err(DomainError::invalid(field, "must be in the future"));
    }
    let latest = now
        .checked_add_signed(MAX_LIFETIME)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if expires_at > latest {
        return Err(DomainError::invalid(
            field,
            "must be at most 365 days from now",
        ));
    }
    Ok(expires_at)
}

/// Parses the permission ids a token asks for; each must be held by `role`.
pub fn validate_permissions(
    field: &str,
    ids: &[String],
    role: Role,
) -> Result<PermissionSet, DomainError> {
    let mut wanted = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let permission: Permission = id.parse().map_err(|_| {
            DomainError::invalid(format!("{field}[{index}]"), "is not a permission id")
        })?;
        if !role.can(permission) {
            return Err(DomainError::invalid(
                format!("{field}[{index}]"),
                format!("{id} is not a permission of the caller's role {role}"),
            ));
        }
        wanted.push(permission);
    }
    Ok(wanted.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission as P;

    #[test]
    fn a_token_never_does_more_than_the_current_role() {
        let effective = |role: Role, restriction: PermissionSet| -> PermissionSet {
            Permission::ALL
                .into_iter()
                .filter(|p| allows(role, restriction, *p))
                .collect()
        };
        let created_with: PermissionSet = [P::StreamsCreate, P::StreamsRead].into_iter().collect();
        assert_eq!(effective(Role::NanoUser, created_with), created_with);
        let after_demotion = effective(Role::NanoReadOnly, created_with);
        assert!(after_demotion.contains(P::StreamsRead));
        assert!(!after_demotion.contains(P::StreamsCreate));
        assert_eq!(
            effective(Role::NanoReadOnly, PermissionSet::default()),
            PermissionSet::of_role(Role::NanoReadOnly)
        );
    }

    #[test]
    fn expiry_is_required_future_and_within_a_year() {
        let now = Utc::now();
        assert!(validate_expiry("expires_at", None, now).is_err());
        assert!(validate_expiry("expires_at", Some(now), now).is_err());
        assert!(validate_expiry("expires_at", Some(now + MAX_LIFETIME), now).is_ok());
        assert!(
            validate_expiry(
                "expires_at",
                Some(now + MAX_LIFETIME + TimeDelta::seconds(1)),
                now
            )
            .is_err()
        );
        assert!(validate_expiry("expires_at", Some(DateTime::<Utc>::MAX_UTC), now).is_err());
    }

    #[test]
    fn permissions_must_be_known_and_held() {
        let ok = validate_permissions("permissions", &["streams.read".into()], Role::NanoReadOnly);
        assert_eq!(ok.ok(), Some([P::StreamsRead].into_iter().collect()));
        assert!(
            validate_permissions(
                "permissions",
                &["streams.create".into()],
                Role::NanoReadOnly
            )
            .is_err()
        );
        assert!(validate_permissions("permissions", &["nope".into()], Role::NanoAdmin).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("name", "  ci  ").ok().as_deref(), Some("ci"));
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", &"x".repeat(101)).is_err());
        assert!(validate_name("name", "a\u{7}b").is_err());
        assert!(validate_name("name", "ci\u{202E}").is_err());
    }
}
