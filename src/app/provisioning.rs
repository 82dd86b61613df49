//! Operator actions behind the CLI's `bootstrap` and `service` commands.

use uuid::Uuid;

use crate::auth::opaque::{self, API_KEY_PREFIX, SERVICE_KEY_PREFIX};
use crate::auth::passwords::Passwords;
use crate::domain::user::{validate_organisation_name, validate_password};
use crate::domain::{DomainError, email::Email};
use crate::store::Store;
use crate::store::organisations::ApiKeyHash;

/// A new organisation: its ids and its API key, shown only here.
pub struct Bootstrapped {
    pub organisation_id: Uuid,
    pub user_id: Uuid,
    pub api_key: String,
}

impl std::fmt::Debug for Bootstrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrapped")
            .field("organisation_id", &self.organisation_id)
            .field("user_id", &self.user_id)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Creates an organisation, its API key and its first nanoAdmin.
pub async fn bootstrap(
    store: &Store,
    passwords: &Passwords,
    organisation: &str,
    email: &str,
    password: &str,
) -> Result<Bootstrapped, DomainError> {
    let name = validate_organisation_name("organisation", organisation)?;
    let email = Email::parse("email", email)?;
    validate_password("password", password)?;
    let password_hash = passwords.hash(password).await?;
    let key = opaque::generate(API_KEY_PREFIX)?;
    let fingerprint = opaque::fingerprint(&key.hash);
    let api_key = ApiKeyHash {
        hash: &key.hash,
        fingerprint: &fingerprint,
    };
    let admin = store
        .create_organisation_with_admin(&name, &email, &password_hash, api_key)
        .await?;
    Ok(Bootstrapped {
        organisation_id: admin.organisation_id,
        user_id: admin.id,
        api_key: key.token,
    })
}

/// The password of every seeded user.
pub const SEEDED_PASSWORD: &str = "seeded password";

/// Adds `count` users to an organisation in large batches (benchmarks).
pub async fn seed_users(
    store: &Store,
    passwords: &Passwords,
    organisation_id: Uuid,
    count: u32,
) -> Result<(), DomainError> {
    const BATCH: u32 = 5_000;
    let password_hash = passwords.hash(SEEDED_PASSWORD).await?;
    let run = Uuid::new_v4().simple().to_string();
    let roles = [
        crate::domain::Role::NanoUser,
        crate::domain::Role::NanoReadOnly,
        crate::domain::Role::NanoAdmin,
    ];
    let mut first = 0;
    while first < count {
        let last = (first + BATCH).min(count);
        let users: Vec<(String, crate::domain::Role)> = (first..last)
            .map(|i| {
                (
                    format!("seed-{run}-{i}@seed.example.com"),
                    roles[i as usize % roles.len()],
                )
            })
            .collect();
        store
            .insert_users(organisation_id, &users, &password_hash)
            .await?;
        first = last;
    }
    Ok(())
}

/// Registers an internal service; returns its key, shown only here.
pub async fn register_service(store: &Store, name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(DomainError::invalid(
            "name",
            "must be 1 to 100 letters, digits, '-', '_' or '.'",
        ));
    }
    let key = opaque::generate(SERVICE_KEY_PREFIX)?;
    store.register_service(name, &key.hash).await?;
    Ok(key.token)
}
