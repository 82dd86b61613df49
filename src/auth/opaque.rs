//! Opaque single-use secrets (invite and confirmation tokens): random,
//! prefixed so that a leaked one is recognisable, stored only as a hash.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::domain::DomainError;

pub const INVITE_PREFIX: &str = "umi_";
pub const CONFIRMATION_PREFIX: &str = "umc_";
pub const API_KEY_PREFIX: &str = "um_live_";
pub const SERVICE_KEY_PREFIX: &str = "usk_";
pub const REFRESH_TOKEN_PREFIX: &str = "umr_";
pub const RESET_TOKEN_PREFIX: &str = "ump_";
pub const API_TOKEN_PREFIX: &str = "umt_";
/// Longer presented tokens are refused before hashing.
pub const MAX_LEN: usize = 128;

/// A fresh token and its hash. `Debug` shows neither.
pub struct OpaqueToken {
    pub token: String,
    pub hash: Vec<u8>,
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken(<redacted>)")
    }
}

/// 256 random bits behind `prefix`.
pub fn generate(prefix: &str) -> Result<OpaqueToken, DomainError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random));
    let hash = hash(&token);
    Ok(OpaqueToken { token, hash })
}

/// The stored form of a token. The tokens are high-entropy, so a fast hash
/// suffices: nothing can be guessed from it.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A short, stable name of a secret for logs and the audit log: the first
/// 12 hex digits of its hash. Reveals nothing of the secret.
pub fn fingerprint(hash: &[u8]) -> String {
    crate::domain::fingerprint::of_digest(hash)
}

/// Whether `token` could be one of ours (cheap shape check, no lookup).
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token.len() <= MAX_LEN && token.starts_with(prefix)
}
