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

/// Adds `count` users in large batches (benchmarks): to `organisation_id`
/// alone, or spread evenly over it and `organisations - 1` new organisations
/// (each with a seeded nanoAdmin among its users and an API key nobody keeps).
pub async fn seed_users(
    store: &Store,
    passwords: &Passwords,
    organisation_id: Uuid,
    count: u32,
    organisations: u32,
) -> Result<(), DomainError> {
    let password_hash = passwords.hash(SEEDED_PASSWORD).await?;
    let run = Uuid::new_v4().simple().to_string();
    let organisations = organisations.clamp(1, count.max(1));
    let mut targets = vec![(organisation_id, 0)];
    for k in 1..organisations {
        let email = Email::parse("email", &format!("seed-{run}-admin-{k}@seed.example.com"))?;
        let key = opaque::generate(API_KEY_PREFIX)?;
        let fingerprint = opaque::fingerprint(&key.hash);
        let api_key = ApiKeyHash {
            hash: &key.hash,
            fingerprint: &fingerprint,
        };
        let name = format!("seed {run} {k}");
        let admin = store
            .create_organisation_with_admin(&name, &email, &password_hash, api_key)
            .await?;
        targets.push((admin.organisation_id, 1));
    }
    let per_organisation = count / organisations;
    for (i, (organisation, already)) in targets.into_iter().enumerate() {
        let mut share = per_organisation;
        if i == 0 {
            share += count % organisations;
        }
        let label = format!("{run}-{i}");
        insert_seeded(
            store,
            organisation,
            &label,
            share.saturating_sub(already),
            &password_hash,
        )
        .await?;
    }
    // After a bulk load the planner's statistics describe the table as it
    // was: without fresh ones it takes a prefix search of 100,000 matches
    // for a few and sorts them all rather than reading the email index.
    store.analyze_users().await
}

async fn insert_seeded(
    store: &Store,
    organisation_id: Uuid,
    label: &str,
    count: u32,
    password_hash: &str,
) -> Result<(), DomainError> {
    const BATCH: u32 = 5_000;
    let roles = [
        crate::domain::Role::NanoUser,
        crate::domain::Role::NanoReadOnly,
        crate::domain::Role::NanoAdmin,
    ];
    let mut first = 0;
    while first < count {
        let last = first.saturating_add(BATCH).min(count);
        let users: Vec<(String, crate::domain::Role)> = (first..last)
            .map(|i| {
                (
                    format!("seed-{label}-{i}@seed.example.com"),
                    roles[i as usize % roles.len()],
                )
            })
            .collect();
        store
            .insert_users(organisation_id, &users, password_hash)
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
