//! Which RPC needs what: one table, consulted before every call.

use crate::domain::Permission;
use crate::domain::change::TargetType;

/// What a caller needs to call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (signing in, health, reflection).
    Public,
    /// Any valid credential, whatever its role (asking who one is).
    Authenticated,
    /// A valid credential whose current role holds the permission.
    Permission(Permission),
    /// A valid credential: one's own (sessions, tokens, tokenKey) needs the
    /// first permission (one every role holds, so that only a personal API
    /// token restricted without it is refused), another user's needs the
    /// second. Admitted like [`Access::Authenticated`]; the use case decides
    /// once it knows the owner ([`crate::auth::Principal::change_on`]).
    OwnOr(Permission, Permission),
    /// A registered internal service (`x-usermgmt-service-key`).
    Service,
    /// A registered internal service when the call carries a service key,
    /// else any valid credential (the change feed, which each caller sees
    /// only as far as its role may read: [`may_see`]).
    MemberOrService,
}

use Access::{Authenticated, MemberOrService, OwnOr, Public, Service};
use Permission as P;

const fn needs(permission: Permission) -> Access {
    Access::Permission(permission)
}

/// The permission invites are made with (CreateInvite's): an invite is
/// accepted on its creator's authority, which must still hold it, and a
/// user whose role loses it takes their pending invites with them.
pub const INVITE_AUTHORITY: Permission = P::UsersInvite;

/// The permission that reads the organisation's members (GetOrganisation's):
/// WhoAmI shows the member counts only to a caller who holds it.
pub const MEMBERS_READ: Permission = P::UsersRead;

impl Access {
    /// What the caller's role (and token) must hold to act on something of
    /// `owner`'s (none: any role), for a caller who is the user `caller`
    /// (none: the API key).
    pub fn permission_on(
        self,
        caller: Option<uuid::Uuid>,
        owner: uuid::Uuid,
    ) -> Option<Permission> {
        match self {
            OwnOr(own, _) if caller == Some(owner) => Some(own),
            other => other.permission(),
        }
    }

    /// What the caller's role must hold before the handler runs (none: any
    /// role). Under an [`Access::OwnOr`] rule that depends on the owner, so
    /// it is decided once the owner is known.
    pub fn permission_at_admission(self) -> Option<Permission> {
        match self {
            Access::Permission(permission) => Some(permission),
            OwnOr(..) | Public | Authenticated | Service | MemberOrService => None,
        }
    }

    /// What the caller's role must hold, at admission and again at commit
    /// (none: any role). An [`Access::OwnOr`] rule needs its permission on
    /// another user's unless the use case finds the caller acts on their own
    /// ([`Self::permission_on`]).
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Permission(permission) | OwnOr(_, permission) => Some(permission),
            Public | Authenticated | Service | MemberOrService => None,
        }
    }
}

/// The access rule of every RPC of the `usermgmt.v1` services. An RPC that is
/// not listed here is refused (a test checks that every RPC is listed).
pub const RULES: &[(&str, Access)] = &[
    ("/usermgmt.v1.AuthService/Login", Public),
    ("/usermgmt.v1.AuthService/WhoAmI", Authenticated),
    ("/usermgmt.v1.AuthService/AcceptInvite", Public),
    ("/usermgmt.v1.AuthService/Authorize", Service),
    ("/usermgmt.v1.AuthService/AuthorizeBatch", Service),
    ("/usermgmt.v1.AuthService/Refresh", Public),
    // Both need a signed-in session, which the handlers check (an API token
    // or the API key gets SESSION_REQUIRED): no token ends or changes what
    // the person it serves signs in with.
    ("/usermgmt.v1.AuthService/Logout", Authenticated),
    ("/usermgmt.v1.AuthService/ChangePassword", Authenticated),
    ("/usermgmt.v1.AuthService/RequestPasswordReset", Public),
    ("/usermgmt.v1.AuthService/ResetPassword", Public),
    // One's own sessions need sessions.manage_own (every role holds it; a
    // restricted API token only when given it); another user's need
    // sessions.manage.
    (
        "/usermgmt.v1.SessionService/ListSessions",
        OwnOr(P::SessionsManageOwn, P::SessionsManage),
    ),
    (
        "/usermgmt.v1.SessionService/RevokeSession",
        OwnOr(P::SessionsManageOwn, P::SessionsManage),
    ),
    // Creating needs a signed-in session, which the handler checks; one's
    // own tokens need api_tokens.manage_own to list or revoke, another
    // user's need api_tokens.manage.
    ("/usermgmt.v1.ApiTokenService/CreateApiToken", Authenticated),
    (
        "/usermgmt.v1.ApiTokenService/ListApiTokens",
        OwnOr(P::ApiTokensManageOwn, P::ApiTokensManage),
    ),
    (
        "/usermgmt.v1.ApiTokenService/RevokeApiToken",
        OwnOr(P::ApiTokensManageOwn, P::ApiTokensManage),
    ),
    ("/usermgmt.v1.UserService/GetUser", needs(P::UsersRead)),
    ("/usermgmt.v1.UserService/ListUsers", needs(P::UsersRead)),
    ("/usermgmt.v1.UserService/CreateUser", needs(P::UsersCreate)),
    (
        "/usermgmt.v1.UserService/CreateInvite",
        needs(INVITE_AUTHORITY),
    ),
    (
        "/usermgmt.v1.UserService/ListInvites",
        needs(INVITE_AUTHORITY),
    ),
    (
        "/usermgmt.v1.UserService/RevokeInvite",
        needs(INVITE_AUTHORITY),
    ),
    (
        "/usermgmt.v1.UserService/UpdateUserRole",
        needs(P::UsersUpdateRole),
    ),
    ("/usermgmt.v1.UserService/DeleteUser", needs(P::UsersDelete)),
    (
        "/usermgmt.v1.UserService/SuspendUser",
        needs(P::UsersSuspend),
    ),
    (
        "/usermgmt.v1.UserService/ReactivateUser",
        needs(P::UsersSuspend),
    ),
    // Every role may renew its own tokenKey (users.renew_own_token; a
    // restricted API token only when given it); others' needs
    // users.renew_token.
    (
        "/usermgmt.v1.UserService/RenewTokenKey",
        OwnOr(P::UsersRenewOwnToken, P::UsersRenewToken),
    ),
    (
        "/usermgmt.v1.AuditService/ListAuditEvents",
        needs(P::AuditRead),
    ),
    ("/usermgmt.v1.RoleService/ListRoles", Authenticated),
    (
        "/usermgmt.v1.OrganisationService/GetOrganisation",
        needs(MEMBERS_READ),
    ),
    (
        "/usermgmt.v1.OrganisationService/UpdateOrganisation",
        needs(P::OrganisationUpdate),
    ),
    (
        "/usermgmt.v1.OrganisationService/RotateApiKey",
        needs(P::ApiKeyRotate),
    ),
    (
        "/usermgmt.v1.PlaybackTokenService/IssuePlaybackToken",
        needs(P::PlaybackTokensCreate),
    ),
    // Edge servers verify tokens on their own, with public keys; this RPC is
    // only a convenience for those that do not. The token is the credential,
    // and the answer reveals nothing its bearer cannot decode from it.
    (
        "/usermgmt.v1.PlaybackTokenService/VerifyPlaybackToken",
        Public,
    ),
    (
        "/usermgmt.v1.PlaybackTokenService/RevokePlaybackToken",
        needs(P::PlaybackTokensRevoke),
    ),
    // Public keys are public: edge servers fetch them without credentials.
    ("/usermgmt.v1.PlaybackTokenService/ListSigningKeys", Public),
    // Every caller may watch its organisation, and sees of it what its role
    // may read (FEED_VISIBILITY); a registered service, any organisation.
    ("/usermgmt.v1.ChangeService/WatchChanges", MemberOrService),
    ("/usermgmt.v1.ChangeService/ListChanges", MemberOrService),
    (
        "/usermgmt.v1.PlaybackTokenService/RotateSigningKey",
        needs(P::PlaybackKeysRotate),
    ),
];

/// Who may see a target of each type in the change feed: whoever the access
/// rule of the RPC that lists (or acts on) such targets admits, for the
/// target's owner. So the feed shows a caller exactly what the Get and List
/// RPCs would.
pub const FEED_VISIBILITY: &[(TargetType, &str)] = &[
    (TargetType::User, "/usermgmt.v1.UserService/ListUsers"),
    (TargetType::Invite, "/usermgmt.v1.UserService/ListInvites"),
    (
        TargetType::Session,
        "/usermgmt.v1.SessionService/ListSessions",
    ),
    (
        TargetType::ApiToken,
        "/usermgmt.v1.ApiTokenService/ListApiTokens",
    ),
    (
        TargetType::PlaybackToken,
        "/usermgmt.v1.PlaybackTokenService/RevokePlaybackToken",
    ),
    (
        TargetType::PlaybackKey,
        "/usermgmt.v1.PlaybackTokenService/ListSigningKeys",
    ),
    // Every member sees what the organisation is; its members and API key
    // only with MEMBERS_READ, as WhoAmI shows it.
    (
        TargetType::Organisation,
        "/usermgmt.v1.RoleService/ListRoles",
    ),
    // Only in the deployment's feed, which only a registered service may
    // watch (no member sees one).
    (TargetType::Service, "/usermgmt.v1.AuthService/Authorize"),
];

/// Whether `principal` may see, in the change feed, a target of
/// `target_type` that belongs to `owner` (a session's or API token's user).
pub fn may_see(
    principal: &crate::auth::Principal,
    target_type: TargetType,
    owner: Option<uuid::Uuid>,
) -> bool {
    let Some(rule) = FEED_VISIBILITY
        .iter()
        .find(|(kind, _)| *kind == target_type)
        .and_then(|(_, rpc)| rule_for(rpc))
    else {
        return false;
    };
    let permission = match (rule, owner) {
        (Public, _) => return true,
        (Service, _) => return false,
        (OwnOr(..), Some(owner)) => rule.permission_on(principal.user_id(), owner),
        (rule, _) => rule.permission(),
    };
    permission.is_none_or(|permission| principal.can(permission))
}

/// Services anyone may call: they reveal nothing about organisations.
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The rule for a request path (`/package.Service/Method`), if there is one.
pub fn rule_for(path: &str) -> Option<Access> {
    if PUBLIC_SERVICES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Some(Public);
    }
    RULES
        .iter()
        .find(|(rpc, _)| *rpc == path)
        .map(|(_, access)| *access)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC of the contract, as `/package.Service/Method`.
    fn contract_rpcs() -> Vec<String> {
        crate::proto::rpc_paths().expect("the contract's descriptors decode")
    }

    #[test]
    fn every_rpc_of_the_contract_has_exactly_one_access_rule() {
        let rpcs = contract_rpcs();
        assert!(!rpcs.is_empty());
        for rpc in &rpcs {
            let rules = RULES.iter().filter(|(path, _)| path == rpc).count();
            assert_eq!(rules, 1, "{rpc} must have exactly one access rule");
        }
        for (path, _) in RULES {
            assert!(
                rpcs.iter().any(|rpc| rpc == path),
                "{path} is not an RPC of the contract"
            );
        }
    }

    #[test]
    fn every_target_type_has_exactly_one_visibility_rule_of_an_rpc() {
        for target_type in TargetType::ALL {
            let rules: Vec<&str> = FEED_VISIBILITY
                .iter()
                .filter(|(kind, _)| *kind == target_type)
                .map(|(_, rpc)| *rpc)
                .collect();
            assert_eq!(rules.len(), 1, "{target_type:?}: {rules:?}");
            assert!(rule_for(rules[0]).is_some(), "{}", rules[0]);
        }
    }

    #[test]
    fn unknown_methods_have_no_rule_and_health_is_public() {
        assert_eq!(rule_for("/usermgmt.v1.UserService/DropEverything"), None);
        assert_eq!(rule_for("/grpc.health.v1.Health/Check"), Some(Public));
        assert_eq!(
            rule_for("/usermgmt.v1.UserService/ListUsers"),
            Some(Access::Permission(P::UsersRead))
        );
    }
}
