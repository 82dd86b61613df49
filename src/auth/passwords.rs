//! Password hashing with argon2id on a few dedicated threads, off the async
//! runtime, so that a storm of logins neither stalls other calls nor eats the
//! memory: each argon2id run takes ~19 MiB, and a fixed set of threads reuses
//! its allocations (a fresh blocking thread per run would leave one retained
//! allocator arena behind per thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::oneshot;

use crate::domain::DomainError;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords on `concurrency` threads.
#[derive(Clone)]
pub struct Passwords {
    jobs: Arc<Mutex<Sender<Job>>>,
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
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..concurrency.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || run_jobs(&receiver))
                .map_err(|e| {
                    DomainError::Internal(format!("cannot start a hashing thread: {e}"))
                })?;
        }
        let mut passwords = Self {
            jobs: Arc::new(Mutex::new(sender)),
            decoy_hash: Arc::from(""),
            verifications: Arc::new(AtomicU64::new(0)),
        };
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
        let decoy: String = random.iter().map(|b| format!("{b:02x}")).collect();
        passwords.decoy_hash = passwords.hash(&decoy).await?.into();
        Ok(passwords)
    }

    /// The argon2id PHC string of `password`, with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, DomainError> {
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| DomainError::Internal(format!("password hashing: {e}")))
        })
        .await?
    }

    /// Whether `password` matches `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, DomainError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.run(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
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

    /// Runs `work` on a hashing thread; waits (without blocking the runtime)
    /// while all of them are busy.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DomainError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        let stopped = || DomainError::Unavailable("the password hashers have stopped".into());
        self.jobs
            .lock()
            .map_err(|_| stopped())?
            .send(job)
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())
    }
}

fn run_jobs(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}
