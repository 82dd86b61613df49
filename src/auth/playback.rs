//! The playback token format: a JWT signed with an organisation's Ed25519 or
//! RSA key, `kid` in the header. Key generation, signing and the signature
//! check live here; which key and whether it is revoked is the caller's.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::{DecodeRsaPublicKey as _, EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::playback::{
    MAX_TOKEN_LEN, Restrictions, Scope, SigningAlgorithm, VerifyFailure, Window,
};

const RSA_BITS: usize = 2048;
const MAX_KID_LEN: usize = 64;

/// The claims of a playback token, as serialised in the JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackClaims {
    /// The organisation.
    pub org: Uuid,
    /// Who issued it ("user:<id>"); a record only, never checked.
    pub sub: String,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub scope: ScopeClaim,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocable: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_disconnect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The scope claim: `{"streams": [...]}`, `{"group": "..."}` or `"organisation"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeClaim {
    Streams(Vec<String>),
    Group(String),
    Organisation,
}

impl From<&Scope> for ScopeClaim {
    fn from(scope: &Scope) -> Self {
        match scope {
            Scope::Streams(names) => ScopeClaim::Streams(names.clone()),
            Scope::Group(group) => ScopeClaim::Group(group.clone()),
            Scope::Organisation => ScopeClaim::Organisation,
        }
    }
}

impl PlaybackClaims {
    pub fn scope(&self) -> Scope {
        match &self.scope {
            ScopeClaim::Streams(names) => Scope::Streams(names.clone()),
            ScopeClaim::Group(group) => Scope::Group(group.clone()),
            ScopeClaim::Organisation => Scope::Organisation,
        }
    }

    pub fn restrictions(&self) -> Restrictions {
        Restrictions {
            domain: self.domain.clone(),
            ip: self.ip.clone(),
            tag: self.tag.clone(),
            user: self.user.clone(),
        }
    }

    /// The validity window; a claim out of range is a malformed token.
    pub fn window(&self) -> Result<Window, VerifyFailure> {
        Ok(Window {
            nbf: time(self.nbf)?,
            exp: time(self.exp)?,
        })
    }
}

pub fn time(seconds: i64) -> Result<DateTime<Utc>, VerifyFailure> {
    DateTime::from_timestamp(seconds, 0).ok_or(VerifyFailure::Malformed)
}

/// A new key pair. `Debug` does not show the private key.
pub struct KeyMaterial {
    pub alg: SigningAlgorithm,
    /// Ed25519: PKCS#8 DER; RSA: PKCS#1 DER.
    pub private_der: Vec<u8>,
    /// Ed25519: the 32 raw bytes; RSA: PKCS#1 DER.
    pub public_key: Vec<u8>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("alg", &self.alg)
            .field("private_der", &"<redacted>")
            .finish()
    }
}

/// A fresh key id: random, so that it reveals nothing.
pub fn new_kid() -> String {
    format!("pbk_{}", Uuid::new_v4().simple())
}

/// Generates a key pair. RSA takes a while: call it off the async runtime.
pub fn generate_key(alg: SigningAlgorithm) -> Result<KeyMaterial, DomainError> {
    let crypto = |e: &dyn fmt::Display| DomainError::Internal(format!("key generation: {e}"));
    match alg {
        SigningAlgorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| crypto(&e))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            secret.fill(0);
            Ok(KeyMaterial {
                alg,
                private_der: key
                    .to_pkcs8_der()
                    .map_err(|e| crypto(&e))?
                    .as_bytes()
                    .to_vec(),
                public_key: key.verifying_key().to_bytes().to_vec(),
            })
        }
        SigningAlgorithm::Rs256 => {
            let key = rsa::PrivateKey::new(&mut OsRandom, RSA_BITS).map_err(|e| crypto(&e))?;
            let public = key.to_public_key();
            Ok(KeyMaterial {
                alg,
                private_der: key
                    .to_pkcs1_der()
                    .map_err(|e| crypto(&e))?
                    .as_bytes()
                    .to_vec(),
                public_key: public.to_pkcs1_der().map_err(|e| crypto(&e))?.into_vec(),
            })
        }
    }
}

/// The operating system's randomness, as the `rsa` crate's RNG.
struct OsRandom;

#[derive(Debug, thiserror::Error)]
#[error("no randomness: {0}")]
struct NoRandomness(getrandom::Error);

impl rsa::rand_core::TryRng for OsRandom {
    type Error = NoRandomness;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        getrandom::u32().map_err(NoRandomness)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        getrandom::u64().map_err(NoRandomness)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        getrandom::fill(dst).map_err(NoRandomness)
    }
}

impl rsa::rand_core::TryCryptoRng for OsRandom {}

fn jwt_algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        SigningAlgorithm::Rs256 => Algorithm::RS256,
    }
}

/// Signs `claims` with a private key, naming it `kid` in the header.
pub fn sign(
    claims: &PlaybackClaims,
    kid: &str,
    alg: SigningAlgorithm,
    private_der: &[u8],
) -> Result<String, DomainError> {
    let key = match alg {
        SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(private_der),
        SigningAlgorithm::Rs256 => EncodingKey::from_rsa_der(private_der),
    };
    let mut header = Header::new(jwt_algorithm(alg));
    header.kid = Some(kid.to_owned());
    let token = jsonwebtoken::encode(&header, claims, &key)
        .map_err(|e| DomainError::Internal(format!("signing a playback token: {e}")))?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(DomainError::Internal(
            "a playback token outgrew the size limit".into(),
        ));
    }
    Ok(token)
}

/// A public key that verifies one organisation's tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub organisation_id: Uuid,
    pub alg: SigningAlgorithm,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    pub fn new(
        kid: String,
        organisation_id: Uuid,
        alg: SigningAlgorithm,
        public_key: &[u8],
    ) -> Result<Self, DomainError> {
        let decoding = match alg {
            // jsonwebtoken reads the first 32 bytes: refuse anything else.
            SigningAlgorithm::EdDsa if public_key.len() == 32 => {
                DecodingKey::from_ed_der(public_key)
            }
            SigningAlgorithm::Rs256 => DecodingKey::from_rsa_der(public_key),
            SigningAlgorithm::EdDsa => {
                return Err(DomainError::Internal(format!(
                    "stored Ed25519 key {kid} is not 32 bytes"
                )));
            }
        };
        // Exactly the key's algorithm; time and scope are checked by the caller.
        let mut validation = Validation::new(jwt_algorithm(alg));
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(Self {
            kid,
            organisation_id,
            alg,
            decoding,
            validation,
        })
    }

    /// Checks the signature with this key (and nothing else) and decodes
    /// the claims. The header's algorithm must be this key's: `none`, HMAC
    /// with the public key as secret and other algorithm confusions fail.
    pub fn verify(
        &self,
        token: &str,
        header: &TokenHeader,
    ) -> Result<PlaybackClaims, VerifyFailure> {
        if header.alg != self.alg.as_str() {
            return Err(VerifyFailure::BadSignature);
        }
        let data = jsonwebtoken::decode::<PlaybackClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_) => VerifyFailure::BadSignature,
                _ => VerifyFailure::Malformed,
            })?;
        // A key signs its own organisation's tokens only.
        if data.claims.org != self.organisation_id {
            return Err(VerifyFailure::BadSignature);
        }
        Ok(data.claims)
    }
}

/// What the header says, read before any crypto to find the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: String,
    pub kid: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

/// Reads the header of a presented token: size, shape and a sane `kid`.
pub fn read_header(token: &str) -> Result<TokenHeader, VerifyFailure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyFailure::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyFailure::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyFailure::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| VerifyFailure::Malformed)?;
    let kid = raw.kid.ok_or(VerifyFailure::Malformed)?;
    let sane = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !sane {
        return Err(VerifyFailure::UnknownKid);
    }
    Ok(TokenHeader { alg: raw.alg, kid })
}

/// A public key as a JSON Web Key's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkParts {
    pub kty: &'static str,
    pub crv: String,
    pub x: String,
    pub n: String,
    pub e: String,
}

pub fn jwk_parts(alg: SigningAlgorithm, public_key: &[u8]) -> Result<JwkParts, DomainError> {
    match alg {
        SigningAlgorithm::EdDsa => Ok(JwkParts {
            kty: "OKP",
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(public_key),
            ..JwkParts::default()
        }),
        SigningAlgorithm::Rs256 => {
            let key = rsa::PublicKey::from_pkcs1_der(public_key)
                .map_err(|e| DomainError::Internal(format!("stored RSA key: {e}")))?;
            Ok(JwkParts {
                kty: "RSA",
                n: URL_SAFE_NO_PAD.encode(key.n_bytes()),
                e: URL_SAFE_NO_PAD.encode(key.e_bytes()),
                ..JwkParts::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(org: Uuid) -> PlaybackClaims {
        PlaybackClaims {
            org,
            sub: "user:x".into(),
            jti: Uuid::new_v4(),
            iat: 1,
            nbf: 1,
            exp: 2,
            scope: ScopeClaim::Streams(vec!["a".into()]),
            revocable: false,
            force_disconnect: true,
            domain: None,
            ip: Some("10.0.0.1".into()),
            tag: None,
            user: None,
        }
    }

    fn round_trip(alg: SigningAlgorithm) {
        let org = Uuid::new_v4();
        let key = generate_key(alg).expect("generate");
        let expected = claims(org);
        let token = sign(&expected, "pbk_1", alg, &key.private_der).expect("sign");
        let header = read_header(&token).expect("header");
        assert_eq!(header.kid, "pbk_1");
        let verifying = VerifyingKey::new("pbk_1".into(), org, alg, &key.public_key).expect("key");
        assert_eq!(verifying.verify(&token, &header), Ok(expected));
        let other =
            VerifyingKey::new("pbk_1".into(), Uuid::new_v4(), alg, &key.public_key).expect("key");
        assert_eq!(
            other.verify(&token, &header),
            Err(VerifyFailure::BadSignature)
        );
        assert!(jwk_parts(alg, &key.public_key).is_ok());
    }

    #[test]
    fn ed25519_tokens_round_trip() {
        round_trip(SigningAlgorithm::EdDsa);
    }

    #[test]
    fn rs256_tokens_round_trip() {
        round_trip(SigningAlgorithm::Rs256);
    }

    #[test]
    fn headers_are_checked_before_crypto() {
        assert_eq!(read_header("a.b"), Err(VerifyFailure::Malformed));
        assert_eq!(
            read_header(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(VerifyFailure::Malformed)
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"../etc"}"#);
        assert_eq!(
            read_header(&format!("{header}.e30.")),
            Err(VerifyFailure::UnknownKid)
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(
            read_header(&format!("{header}.e30.")),
            Err(VerifyFailure::Malformed)
        );
    }
}
