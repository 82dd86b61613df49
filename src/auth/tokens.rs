//! Access tokens: HS256 JWTs that carry the user's tokenKey.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sha2::{Digest as _, Sha256};

use crate::bounded_cache::{CountedCache, ENTRY_OVERHEAD};
use crate::domain::error::AuthFailure;
use crate::store::stats::CacheKind;

/// Tokens longer than this are refused before any parsing or crypto.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: Uuid,
    org: Uuid,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: Uuid,
    /// The id of the user's tokenKey at issue time.
    tkey: Uuid,
    /// The session the token belongs to.
    sid: Uuid,
}

/// What a verified token says; still to be checked against the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub token_key: Uuid,
    pub session_id: Uuid,
}

/// A freshly issued token. `Debug` does not show the token.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub lifetime: Duration,
}

/// Issues and verifies access tokens with one HS256 key.
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: TokenSettings,
    /// Tokens whose signature and claims were verified, by the SHA-256 of
    /// the token, with their expiry: the same string verifies the same way
    /// under the same key, so only the time window is checked again. Saves
    /// the JSON work of every call but a token's first.
    verified: VerifiedTokens,
    /// Unix seconds now; a test sets its own clock.
    clock: fn() -> i64,
}

type VerifiedTokens =
    CountedCache<[u8; 32], (TokenClaims, i64), quick_cache::UnitWeighter, CacheKind>;

/// The estimated bytes of one remembered token: its hash, its claims and
/// expiry, and the map's bookkeeping.
const VERIFIED_ENTRY_BYTES: u64 =
    (32 + std::mem::size_of::<(TokenClaims, i64)>() + ENTRY_OVERHEAD) as u64;

fn verified_tokens(max_bytes: u64) -> VerifiedTokens {
    let capacity = (max_bytes / VERIFIED_ENTRY_BYTES).max(16);
    CountedCache::new(
        CacheKind::VerifiedTokens,
        capacity,
        1,
        quick_cache::UnitWeighter,
    )
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("key", &"<redacted>")
            .field("settings", &self.settings)
            .finish()
    }
}

impl AccessTokens {
    /// Tokens signed with `secret`, remembering verified tokens in at most
    /// `verified_max_bytes`.
    pub fn new(
        secret: &[u8],
        settings: TokenSettings,
        verified_max_bytes: u64,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            settings,
            verified: verified_tokens(verified_max_bytes),
            clock: || Utc::now().timestamp(),
        })
    }

    pub fn issue(&self, claims: TokenClaims) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        self.issue_until(claims, None)
    }

    /// Issues a token that expires after the configured lifetime, or at
    /// `not_after` when that comes first (its session's end).
    pub fn issue_until(
        &self,
        claims: TokenClaims,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = Utc::now();
        let lifetime = chrono::Duration::from_std(self.settings.lifetime)
            .unwrap_or(chrono::Duration::hours(1));
        let full = now.checked_add_signed(lifetime).unwrap_or(now);
        let expires_at = not_after.map_or(full, |cap| cap.min(full));
        let body = Claims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: claims.user_id,
            org: claims.organisation_id,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4(),
            tkey: claims.token_key,
            sid: claims.session_id,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &self.encoding)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Checks signature, algorithm, time window, issuer and audience.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthFailure> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::MalformedCredentials);
        }
        let now = (self.clock)();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((claims, expires)) = self.verified.get(&digest, |_| true) {
            // As jsonwebtoken checks it, with no leeway.
            return if expires < now {
                Err(AuthFailure::TokenExpired)
            } else {
                Ok(claims)
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::TokenExpired,
                _ => AuthFailure::InvalidToken,
            })?;
        let claims = TokenClaims {
            user_id: data.claims.sub,
            organisation_id: data.claims.org,
            token_key: data.claims.tkey,
            session_id: data.claims.sid,
        };
        self.verified.insert(digest, (claims, data.claims.exp));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    /// The test's clock: 0 means the real time.
    static NOW: AtomicI64 = AtomicI64::new(0);

    fn test_clock() -> i64 {
        match NOW.load(Ordering::SeqCst) {
            0 => Utc::now().timestamp(),
            set => set,
        }
    }

    fn tokens() -> AccessTokens {
        let settings = TokenSettings {
            issuer: "usermgmt".into(),
            audience: "usermgmt".into(),
            lifetime: Duration::from_secs(60),
        };
        let mut tokens = AccessTokens::new(b"a test key of thirty-two bytes..", settings, 1 << 20)
            .expect("tokens");
        tokens.clock = test_clock;
        tokens
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            user_id: Uuid::new_v4(),
            organisation_id: Uuid::new_v4(),
            token_key: Uuid::new_v4(),
            session_id: Uuid::now_v7(),
        }
    }

    fn remembered_count(tokens: &AccessTokens) -> usize {
        tokens.verified.len()
    }

    fn is_remembered(tokens: &AccessTokens, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        tokens.verified.peek(&digest).is_some()
    }

    #[test]
    fn a_remembered_token_expires_with_its_exp() {
        let tokens = tokens();
        let claims = claims();
        let issued = tokens.issue(claims).expect("issue");
        assert_eq!(tokens.verify(&issued.token), Ok(claims));
        assert_eq!(remembered_count(&tokens), 1, "verified once, remembered");

        let exp = issued.expires_at.timestamp();
        NOW.store(exp, Ordering::SeqCst);
        assert_eq!(tokens.verify(&issued.token), Ok(claims), "valid up to exp");
        NOW.store(exp + 1, Ordering::SeqCst);
        assert_eq!(
            tokens.verify(&issued.token),
            Err(AuthFailure::TokenExpired),
            "a remembered token expires like any other"
        );
        NOW.store(0, Ordering::SeqCst);
    }

    #[test]
    fn the_remembered_tokens_stay_bounded_and_keep_the_hot_one() {
        let tokens = tokens();
        let bound = usize::try_from((1u64 << 20) / VERIFIED_ENTRY_BYTES).expect("small");
        let hot = tokens.issue(claims()).expect("issue");
        let mut most = 0;
        for _ in 0..bound * 2 {
            let issued = tokens.issue(claims()).expect("issue");
            assert!(tokens.verify(&issued.token).is_ok());
            assert!(tokens.verify(&hot.token).is_ok());
            most = most.max(remembered_count(&tokens));
        }
        // The bound is split over the map's shards, each rounded up.
        assert!(
            most <= bound + bound / 50,
            "{most} remembered, bound {bound}"
        );
        assert!(
            most >= bound * 9 / 10,
            "the memory fills up to its bound: {most}"
        );
        assert!(
            is_remembered(&tokens, &hot.token),
            "the token used on every call stays remembered"
        );
    }
}
