//! `usermgmt bench-tokens`: access tokens of many users at once, for the
//! load generator (`crates/loadgen`). N logins would cost N argon2id
//! verifications; this opens a session for each user directly, as a login
//! would, and signs a token of each with the server's key. For benchmark
//! databases only: whoever runs it can act as any of those users for an hour.

use std::io::Write;
use std::time::Duration;

use uuid::Uuid;

use crate::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use crate::domain::DomainError;
use crate::store::Store;

/// The lifetime of the tokens (their sessions last a day).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Which users, and how the server signs.
pub struct BenchTokenRequest<'a> {
    /// How many users: the first ones by id.
    pub users: u32,
    /// Only users of this organisation; `None`: of every organisation.
    pub organisation_id: Option<Uuid>,
    /// The server's configured key (`--jwt-secret`); `None`: the key it
    /// keeps in the database, under `stored_key_name`.
    pub jwt_secret: Option<&'a [u8]>,
    pub stored_key_name: &'a str,
    pub issuer: String,
    pub audience: String,
}

/// An access token of one user, in a session of its own.
pub struct BenchToken {
    pub user_id: Uuid,
    pub organisation_id: Uuid,
    pub session_id: Uuid,
    pub access_token: String,
}

impl std::fmt::Debug for BenchToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchToken")
            .field("user_id", &self.user_id)
            .field("organisation_id", &self.organisation_id)
            .field("session_id", &self.session_id)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] DomainError),
    #[error("the database holds no access-token key: start the server first")]
    NoSigningKey,
    #[error("--users {wanted}: the database holds only {found} users{}", if *.in_organisation { " in that organisation" } else { "" })]
    TooFewUsers {
        wanted: u32,
        found: usize,
        in_organisation: bool,
    },
    #[error("cannot sign an access token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
    #[error("cannot write the tokens: {0}")]
    Output(#[from] std::io::Error),
}

/// Opens a session for each of the first `request.users` users and issues
/// an access token of each; fails when there are fewer users.
pub async fn bench_tokens(
    store: &Store,
    request: &BenchTokenRequest<'_>,
) -> Result<Vec<BenchToken>, BenchError> {
    let secret = match request.jwt_secret {
        Some(secret) => secret.to_vec(),
        None => store
            .stored_secret(request.stored_key_name)
            .await?
            .ok_or(BenchError::NoSigningKey)?,
    };
    let tokens = AccessTokens::new(
        &secret,
        TokenSettings {
            issuer: request.issuer.clone(),
            audience: request.audience.clone(),
            lifetime: TOKEN_LIFETIME,
        },
        1 << 20,
    )?;
    let sessions = store
        .open_bench_sessions(request.organisation_id, request.users)
        .await?;
    if sessions.len() < request.users as usize {
        return Err(BenchError::TooFewUsers {
            wanted: request.users,
            found: sessions.len(),
            in_organisation: request.organisation_id.is_some(),
        });
    }
    sessions
        .into_iter()
        .map(|session| {
            let issued = tokens.issue(TokenClaims {
                user_id: session.user_id,
                organisation_id: session.organisation_id,
                token_key: session.token_key,
                session_id: session.session_id,
            })?;
            Ok(BenchToken {
                user_id: session.user_id,
                organisation_id: session.organisation_id,
                session_id: session.session_id,
                access_token: issued.token,
            })
        })
        .collect()
}

/// Writes one JSON object per token, one a line:
/// `{"user_id":…,"organisation_id":…,"session_id":…,"access_token":…}`.
pub fn write_json_lines(tokens: &[BenchToken], out: impl Write) -> Result<(), BenchError> {
    let mut out = std::io::BufWriter::new(out);
    for token in tokens {
        let line = serde_json::json!({
            "user_id": token.user_id.to_string(),
            "organisation_id": token.organisation_id.to_string(),
            "session_id": token.session_id.to_string(),
            "access_token": token.access_token,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
