//! Issuing, verifying and revoking playback tokens, and rotating the keys
//! that sign them. A verification never looks at the issuer: a playback
//! token outlives its issuer's role changes, tokenKey renewals and deletion.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::playback::{
    self as format, PlaybackClaims, ScopeClaim, TokenHeader, VerifyingKey, read_header,
};
use crate::domain::DomainError;
use crate::domain::playback::{Grant, KeyValidity, SigningAlgorithm, VerifyFailure, check_window};
use crate::store::Store;
/// A signing key's public half, as edge servers are given it.
pub use crate::store::models::PublicKeyRow as PublishedKey;
use crate::store::playback::{self as records, NewPlaybackToken, NewSigningKey};
use crate::store::write::{Change, OrgLock};

/// Settings of playback tokens.
#[derive(Debug, Clone)]
pub struct PlaybackSettings {
    /// The lifetime of a token whose request sets no `exp`.
    pub default_ttl: std::time::Duration,
}

/// A freshly issued token. `Debug` does not show the token.
pub struct Issued {
    pub token: String,
    pub token_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub kid: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("kid", &self.kid)
            .finish()
    }
}

/// The outcome of a verification: the claims once the signature verified,
/// and why the token is not valid, if it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub claims: Option<(PlaybackClaims, String)>,
    pub failure: Option<VerifyFailure>,
}

impl Verdict {
    fn refused(failure: VerifyFailure) -> Self {
        Verdict {
            claims: None,
            failure: Some(failure),
        }
    }
}

/// Which token to revoke.
pub enum RevokeTarget {
    Token(String),
    TokenId(Uuid),
}

pub struct PlaybackTokens {
    store: Store,
}

impl PlaybackTokens {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Issues a token in the caller's (secure) organisation, recorded and
    /// audited before it is signed.
    pub async fn issue(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        grant: Grant,
    ) -> Result<Issued, DomainError> {
        let ctx = caller.change(request_id);
        let jti = Uuid::new_v4();
        let scope = grant.scope.to_string();
        let record = NewPlaybackToken {
            jti,
            revocable: grant.revocable,
            scope: &scope,
            expires_at: grant.window.exp,
        };
        let key = self
            .store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let keyring = self.store.keyring();
                let (key, audits) = records::record_token(conn, keyring, &ctx, record, || {
                    new_signing_key(SigningAlgorithm::EdDsa)
                })
                .await?;
                Ok(Change::unchanged(key).and_all(audits))
            })
            .await?;
        let claims = PlaybackClaims {
            org: caller.organisation_id,
            sub: ctx.actor.to_string(),
            jti,
            iat: Utc::now().timestamp(),
            nbf: grant.window.nbf.timestamp(),
            exp: grant.window.exp.timestamp(),
            scope: ScopeClaim::from(&grant.scope),
            revocable: grant.revocable,
            force_disconnect: grant.force_disconnect,
            domain: grant.restrictions.domain,
            ip: grant.restrictions.ip,
            tag: grant.restrictions.tag,
            user: grant.restrictions.user,
        };
        let token = format::sign(&claims, &key.kid, key.alg.parse()?, &key.private_key)?;
        Ok(Issued {
            token,
            token_id: jti,
            expires_at: grant.window.exp,
            kid: key.kid,
        })
    }

    /// Checks signature, time window, revocation and scope, in that order.
    pub async fn verify(
        &self,
        token: &str,
        stream: &str,
        group_id: &str,
    ) -> Result<Verdict, DomainError> {
        let (claims, kid) = match self.verified_claims(token).await? {
            Ok(verified) => verified,
            Err(failure) => return Ok(Verdict::refused(failure)),
        };
        let failure = self.failure(&claims, stream, group_id).await?;
        Ok(Verdict {
            claims: Some((claims, kid)),
            failure,
        })
    }

    /// The claims of a token whose signature verifies, or why not.
    async fn verified_claims(
        &self,
        token: &str,
    ) -> Result<Result<(PlaybackClaims, String), VerifyFailure>, DomainError> {
        let header: TokenHeader = match read_header(token) {
            Ok(header) => header,
            Err(failure) => return Ok(Err(failure)),
        };
        let Some((key, validity)) = self.key(&header.kid).await? else {
            return Ok(Err(VerifyFailure::UnknownKid));
        };
        if let Err(failure) = validity.check_key(Utc::now()) {
            return Ok(Err(failure));
        }
        let claims = match key.verify(token, &header) {
            Ok(claims) => claims,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(validity
            .check_expiry(claims.exp)
            .map(|()| (claims, header.kid)))
    }

    async fn failure(
        &self,
        claims: &PlaybackClaims,
        stream: &str,
        group_id: &str,
    ) -> Result<Option<VerifyFailure>, DomainError> {
        let window = match claims.window() {
            Ok(window) => window,
            Err(failure) => return Ok(Some(failure)),
        };
        if let Err(failure) = check_window(Utc::now(), window) {
            return Ok(Some(failure));
        }
        // Only revocable tokens can be on the list. One not on record at all
        // counts as revoked: fail closed.
        if claims.revocable && self.store.playback_token_revoked(claims.jti).await? != Some(false) {
            return Ok(Some(VerifyFailure::Revoked));
        }
        if !claims.scope().allows(stream, group_id) {
            return Ok(Some(VerifyFailure::WrongStream));
        }
        Ok(None)
    }

    /// The verifying key `kid` and until when it verifies, as the store
    /// (its cache, which a change of the key evicts on every replica) has it.
    async fn key(&self, kid: &str) -> Result<Option<(VerifyingKey, KeyValidity)>, DomainError> {
        let Some(row) = self.store.playback_public_key(kid).await? else {
            return Ok(None);
        };
        let validity = KeyValidity {
            revoked: row.revoked_at.is_some(),
            verify_until: row.verify_until,
        };
        let key = VerifyingKey::new(
            row.kid.clone(),
            row.organisation_id,
            row.alg.parse()?,
            &row.public_key,
        )?;
        Ok(Some((key, validity)))
    }

    /// Revokes a revocable token of the caller's organisation.
    pub async fn revoke(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        target: RevokeTarget,
    ) -> Result<(Uuid, DateTime<Utc>), DomainError> {
        let jti = match target {
            RevokeTarget::TokenId(jti) => jti,
            RevokeTarget::Token(token) => match self.verified_claims(&token).await? {
                Ok((claims, _)) => claims.jti,
                Err(_) => {
                    return Err(DomainError::invalid(
                        "token",
                        "is not a playback token of this service",
                    ));
                }
            },
        };
        let ctx = caller.change(request_id);
        let organisation_id = ctx.organisation_id;
        let revoked_at = self
            .store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let (revoked_at, audit) = records::revoke_token(conn, organisation_id, jti).await?;
                Ok(Change::unchanged(revoked_at).and_all(audit))
            })
            .await?;
        Ok((jti, revoked_at))
    }

    /// Makes a new key of `alg` (by default the current key's algorithm)
    /// the caller's organisation's signing key; with `revoke_previous`, the
    /// previous keys verify nothing on any replica once this returns.
    pub async fn rotate(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        alg: Option<SigningAlgorithm>,
        revoke_previous: bool,
    ) -> Result<(PublishedKey, Option<String>), DomainError> {
        let alg = match alg {
            Some(alg) => alg,
            None => self
                .store
                .current_signing_algorithm(caller.organisation_id)
                .await?
                .unwrap_or(SigningAlgorithm::EdDsa),
        };
        // RSA key generation takes a good while: off the async runtime.
        let key = tokio::task::spawn_blocking(move || new_signing_key(alg))
            .await
            .map_err(|e| DomainError::Internal(format!("key generation task: {e}")))??;
        let ctx = caller.change(request_id);
        let organisation_id = ctx.organisation_id;
        self.store
            .write(&ctx, OrgLock::Exclusive, async |conn| {
                let (new, retired, audits) = records::rotate_key(
                    conn,
                    self.store.keyring(),
                    organisation_id,
                    &key,
                    revoke_previous,
                )
                .await?;
                // The previous key's row changed: replicas evict it.
                Ok(Change::unchanged((new, retired)).and_all(audits).settling())
            })
            .await
    }

    /// The public keys edge servers need: every key that still verifies.
    pub async fn published_keys(&self) -> Result<Vec<PublishedKey>, DomainError> {
        self.store.verifying_keys().await
    }
}

fn new_signing_key(alg: SigningAlgorithm) -> Result<NewSigningKey, DomainError> {
    let material = format::generate_key(alg)?;
    Ok(NewSigningKey {
        kid: format::new_kid(),
        alg,
        private_der: material.private_der,
        public_key: material.public_key,
    })
}
