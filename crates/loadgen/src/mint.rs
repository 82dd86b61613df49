//! Access tokens of many users, minted here with the server's signing key
//! (read from the database, as an operator's tool beside it may): N logins
//! would cost N argon2 verifications, and the server has no other way to
//! issue tokens.

use usermgmt::auth::tokens::{AccessTokens, TokenClaims, TokenSettings};
use usermgmt::config::DatabaseArgs;
use usermgmt::sealing::{Kek, Keyring};
use usermgmt::store::{Store, pool};
use uuid::Uuid;

use crate::BoxError;

/// Where the users and the signing key are, and how the server signs.
pub struct MintSettings<'a> {
    pub database_url: &'a str,
    pub key_encryption_key: Option<&'a str>,
    pub jwt_secret: Option<&'a str>,
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Only users of this organisation; `None`: of every organisation.
    pub organisation_id: Option<Uuid>,
}

/// An access token for each of the first `count` users (by id).
pub async fn tokens_of_users(
    settings: &MintSettings<'_>,
    count: u32,
) -> Result<Vec<String>, BoxError> {
    let secret = signing_key(settings).await?;
    let tokens = AccessTokens::new(
        &secret,
        TokenSettings {
            issuer: settings.issuer.to_owned(),
            audience: settings.audience.to_owned(),
            lifetime: std::time::Duration::from_secs(3600),
        },
        1 << 20,
    )?;
    let users = users(settings, count).await?;
    if users.len() < count as usize {
        return Err(format!(
            "--users {count}: the database holds only {} users{}",
            users.len(),
            if settings.organisation_id.is_some() {
                " in that organisation"
            } else {
                ""
            }
        )
        .into());
    }
    users
        .into_iter()
        .map(|claims| Ok(tokens.issue(claims)?.token))
        .collect()
}

async fn signing_key(settings: &MintSettings<'_>) -> Result<Vec<u8>, BoxError> {
    if let Some(secret) = settings.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let database = DatabaseArgs {
        database_url: settings.database_url.to_owned(),
        db_pool_size: 1,
        db_wait_timeout_ms: 5_000,
        db_connect_timeout_ms: 5_000,
    };
    let keyring = match settings.key_encryption_key {
        Some(text) => Keyring::new(Some(Kek::parse(text)?), Vec::new()),
        None => Keyring::new(None, Vec::new()),
    };
    let store = Store::new(pool::build_pool(
        &database.database_url,
        &database.pool_settings(),
    )?)
    .with_keyring(keyring);
    store
        .stored_secret(usermgmt::server::JWT_SECRET_NAME)
        .await?
        .ok_or_else(|| "the database holds no access-token key: start the server first".into())
}

/// Opens a session for each of the first `count` users (by id), as a login
/// would, and returns the claims of a token of each.
async fn users(settings: &MintSettings<'_>, count: u32) -> Result<Vec<TokenClaims>, BoxError> {
    let (client, connection) =
        tokio_postgres::connect(settings.database_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let limit = i64::from(count);
    let opened = "INSERT INTO sessions \
         (id, organisation_id, user_id, token_key, expires_at, absolute_expires_at, user_agent) \
         SELECT gen_random_uuid(), organisation_id, id, token_key, now() + interval '1 day', \
                now() + interval '1 day', 'loadgen' FROM chosen \
         RETURNING user_id, organisation_id, token_key, id";
    let rows = match settings.organisation_id {
        Some(organisation_id) => {
            client
                .query(
                    &format!(
                        "WITH chosen AS (SELECT id, organisation_id, token_key FROM users \
                         WHERE organisation_id = $1 ORDER BY id LIMIT $2) {opened}"
                    ),
                    &[&organisation_id, &limit],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!(
                        "WITH chosen AS (SELECT id, organisation_id, token_key FROM users \
                         ORDER BY id LIMIT $1) {opened}"
                    ),
                    &[&limit],
                )
                .await?
        }
    };
    driver.abort();
    rows.iter()
        .map(|row| {
            Ok(TokenClaims {
                user_id: row.try_get(0)?,
                organisation_id: row.try_get(1)?,
                token_key: row.try_get(2)?,
                session_id: row.try_get(3)?,
            })
        })
        .collect()
}
