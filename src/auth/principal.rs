use uuid::Uuid;

use crate::domain::{DomainError, Permission, Role};

/// Who is calling, as established for this call from the database's current
/// state (never from claims in the token alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub organisation_id: Uuid,
    /// The caller's role as the database holds it now.
    pub role: Role,
    pub actor: Actor,
}

/// The credential's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User { user_id: Uuid },
}

impl Principal {
    pub fn user_id(&self) -> Option<Uuid> {
        match self.actor {
            Actor::User { user_id } => Some(user_id),
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.role.can(permission)
    }

    /// PERMISSION_DENIED unless the caller's current role holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), DomainError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(DomainError::PermissionDenied(permission))
        }
    }
}
