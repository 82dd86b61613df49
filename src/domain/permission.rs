//! The role → permission matrix: the one place that says who may do what.
//! It is served to clients by `RoleService.ListRoles` and enforced on every
//! call through the access rules in `auth::access`.

use std::fmt;
use std::str::FromStr;

use super::role::Role;

/// Something a caller may be allowed to do in an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    ApiKeyRead,
    ApiKeyRotate,
    PlayerKeyRead,
    OwnTokenRead,
    WebhookSet,
    UsersRead,
    UsersCreate,
    UsersInvite,
    UsersUpdateRole,
    UsersRenewToken,
    UsersDelete,
    AuditRead,
    OrganisationUpdate,
    StreamsRead,
    StreamsCreate,
    StreamsStop,
    StreamsLock,
    StreamsDelete,
    TagsRead,
    TagsWrite,
    TagsDelete,
    PlaybackTokensCreate,
    PlaybackTokensRevoke,
    PlaybackKeysRotate,
    MetricsRead,
    SessionsManage,
    UsersSuspend,
    ApiTokensManage,
    SessionsManageOwn,
    ApiTokensManageOwn,
    UsersRenewOwnToken,
}

use Permission as P;
use Role::{NanoAdmin as A, NanoReadOnly as R, NanoUser as U};

/// The matrix: each permission, its id, what it allows and who holds it.
/// The product's RBAC table, one row per capability.
const MATRIX: &[(Permission, &str, &str, &[Role])] = &[
    (
        P::ApiKeyRead,
        "apikey.read",
        "Get the organisation API key",
        &[A],
    ),
    (
        P::ApiKeyRotate,
        "apikey.rotate",
        "Rotate the organisation API key",
        &[A],
    ),
    (
        P::PlayerKeyRead,
        "playerkey.read",
        "Get the player key",
        &[A, U, R],
    ),
    (
        P::OwnTokenRead,
        "token.read_own",
        "Get one's own user API token",
        &[A, U, R],
    ),
    (P::WebhookSet, "webhook.set", "Set a custom webhook", &[A]),
    (P::UsersRead, "users.read", "List and get users", &[A, U]),
    (P::UsersCreate, "users.create", "Create users", &[A]),
    (P::UsersInvite, "users.invite", "Invite users", &[A]),
    (
        P::UsersUpdateRole,
        "users.update_role",
        "Change a user's role",
        &[A],
    ),
    (
        P::UsersRenewToken,
        "users.renew_token",
        "Renew a user's tokenKey",
        &[A],
    ),
    (P::UsersDelete, "users.delete", "Delete users", &[A]),
    (P::AuditRead, "audit.read", "Read the audit log", &[A]),
    (
        P::OrganisationUpdate,
        "organisation.update",
        "Change the organisation's settings",
        &[A],
    ),
    (P::StreamsRead, "streams.read", "Get streams", &[A, U, R]),
    (
        P::StreamsCreate,
        "streams.create",
        "Create streams",
        &[A, U],
    ),
    (P::StreamsStop, "streams.stop", "Stop streams", &[A]),
    (
        P::StreamsLock,
        "streams.lock",
        "Lock and unlock streams",
        &[A],
    ),
    (P::StreamsDelete, "streams.delete", "Delete streams", &[A]),
    (P::TagsRead, "tags.read", "Get tags", &[A, U, R]),
    (P::TagsWrite, "tags.write", "Create and edit tags", &[A, U]),
    (P::TagsDelete, "tags.delete", "Delete tags", &[A]),
    (
        P::PlaybackTokensCreate,
        "playback_tokens.create",
        "Create playback tokens",
        &[A, U],
    ),
    (
        P::PlaybackTokensRevoke,
        "playback_tokens.revoke",
        "Revoke revocable playback tokens",
        &[A, U],
    ),
    (
        P::PlaybackKeysRotate,
        "playback_keys.rotate",
        "Rotate the key that signs playback tokens",
        &[A],
    ),
    (
        P::MetricsRead,
        "metrics.read",
        "Get metrics and alerts",
        &[A, U, R],
    ),
    (
        P::SessionsManage,
        "sessions.manage",
        "List and end other users' sessions",
        &[A],
    ),
    (
        P::UsersSuspend,
        "users.suspend",
        "Suspend and reactivate users",
        &[A],
    ),
    (
        P::ApiTokensManage,
        "api_tokens.manage",
        "List and revoke other users' API tokens",
        &[A],
    ),
    // One's own credentials: every role holds these, so a signed-in session
    // or a token of the whole role has them; a personal API token restricted
    // to some permissions has them only when it was given them.
    (
        P::SessionsManageOwn,
        "sessions.manage_own",
        "List and end one's own sessions",
        &[A, U, R],
    ),
    (
        P::ApiTokensManageOwn,
        "api_tokens.manage_own",
        "List and revoke one's own API tokens",
        &[A, U, R],
    ),
    (
        P::UsersRenewOwnToken,
        "users.renew_own_token",
        "Renew one's own tokenKey (signing oneself out everywhere)",
        &[A, U, R],
    ),
];

impl Permission {
    /// Every permission, in the matrix's order.
    pub const ALL: [Permission; 31] = [
        P::ApiKeyRead,
        P::ApiKeyRotate,
        P::PlayerKeyRead,
        P::OwnTokenRead,
        P::WebhookSet,
        P::UsersRead,
        P::UsersCreate,
        P::UsersInvite,
        P::UsersUpdateRole,
        P::UsersRenewToken,
        P::UsersDelete,
        P::AuditRead,
        P::OrganisationUpdate,
        P::StreamsRead,
        P::StreamsCreate,
        P::StreamsStop,
        P::StreamsLock,
        P::StreamsDelete,
        P::TagsRead,
        P::TagsWrite,
        P::TagsDelete,
        P::PlaybackTokensCreate,
        P::PlaybackTokensRevoke,
        P::PlaybackKeysRotate,
        P::MetricsRead,
        P::SessionsManage,
        P::UsersSuspend,
        P::ApiTokensManage,
        P::SessionsManageOwn,
        P::ApiTokensManageOwn,
        P::UsersRenewOwnToken,
    ];

    fn row(self) -> &'static (Permission, &'static str, &'static str, &'static [Role]) {
        // ALL and MATRIX list the permissions in the same order (a test checks).
        &MATRIX[self as usize]
    }

    /// The permission's stable id, e.g. `streams.create`.
    pub fn id(self) -> &'static str {
        self.row().1
    }

    pub fn description(self) -> &'static str {
        self.row().2
    }
}

/// A set of permissions, as a personal API token is restricted to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct PermissionSet(u32);

// Every permission has a bit.
const _: () = assert!(Permission::ALL.len() <= 32);

impl PermissionSet {
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << permission as u32) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset_of(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Every permission `role` holds.
    pub fn of_role(role: Role) -> Self {
        role.permissions().collect()
    }

    /// The permissions, in the matrix's order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        PermissionSet(iter.into_iter().fold(0, |bits, p| bits | (1 << p as u32)))
    }
}

/// Whether `role` holds `permission`.
pub fn granted(role: Role, permission: Permission) -> bool {
    permission.row().3.contains(&role)
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MATRIX
            .iter()
            .find(|row| row.1 == s)
            .map(|row| row.0)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_rows_are_in_the_order_of_all() {
        assert_eq!(MATRIX.len(), Permission::ALL.len());
        for (index, permission) in Permission::ALL.into_iter().enumerate() {
            assert_eq!(MATRIX[index].0, permission);
            assert_eq!(permission as usize, index);
        }
    }

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut ids: Vec<_> = Permission::ALL.iter().map(|p| p.id()).collect();
        for permission in Permission::ALL {
            assert_eq!(permission.id().parse::<Permission>().ok(), Some(permission));
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Permission::ALL.len());
    }

    #[test]
    fn permission_sets_hold_what_they_were_made_of() {
        let set: PermissionSet = [P::StreamsRead, P::TagsRead].into_iter().collect();
        assert!(set.contains(P::StreamsRead) && set.contains(P::TagsRead));
        assert!(!set.contains(P::StreamsCreate));
        assert!(set.is_subset_of(PermissionSet::of_role(R)));
        assert!(!PermissionSet::of_role(U).is_subset_of(PermissionSet::of_role(R)));
        assert!(PermissionSet::default().is_empty());
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![P::StreamsRead, P::TagsRead]
        );
        let all: PermissionSet = Permission::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), Permission::ALL.len());
    }

    #[test]
    fn matrix_matches_the_product_table() {
        // The product's RBAC table, spelled out once more as a cross-check.
        let only_admin = [
            P::ApiKeyRead,
            P::SessionsManage,
            P::UsersSuspend,
            P::ApiTokensManage,
            P::WebhookSet,
            P::UsersCreate,
            P::UsersInvite,
            P::UsersUpdateRole,
            P::UsersRenewToken,
            P::UsersDelete,
            P::StreamsStop,
            P::StreamsLock,
            P::StreamsDelete,
            P::TagsDelete,
            P::PlaybackKeysRotate,
        ];
        let admin_and_user = [
            P::UsersRead,
            P::StreamsCreate,
            P::TagsWrite,
            P::PlaybackTokensCreate,
            P::PlaybackTokensRevoke,
        ];
        let everyone = [
            P::PlayerKeyRead,
            P::OwnTokenRead,
            P::StreamsRead,
            P::TagsRead,
            P::MetricsRead,
            P::SessionsManageOwn,
            P::ApiTokensManageOwn,
            P::UsersRenewOwnToken,
        ];
        for p in only_admin {
            assert_eq!((A.can(p), U.can(p), R.can(p)), (true, false, false), "{p}");
        }
        for p in admin_and_user {
            assert_eq!((A.can(p), U.can(p), R.can(p)), (true, true, false), "{p}");
        }
        for p in everyone {
            assert_eq!((A.can(p), U.can(p), R.can(p)), (true, true, true), "{p}");
        }
        assert!(
            Permission::ALL.into_iter().all(|p| A.can(p)),
            "nanoAdmin holds everything"
        );
    }
}
