//! The per-call check: who is calling, checked against the database now.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::access::{self, Access};
use super::opaque;
use super::passwords::Passwords;
use super::principal::{Actor, Principal};
use super::tokens::{AccessTokens, IssuedToken, TokenClaims};
use crate::domain::error::AuthFailure;
use crate::domain::{DomainError, email::Email};
use crate::store::Store;

pub const BEARER_HEADER: &str = "authorization";
pub const BINTU_TOKEN_HEADER: &str = "x-bintu-token";

/// A credential as presented, before it is checked. `Debug` hides the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    AccessToken(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
        }
    }
}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub token: IssuedToken,
}

/// Establishes callers: from credentials on every call, and from passwords
/// at login.
pub struct Authenticator {
    tokens: Arc<AccessTokens>,
    passwords: Passwords,
    store: Store,
}

impl Authenticator {
    pub fn new(tokens: Arc<AccessTokens>, passwords: Passwords, store: Store) -> Self {
        Self {
            tokens,
            passwords,
            store,
        }
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Admits a call to `path`, or says why not. Public RPCs get `None`;
    /// every other call gets the caller, whose current role holds what the
    /// RPC's rule asks for.
    pub async fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(rule) = access::rule_for(path) else {
            return Err(DomainError::Unimplemented(format!(
                "no such method: {path}"
            )));
        };
        if rule == Access::Public {
            return Ok(None);
        }
        let credential = credential_from_headers(headers)
            .map_err(DomainError::Unauthenticated)?
            .ok_or(DomainError::Unauthenticated(
                AuthFailure::MissingCredentials,
            ))?;
        let principal = self.authenticate(credential).await?;
        if let Access::Permission(permission) = rule {
            principal.require(permission)?;
        }
        Ok(Some(principal))
    }

    /// Checks a credential against the database's current state: the token
    /// must be genuine and unexpired, and its user must still exist with the
    /// same tokenKey. The role is the user's current one, never the token's.
    pub async fn authenticate(&self, credential: Credential<'_>) -> Result<Principal, DomainError> {
        match credential {
            Credential::AccessToken(token) => self.authenticate_token(token).await,
        }
    }

    async fn authenticate_token(&self, token: &str) -> Result<Principal, DomainError> {
        let claims = self
            .tokens
            .verify(token)
            .map_err(DomainError::Unauthenticated)?;
        let current = self
            .store
            .current_credential(claims.organisation_id, claims.user_id)
            .await?;
        let revoked = DomainError::Unauthenticated(AuthFailure::TokenRevoked);
        let Some((role, token_key)) = current else {
            return Err(revoked);
        };
        if !bool::from(token_key.as_bytes().ct_eq(claims.token_key.as_bytes())) {
            return Err(revoked);
        }
        Ok(Principal {
            organisation_id: claims.organisation_id,
            role,
            actor: Actor::User(claims.user_id),
        })
    }

    /// Joins the invite's organisation as a new user and signs them in.
    pub async fn accept_invite(
        &self,
        invite_token: &str,
        password: &str,
        request_id: Option<String>,
    ) -> Result<LoggedIn, DomainError> {
        let invalid = DomainError::Unauthenticated(AuthFailure::InviteInvalid);
        if !opaque::well_formed(invite_token, opaque::INVITE_PREFIX) {
            return Err(invalid);
        }
        let token_hash = opaque::hash(invite_token);
        // Checked before the costly hashing, and again in the transaction.
        if !self.store.invite_pending(&token_hash).await? {
            return Err(invalid);
        }
        let password_hash = self.passwords.hash(password).await?;
        let user = self
            .store
            .accept_invite(&token_hash, &password_hash, request_id)
            .await?;
        self.logged_in(user.id, user.organisation_id, user.token_key)
    }

    fn logged_in(
        &self,
        user_id: Uuid,
        organisation_id: Uuid,
        token_key: Uuid,
    ) -> Result<LoggedIn, DomainError> {
        let token = self
            .tokens
            .issue(TokenClaims {
                user_id,
                organisation_id,
                token_key,
            })
            .map_err(|e| DomainError::Internal(format!("signing a token: {e}")))?;
        Ok(LoggedIn {
            user_id,
            organisation_id,
            token,
        })
    }

    /// Signs a user in. An unknown email and a wrong password fail alike and
    /// cost about the same time.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        organisation_id: Option<Uuid>,
    ) -> Result<LoggedIn, DomainError> {
        let candidates = self
            .store
            .login_candidates(email.as_str(), organisation_id)
            .await?;
        if candidates.is_empty() {
            self.passwords.verify_decoy(password).await?;
            return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin));
        }
        let mut matches = Vec::new();
        for candidate in candidates {
            if self
                .passwords
                .verify(password, &candidate.password_hash)
                .await?
            {
                matches.push(candidate);
            }
        }
        let user = match matches.len() {
            0 => return Err(DomainError::Unauthenticated(AuthFailure::InvalidLogin)),
            1 => matches.remove(0),
            _ => {
                return Err(DomainError::FailedPrecondition {
                    reason: "ORGANISATION_REQUIRED",
                    message: "this email signs in to several organisations: give organisation_id"
                        .into(),
                });
            }
        };
        self.logged_in(user.id, user.organisation_id, user.token_key)
    }
}

/// The one credential of a call, from its metadata: `authorization: Bearer`
/// or `x-bintu-token`. Two credentials, or one that is not well formed, are
/// refused rather than guessed at.
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
    fn reads_one_credential_from_either_header() {
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
        assert_eq!(credential_from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn refuses_two_or_malformed_credentials() {
        let two = headers(&[("authorization", "Bearer a"), ("x-bintu-token", "b")]);
        assert_eq!(
            credential_from_headers(&two),
            Err(AuthFailure::AmbiguousCredentials)
        );
        for bad in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            let map = headers(&[("authorization", bad)]);
            assert_eq!(
                credential_from_headers(&map),
                Err(AuthFailure::MalformedCredentials),
                "{bad}"
            );
        }
    }
}
