//! The rules a change must keep, as pure functions the store applies inside
//! its transactions.

use super::error::DomainError;
use super::role::Role;
use super::user::User;

/// An organisation always keeps at least one active nanoAdmin: a change that
/// takes `user` out of the active admins (`new_role` None = deletion or
/// suspension) needs another one. `admin_count` counts the active admins.
pub fn keeps_an_admin(
    user: &User,
    new_role: Option<Role>,
    admin_count: i64,
) -> Result<(), DomainError> {
    let leaves_admins =
        user.is_active() && user.role == Role::NanoAdmin && new_role != Some(Role::NanoAdmin);
    if leaves_admins && admin_count <= 1 {
        return Err(DomainError::FailedPrecondition {
            reason: "LAST_ADMIN",
            message: format!(
                "{} is the organisation's last active nanoAdmin: make another user nanoAdmin first",
                user.email
            ),
        });
    }
    Ok(())
}

/// AIP-154: a given etag must be the current one.
pub fn etag_matches(user: &User, etag: Option<&str>) -> Result<(), DomainError> {
    match etag {
        Some(etag) if etag != user.etag() => Err(DomainError::Aborted(format!(
            "the user was changed since etag {etag} was read: read it again"
        ))),
        _ => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    fn user(role: Role) -> User {
        let now = Utc::now();
        User {
            id: Uuid::now_v7(),
            organisation_id: Uuid::now_v7(),
            email: "alice@example.com".into(),
            role,
            token_key: Uuid::new_v4(),
            version: 3,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            state: super::super::user::UserState::Active,
        }
    }

    #[test]
    fn the_last_admin_stays() {
        let admin = user(Role::NanoAdmin);
        assert!(keeps_an_admin(&admin, Some(Role::NanoUser), 1).is_err());
        assert!(keeps_an_admin(&admin, None, 1).is_err());
        assert!(keeps_an_admin(&admin, Some(Role::NanoUser), 2).is_ok());
        assert!(keeps_an_admin(&admin, Some(Role::NanoAdmin), 1).is_ok());
        assert!(keeps_an_admin(&user(Role::NanoUser), None, 1).is_ok());
    }

    #[test]
    fn etags_must_match_when_given() {
        let u = user(Role::NanoUser);
        assert!(etag_matches(&u, None).is_ok());
        assert!(etag_matches(&u, Some("\"3\"")).is_ok());
        assert!(matches!(
            etag_matches(&u, Some("\"2\"")),
            Err(DomainError::Aborted(_))
        ));
    }
}
