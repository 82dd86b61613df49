use std::fmt;
use std::str::FromStr;

use super::permission::{self, Permission};

/// The role of a user. Every user holds exactly one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    NanoAdmin,
    NanoUser,
    NanoReadOnly,
}

impl Role {
    /// Every role, highest first.
    pub const ALL: [Role; 3] = [Role::NanoAdmin, Role::NanoUser, Role::NanoReadOnly];

    /// The product's name of the role; also its spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::NanoAdmin => "nanoAdmin",
            Role::NanoUser => "nanoUser",
            Role::NanoReadOnly => "nanoReadOnly",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Role::NanoAdmin => {
                "The Administrator: full control, including managing users, their roles and tokens, and the organisation API key."
            }
            Role::NanoUser => {
                "The Operator: manages and operates streams, reads the user list and creates playback tokens; may not delete or stop things."
            }
            Role::NanoReadOnly => {
                "The Observer: reads stream configuration, stream states, metrics and alerts; nothing else."
            }
        }
    }

    /// The role's permissions, from the one matrix in [`permission`].
    pub fn permissions(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| permission::granted(self, *p))
    }

    pub fn can(self, permission: Permission) -> bool {
        permission::granted(self, permission)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
