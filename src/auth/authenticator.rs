//! The per-call check: who is calling, checked against the database now.
//! (The write path checks the caller again at commit: `store::write`.)
//! The same check answers `AuthService.Authorize` for internal services.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::access::{self, Access};
use super::opaque;
use super::principal::{Actor, Principal};
use super::tokens::AccessTokens;
use super::usage::ApiTokenUsage;
use crate::domain::actor::Proof;
use crate::domain::error::AuthFailure;
use crate::domain::permission::PermissionSet;
use crate::domain::{DomainError, Permission};
use crate::store::Store;

pub const BEARER_HEADER: &str = crate::proto::metadata::BEARER;
pub const BINTU_TOKEN_HEADER: &str = crate::proto::metadata::BINTU_TOKEN;
pub const API_KEY_HEADER: &str = crate::proto::metadata::API_KEY;
pub const SERVICE_KEY_HEADER: &str = crate::proto::metadata::SERVICE_KEY;

/// A credential as presented, before it is checked. `Debug` hides the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    AccessToken(&'a str),
    ApiKey(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

/// A registered internal service, as established for a call.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCaller {
    pub name: String,
    /// The SHA-256 of the key the call presented: a long call (a change feed
    /// watch) ends when that key stops working, even if a service of the
    /// same name is registered again with another.
    pub key_hash: Vec<u8>,
}

impl std::fmt::Debug for ServiceCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCaller")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who a call was admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    Anonymous,
    Principal(Principal),
    Service(ServiceCaller),
}

/// The answer to "may this credential do this now?". Infrastructure
/// failures (no database) are errors instead: the check fails closed.
#[derive(Debug)]
pub enum Verdict {
    Allowed(Principal),
    Denied {
        /// Who the credential stands for, when it is valid at all.
        principal: Option<Principal>,
        reason: DomainError,
    },
}

/// Establishes callers from the credentials of every call.
pub struct Authenticator {
    tokens: Arc<AccessTokens>,
    store: Store,
    usage: Arc<ApiTokenUsage>,
}

impl Authenticator {
    pub fn new(tokens: Arc<AccessTokens>, store: Store) -> Self {
        Self {
            tokens,
            store,
            usage: Arc::default(),
        }
    }

    /// Where the uses of personal API tokens are noted, for the task that
    /// writes them.
    pub fn api_token_usage(&self) -> Arc<ApiTokenUsage> {
        Arc::clone(&self.usage)
    }

    /// Admits a call to `path`, or says why not, by the RPC's access rule.
    pub async fn admit(&self, path: &str, headers: &HeaderMap) -> Result<Admitted, DomainError> {
        let Some(rule) = access::rule_for(path) else {
            return Err(DomainError::Unimplemented(format!(
                "no such method: {path}"
            )));
        };
        match rule {
            Access::Public => return Ok(Admitted::Anonymous),
            Access::Service => {
                return self
                    .authenticate_service(headers)
                    .await
                    .map(Admitted::Service);
            }
            Access::MemberOrService if headers.contains_key(SERVICE_KEY_HEADER) => {
                return self
                    .authenticate_service(headers)
                    .await
                    .map(Admitted::Service);
            }
            Access::Authenticated
            | Access::OwnOr(..)
            | Access::Permission(_)
            | Access::MemberOrService => {}
        }
        let credential = credential_from_headers(headers)
            .map_err(DomainError::Unauthenticated)?
            .ok_or(DomainError::Unauthenticated(
                AuthFailure::MissingCredentials,
            ))?;
        let principal = self.authenticate(credential).await?;
        admitted_under(rule, principal)
    }

    /// The one authorization check: the credential is valid now, belongs to
    /// `organisation_id` (when given) and its current role holds `permission`
    /// (when given).
    pub async fn authorize(
        &self,
        credential: Credential<'_>,
        permission: Option<Permission>,
        organisation_id: Option<Uuid>,
    ) -> Result<Verdict, DomainError> {
        let principal = match self.authenticate(credential).await {
            Ok(principal) => principal,
            Err(reason @ DomainError::Unauthenticated(_)) => {
                return Ok(Verdict::Denied {
                    principal: None,
                    reason,
                });
            }
            Err(failure) => return Err(failure),
        };
        Ok(decide(principal, permission, organisation_id))
    }

    /// Like [`Self::authorize`] for several permissions: one authentication,
    /// the same decision for each.
    pub async fn authorize_each(
        &self,
        credential: Credential<'_>,
        permissions: &[Permission],
        organisation_id: Option<Uuid>,
    ) -> Result<Vec<Verdict>, DomainError> {
        match self.authenticate(credential).await {
            Ok(principal) => Ok(permissions
                .iter()
                .map(|permission| decide(principal.clone(), Some(*permission), organisation_id))
                .collect()),
            Err(DomainError::Unauthenticated(failure)) => Ok(permissions
                .iter()
                .map(|_| Verdict::Denied {
                    principal: None,
                    reason: DomainError::Unauthenticated(failure),
                })
                .collect()),
            Err(failure) => Err(failure),
        }
    }

    /// Checks a credential against the database's current state. An access
    /// token must be genuine and unexpired, its user must still exist,
    /// active, with the same tokenKey, and its session must be live; the role
    /// is the user's current one, never the token's. A personal API token
    /// (`umt_…`, presented like an access token) must be unrevoked and
    /// unexpired and its user active with the tokenKey it was created under.
    /// An API key must be its organisation's current key.
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, DomainError> {
        match credential {
            Credential::AccessToken(token) if token.starts_with(opaque::API_TOKEN_PREFIX) => {
                self.authenticate_api_token(token).await
            }
            Credential::AccessToken(token) => self.authenticate_token(token).await,
            Credential::ApiKey(key) => self.authenticate_api_key(key).await,
        }
    }

    /// A personal API token is looked up by its SHA-256, like an API key.
    async fn authenticate_api_token(&self, token: &str) -> Result<Principal, DomainError> {
        if !opaque::well_formed(token, opaque::API_TOKEN_PREFIX) {
            return Err(DomainError::Unauthenticated(
                AuthFailure::MalformedCredentials,
            ));
        }
        let check = self
            .store
            .working_api_token(&opaque::hash(token))
            .await?
            .ok_or(DomainError::Unauthenticated(AuthFailure::ApiTokenInvalid))?;
        let user = self
            .store
            .current_user(check.organisation_id, check.user_id)
            .await?
            .filter(|user| user.is_active())
            .filter(|user| bool::from(user.token_key.as_bytes().ct_eq(check.token_key.as_bytes())))
            .ok_or(DomainError::Unauthenticated(AuthFailure::TokenRevoked))?;
        self.usage.touch(check.id);
        Ok(Principal {
            organisation_id: check.organisation_id,
            role: user.role,
            actor: Actor::User(check.user_id),
            proof: Proof::ApiToken {
                token_key: check.token_key,
                token_id: check.id,
            },
            user: Some(user),
            restriction: check.permissions,
            access: Access::Authenticated,
        })
    }

    async fn authenticate_token(&self, token: &str) -> Result<Principal, DomainError> {
        let claims = self
            .tokens
            .verify(token)
            .map_err(DomainError::Unauthenticated)?;
        let revoked = DomainError::Unauthenticated(AuthFailure::TokenRevoked);
        let (user, session) = tokio::try_join!(
            self.store
                .current_user(claims.organisation_id, claims.user_id),
            self.store
                .live_session(claims.organisation_id, claims.session_id),
        )?;
        let (Some(user), Some(session)) = (user.filter(|user| user.is_active()), session) else {
            return Err(revoked);
        };
        let same_key = user.token_key.as_bytes().ct_eq(claims.token_key.as_bytes())
            & session
                .token_key
                .as_bytes()
                .ct_eq(claims.token_key.as_bytes());
        if !bool::from(same_key) || session.user_id != claims.user_id {
            return Err(revoked);
        }
        Ok(Principal {
            organisation_id: claims.organisation_id,
            role: user.role,
            actor: Actor::User(claims.user_id),
            proof: Proof::Session {
                token_key: claims.token_key,
                session_id: claims.session_id,
            },
            user: Some(user),
            restriction: PermissionSet::default(),
            access: Access::Authenticated,
        })
    }

    /// The key is looked up by its SHA-256: the lookup compares hashes, not
    /// the key, so its timing tells nothing about the key.
    async fn authenticate_api_key(&self, key: &str) -> Result<Principal, DomainError> {
        if !opaque::well_formed(key, opaque::API_KEY_PREFIX) {
            return Err(DomainError::Unauthenticated(
                AuthFailure::MalformedCredentials,
            ));
        }
        let hash = opaque::hash(key);
        let organisation_id = self
            .store
            .organisation_by_api_key(&hash)
            .await?
            .ok_or(DomainError::Unauthenticated(AuthFailure::ApiKeyInvalid))?;
        Ok(Principal {
            organisation_id,
            role: crate::domain::Role::NanoAdmin,
            actor: Actor::ApiKey(opaque::fingerprint(&hash)),
            proof: Proof::ApiKey(hash),
            user: None,
            restriction: PermissionSet::default(),
            access: Access::Authenticated,
        })
    }

    async fn authenticate_service(
        &self,
        headers: &HeaderMap,
    ) -> Result<ServiceCaller, DomainError> {
        let mut values = headers.get_all(SERVICE_KEY_HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(DomainError::Unauthenticated(
                AuthFailure::ServiceCredentialsMissing,
            ));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| opaque::well_formed(key, opaque::SERVICE_KEY_PREFIX))
            .ok_or(DomainError::Unauthenticated(
                AuthFailure::ServiceCredentialsInvalid,
            ))?;
        let key_hash = opaque::hash(key);
        let name =
            self.store
                .service_by_key(&key_hash)
                .await?
                .ok_or(DomainError::Unauthenticated(
                    AuthFailure::ServiceCredentialsInvalid,
                ))?;
        Ok(ServiceCaller { name, key_hash })
    }
}

/// A caller admitted to an RPC under `rule` when its role holds what the
/// rule asks at admission; the principal carries the rule, so that the write
/// path re-checks the same permission at commit.
fn admitted_under(rule: Access, principal: Principal) -> Result<Admitted, DomainError> {
    match decide(principal, rule.permission_at_admission(), None) {
        Verdict::Allowed(principal) => Ok(Admitted::Principal(Principal {
            access: rule,
            ..principal
        })),
        Verdict::Denied { reason, .. } => Err(reason),
    }
}

/// Whether an authenticated principal may act: in the organisation asked
/// about, with a role that holds the permission.
fn decide(
    principal: Principal,
    permission: Option<Permission>,
    organisation_id: Option<Uuid>,
) -> Verdict {
    let refusal = match (organisation_id, permission) {
        (Some(organisation_id), _) if organisation_id != principal.organisation_id => {
            Some(DomainError::WrongOrganisation)
        }
        (_, Some(permission)) => principal.require(permission).err(),
        _ => None,
    };
    match refusal {
        None => Verdict::Allowed(principal),
        Some(reason) => Verdict::Denied {
            principal: Some(principal),
            reason,
        },
    }
}

/// The one credential of a call, from its metadata: `authorization: Bearer`,
/// `x-bintu-token` or `x-bintu-apikey`. Two credentials, or one that is not
/// well formed, are refused rather than guessed at.
pub fn credential_from_headers(headers: &HeaderMap) -> Result<Option<Credential<'_>>, AuthFailure> {
    let mut found = None;
    for value in headers.get_all(BEARER_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| AuthFailure::MalformedCredentials)?;
        let (scheme, token) = text
            .split_once(' ')
            .ok_or(AuthFailure::MalformedCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::MalformedCredentials);
        }
        found = one_more(found, Credential::AccessToken(non_empty(token)?))?;
    }
    for value in headers.get_all(BINTU_TOKEN_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| AuthFailure::MalformedCredentials)?;
        found = one_more(found, Credential::AccessToken(non_empty(text)?))?;
    }
    for value in headers.get_all(API_KEY_HEADER) {
        let text = value
            .to_str()
            .map_err(|_| AuthFailure::MalformedCredentials)?;
        found = one_more(found, Credential::ApiKey(non_empty(text)?))?;
    }
    Ok(found)
}

fn one_more<'a>(
    found: Option<Credential<'a>>,
    next: Credential<'a>,
) -> Result<Option<Credential<'a>>, AuthFailure> {
    match found {
        None => Ok(Some(next)),
        Some(_) => Err(AuthFailure::AmbiguousCredentials),
    }
}

fn non_empty(token: &str) -> Result<&str, AuthFailure> {
    let token = token.trim();
    if token.is_empty() {
        Err(AuthFailure::MalformedCredentials)
    } else {
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("test header"));
        }
        map
    }

    #[test]
    fn reads_one_credential_from_any_of_its_headers() {
        let bearer = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(
            credential_from_headers(&bearer),
            Ok(Some(Credential::AccessToken("abc")))
        );
        let bintu = headers(&[("x-bintu-token", "abc")]);
        assert_eq!(
            credential_from_headers(&bintu),
            Ok(Some(Credential::AccessToken("abc")))
        );
        let key = headers(&[("x-bintu-apikey", "um_live_abc")]);
        assert_eq!(
            credential_from_headers(&key),
            Ok(Some(Credential::ApiKey("um_live_abc")))
        );
        assert_eq!(credential_from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn refuses_two_or_malformed_credentials() {
        for two in [
            headers(&[("authorization", "Bearer a"), ("x-bintu-token", "b")]),
            headers(&[
                ("authorization", "Bearer a"),
                ("x-bintu-apikey", "um_live_b"),
            ]),
            headers(&[
                ("x-bintu-apikey", "um_live_a"),
                ("x-bintu-apikey", "um_live_b"),
            ]),
        ] {
            assert_eq!(
                credential_from_headers(&two),
                Err(AuthFailure::AmbiguousCredentials)
            );
        }
        for bad in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            let map = headers(&[("authorization", bad)]);
            assert_eq!(
                credential_from_headers(&map),
                Err(AuthFailure::MalformedCredentials),
                "{bad}"
            );
        }
    }

    fn member(role: crate::domain::Role) -> Principal {
        let user_id = Uuid::from_u128(7);
        Principal {
            organisation_id: Uuid::from_u128(1),
            role,
            actor: Actor::User(user_id),
            proof: Proof::Session {
                token_key: Uuid::from_u128(2),
                session_id: Uuid::from_u128(3),
            },
            user: None,
            restriction: PermissionSet::default(),
            access: Access::Authenticated,
        }
    }

    /// The permission a refusal names (PERMISSION_DENIED only).
    fn denied(refusal: DomainError) -> Permission {
        match refusal {
            DomainError::PermissionDenied(permission) => permission,
            other => panic!("refused otherwise than for a permission: {other:?}"),
        }
    }

    /// What a caller admitted under `rule` may do: refused at the door for a
    /// permission, or admitted with the one its changes are re-checked with.
    fn admission(
        rule: Access,
        role: crate::domain::Role,
    ) -> Result<Option<Permission>, Permission> {
        match admitted_under(rule, member(role)).map_err(denied)? {
            Admitted::Principal(principal) => Ok(principal.change(None).permission),
            other => panic!("a credential admitted as {other:?}"),
        }
    }

    #[test]
    fn every_rule_is_the_permission_of_both_admission_and_the_commit_recheck() {
        use crate::domain::Role;
        for (rpc, rule) in access::RULES {
            let Some(permission) = rule.permission() else {
                continue;
            };
            for role in Role::ALL {
                match (rule, admission(*rule, role)) {
                    (Access::Permission(_), Err(refusal)) => {
                        assert!(!role.can(permission), "{rpc}: {role} refused");
                        assert_eq!(refusal, permission);
                    }
                    (_, Ok(rechecked)) => {
                        assert_eq!(rechecked, Some(permission), "{rpc}: {role}");
                    }
                    (_, Err(refusal)) => panic!("{rpc}: {role} refused at the door for {refusal}"),
                }
            }
        }
    }

    #[test]
    fn editing_one_rule_changes_admission_and_the_commit_recheck_together() {
        use crate::domain::Role;
        let path = "/usermgmt.v1.UserService/UpdateUserRole";
        let rule = access::rule_for(path).expect("UpdateUserRole has a rule");
        assert_eq!(rule, Access::Permission(Permission::UsersUpdateRole));
        assert_eq!(
            admission(rule, Role::NanoUser),
            Err(Permission::UsersUpdateRole)
        );
        assert_eq!(
            admission(rule, Role::NanoAdmin),
            Ok(Some(Permission::UsersUpdateRole))
        );
        // The same entry, edited: both the door and the commit follow.
        let edited = Access::Permission(Permission::UsersRead);
        assert_eq!(
            admission(edited, Role::NanoUser),
            Ok(Some(Permission::UsersRead))
        );
        assert_eq!(
            admission(edited, Role::NanoAdmin),
            Ok(Some(Permission::UsersRead))
        );
    }

    #[test]
    fn own_or_rules_need_their_own_permission_for_ones_own_and_the_other_for_anothers() {
        use crate::domain::Role;
        let rule = access::rule_for("/usermgmt.v1.SessionService/RevokeSession")
            .expect("RevokeSession has a rule");
        let Ok(Admitted::Principal(caller)) = admitted_under(rule, member(Role::NanoReadOnly))
        else {
            panic!("one's own sessions are open to every role");
        };
        let change_on = |caller: &Principal, owner: u128| {
            caller
                .change_on(Uuid::from_u128(owner), None)
                .map(|ctx| ctx.permission)
                .map_err(denied)
        };
        assert_eq!(
            change_on(&caller, 7),
            Ok(Some(Permission::SessionsManageOwn))
        );
        assert_eq!(change_on(&caller, 8), Err(Permission::SessionsManage));
        let Ok(Admitted::Principal(admin)) = admitted_under(rule, member(Role::NanoAdmin)) else {
            panic!("an admin is admitted");
        };
        assert_eq!(change_on(&admin, 8), Ok(Some(Permission::SessionsManage)));
    }

    /// `member(role)` calling with a personal API token restricted to
    /// `granted`.
    fn token_of(role: crate::domain::Role, granted: &[Permission]) -> Principal {
        Principal {
            proof: Proof::ApiToken {
                token_key: Uuid::from_u128(2),
                token_id: Uuid::from_u128(4),
            },
            restriction: granted.iter().copied().collect(),
            ..member(role)
        }
    }

    /// The own-credential RPCs: ListSessions, RevokeSession, ListApiTokens,
    /// RevokeApiToken and RenewTokenKey. Each needs its own permission for
    /// one's own, which every role holds (a session and a token of the whole
    /// role are allowed, and the commit re-checks that permission), and
    /// which a restricted token holds only when granted at creation.
    #[test]
    fn a_restricted_token_touches_its_users_credentials_only_when_granted() {
        use crate::domain::Role;
        let own_rules: Vec<_> = access::RULES
            .iter()
            .filter_map(|(rpc, rule)| match rule {
                Access::OwnOr(own, _) => Some((*rpc, *rule, *own)),
                _ => None,
            })
            .collect();
        let names: Vec<_> = own_rules
            .iter()
            .map(|(rpc, ..)| rpc.rsplit('/').next().unwrap_or(rpc))
            .collect();
        assert_eq!(
            names,
            [
                "ListSessions",
                "RevokeSession",
                "ListApiTokens",
                "RevokeApiToken",
                "RenewTokenKey"
            ]
        );
        let me = Uuid::from_u128(7);
        for (rpc, rule, own) in own_rules {
            for role in Role::ALL {
                assert!(role.can(own), "{rpc}: {role} holds {own}");
                let callers = [
                    ("a session", member(role), true),
                    ("a whole-role token", token_of(role, &[]), true),
                    (
                        "a token for streams.read",
                        token_of(role, &[Permission::StreamsRead]),
                        false,
                    ),
                    (
                        "a token granted it",
                        token_of(role, &[Permission::StreamsRead, own]),
                        true,
                    ),
                ];
                for (what, principal, allowed) in callers {
                    let Ok(Admitted::Principal(caller)) = admitted_under(rule, principal) else {
                        panic!("{rpc}: {what} of {role} is admitted, the owner unknown yet");
                    };
                    let decided = caller
                        .change_on(me, None)
                        .map(|ctx| ctx.permission)
                        .map_err(denied);
                    let expected = if allowed { Ok(Some(own)) } else { Err(own) };
                    assert_eq!(decided, expected, "{rpc}: {what} of {role}");
                    assert_eq!(
                        caller.may_act_on(me).map_err(denied),
                        expected.map(|_| ()),
                        "{rpc}: {what} of {role}"
                    );
                }
            }
        }
    }
}
