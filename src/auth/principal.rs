use std::sync::Arc;

use uuid::Uuid;

pub use crate::domain::actor::Actor;
use crate::domain::actor::{ChangeContext, Proof};
use crate::domain::permission::PermissionSet;
use crate::domain::user::User;
use crate::domain::{DomainError, Permission, Role};

/// Who is calling, as established for this call from the database's current
/// state (never from claims in the token alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub organisation_id: Uuid,
    /// The caller's role as the database holds it now.
    pub role: Role,
    pub actor: Actor,
    /// What the credential was admitted with, for the write path to re-verify.
    pub proof: Proof,
    /// The caller's user as the check read it (none for an API key): the
    /// state the decision was made on.
    pub user: Option<Arc<User>>,
    /// The permissions a personal API token was created with, the only ones
    /// it may use (those its user's role holds too); empty: not restricted.
    pub restriction: PermissionSet,
}

impl Principal {
    pub fn user_id(&self) -> Option<Uuid> {
        self.actor.user_id()
    }

    /// The session of the call, for a user's access token.
    pub fn session_id(&self) -> Option<Uuid> {
        match self.proof {
            Proof::Session { session_id, .. } => Some(session_id),
            _ => None,
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        crate::domain::api_token::allows(self.role, self.restriction, permission)
    }

    /// Every permission the caller may use now.
    pub fn permissions(&self) -> impl Iterator<Item = Permission> + '_ {
        self.role.permissions().filter(|p| self.can(*p))
    }

    /// Whether the call carries a signed-in session (not an API key or
    /// a personal API token).
    pub fn has_session(&self) -> bool {
        matches!(self.proof, Proof::Session { .. })
    }

    /// PERMISSION_DENIED unless the caller's current role holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), DomainError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(DomainError::PermissionDenied(permission))
        }
    }

    /// Like [`Self::require`], but one's own account needs no permission.
    pub fn require_unless_self(
        &self,
        permission: Permission,
        target: Uuid,
    ) -> Result<(), DomainError> {
        if self.user_id() == Some(target) {
            Ok(())
        } else {
            self.require(permission)
        }
    }

    /// What a change of `owner`'s needs of this caller: nothing for one's
    /// own, else `permission`, which the caller must hold now (the write path
    /// checks it again at commit).
    pub fn permission_unless_own(
        &self,
        permission: Permission,
        owner: Uuid,
    ) -> Result<Option<Permission>, DomainError> {
        if self.user_id() == Some(owner) {
            Ok(None)
        } else {
            self.require(permission).map(|()| Some(permission))
        }
    }

    /// The context of a change this caller makes.
    pub fn change(&self, request_id: Option<String>) -> ChangeContext {
        ChangeContext {
            organisation_id: self.organisation_id,
            actor: self.actor.clone(),
            proof: self.proof.clone(),
            request_id,
        }
    }
}
