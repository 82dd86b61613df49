use std::sync::Arc;

use uuid::Uuid;

use super::access::Access;
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
    /// The access rule of the RPC the call was admitted to: the one source
    /// of the permission it was admitted with, which the write path checks
    /// again at commit.
    pub access: Access,
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

    /// PERMISSION_DENIED unless the caller may act on something of
    /// `owner`'s under the call's access rule (one's own needs the rule's
    /// own-credential permission under an [`Access::OwnOr`] rule, which
    /// every role holds but a restricted API token only when given it).
    pub fn may_act_on(&self, owner: Uuid) -> Result<(), DomainError> {
        match self.access.permission_on(self.user_id(), owner) {
            Some(permission) => self.require(permission),
            None => Ok(()),
        }
    }

    /// The context of a change of something of `owner`'s, which the caller
    /// must be allowed now ([`Self::may_act_on`]); the write path checks the
    /// same permission again at commit.
    pub fn change_on(
        &self,
        owner: Uuid,
        request_id: Option<String>,
    ) -> Result<ChangeContext, DomainError> {
        self.may_act_on(owner)?;
        Ok(ChangeContext {
            permission: self.access.permission_on(self.user_id(), owner),
            ..self.change(request_id)
        })
    }

    /// The context of a change this caller makes, which the write path
    /// re-checks with the permission of the call's access rule (an
    /// [`Access::OwnOr`] rule's too: see [`Self::change_on`] for one's own).
    pub fn change(&self, request_id: Option<String>) -> ChangeContext {
        ChangeContext {
            organisation_id: self.organisation_id,
            actor: self.actor.clone(),
            proof: self.proof.clone(),
            permission: self.access.permission(),
            request_id,
        }
    }
}
