//! Password hashing with argon2id, off the async runtime and bounded, so that
//! a storm of logins neither stalls other calls nor eats the memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

use crate::domain::DomainError;

/// Hashes and verifies passwords; at most `concurrency` at a time.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when no user matches, so
    /// that an unknown email costs as much time as a wrong password.
    decoy_hash: Arc<str>,
    /// How many verifications ran, so that tests can check that every login
    /// path costs exactly one.
    verifications: Arc<AtomicU64>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub async fn new(concurrency: usize) -> Result<Self, DomainError> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
        let decoy: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let decoy_hash = hash_blocking(decoy).await?;
        Ok(Self {
            permits,
            decoy_hash: decoy_hash.into(),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The argon2id PHC string of `password`, with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, DomainError> {
        let _permit = self.permit().await?;
        hash_blocking(password.to_owned()).await
    }

    /// Whether `password` matches `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, DomainError> {
        let _permit = self.permit().await?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (password, hash) = (password.to_owned(), hash.to_owned());
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| DomainError::Internal(format!("password task: {e}")))
    }

    /// Spends the time of one verification on nothing (for unknown emails).
    pub async fn verify_decoy(&self, password: &str) -> Result<(), DomainError> {
        let decoy = self.decoy_hash.clone();
        self.verify(password, &decoy).await.map(|_| ())
    }

    /// How many verifications (decoys included) ran so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DomainError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| DomainError::Unavailable("shutting down".into()))
    }
}

async fn hash_blocking(password: String) -> Result<String, DomainError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| DomainError::Internal(format!("password hashing: {e}")))
    })
    .await
    .map_err(|e| DomainError::Internal(format!("password task: {e}")))?
}
