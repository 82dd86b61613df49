//! Password hashing with argon2id on a few dedicated threads, off the async
//! runtime, so that a storm of logins neither stalls other calls nor eats the
//! memory: each argon2id run takes ~19 MiB, and a fixed set of threads reuses
//! its allocations (a fresh blocking thread per run would leave one retained
//! allocator arena behind per thread).
//!
//! The queue is bounded, in total and per requester, and a job that waited
//! too long is dropped unrun: one caller cannot queue unbounded work (nor
//! stretch the time between a call's admission and its write). A slot is
//! freed when its job has run or been dropped on a hashing thread, not when
//! the caller stops waiting, so abandoned calls do not escape the bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::oneshot;

use super::peer::client_key;
use crate::domain::DomainError;

type Job = Box<dyn FnOnce() + Send>;

/// The bounds of the hashing queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Jobs queued or running, in total.
    pub queue: usize,
    /// Jobs queued or running for one requester.
    pub per_requester: usize,
    /// How long a job may wait for a thread before it is dropped unrun.
    pub max_wait: Duration,
}

impl Default for HashingLimits {
    fn default() -> Self {
        Self {
            queue: 64,
            per_requester: 8,
            max_wait: Duration::from_secs(2),
        }
    }
}

/// On whose behalf a password is hashed or verified: the per-requester bound
/// keys on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requester {
    /// An authenticated caller, by its actor's text form.
    Caller(String),
    /// An anonymous call (login, accepting an invite), by its peer address;
    /// IPv6 peers by their /64, which one host can rotate through.
    Peer(IpAddr),
    /// The operator (command line), or a call with no peer address: only the
    /// total bound applies.
    Operator,
}

impl Requester {
    pub fn peer(address: Option<IpAddr>) -> Self {
        match address {
            Some(address) => Requester::Peer(client_key(address)),
            None => Requester::Operator,
        }
    }
}

/// The jobs queued or running, in total and per requester.
#[derive(Debug, Default)]
struct Queued {
    total: usize,
    per_requester: HashMap<Requester, usize>,
}

/// A place in the queue, given back when dropped.
struct Slot {
    queued: Arc<Mutex<Queued>>,
    requester: Requester,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        queued.total = queued.total.saturating_sub(1);
        if let Some(count) = queued.per_requester.get_mut(&self.requester) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                queued.per_requester.remove(&self.requester);
            }
        }
    }
}

/// The refusal of a job the queue cannot take, or that waited too long.
fn busy(limits: &HashingLimits) -> DomainError {
    DomainError::ResourceExhausted {
        reason: "PASSWORD_HASHING_BUSY",
        message: "too many password checks are waiting: retry later".into(),
        retry_after: limits.max_wait.min(Duration::from_secs(1)),
        metadata: Vec::new(),
    }
}

/// Hashes and verifies passwords on `concurrency` threads.
#[derive(Clone)]
pub struct Passwords {
    jobs: Arc<Mutex<Sender<Job>>>,
    limits: HashingLimits,
    queued: Arc<Mutex<Queued>>,
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
    /// Hashers with the default bounds.
    pub async fn new(concurrency: usize) -> Result<Self, DomainError> {
        Self::with_limits(concurrency, HashingLimits::default()).await
    }

    pub async fn with_limits(
        concurrency: usize,
        limits: HashingLimits,
    ) -> Result<Self, DomainError> {
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
            limits,
            queued: Arc::new(Mutex::new(Queued::default())),
            decoy_hash: Arc::from(""),
            verifications: Arc::new(AtomicU64::new(0)),
        };
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| DomainError::Internal(format!("no randomness: {e}")))?;
        let decoy: String = random.iter().map(|b| format!("{b:02x}")).collect();
        // Once, at start, and outside the queue: its bounds are for calls (a
        // start on a busy machine must not fail the maximum wait).
        let decoy_hash = tokio::task::spawn_blocking(move || hash_now(&decoy))
            .await
            .map_err(|e| DomainError::Internal(format!("hashing the decoy: {e}")))??;
        passwords.decoy_hash = decoy_hash.into();
        Ok(passwords)
    }

    /// The argon2id PHC string of `password`, with a fresh salt (for the
    /// operator: only the total bound applies).
    pub async fn hash(&self, password: &str) -> Result<String, DomainError> {
        self.hash_for(password, &Requester::Operator).await
    }

    /// Like [`Self::hash`], on behalf of `requester`.
    pub async fn hash_for(
        &self,
        password: &str,
        requester: &Requester,
    ) -> Result<String, DomainError> {
        let password = password.to_owned();
        self.run(requester, move || hash_now(&password)).await?
    }

    /// Whether `password` matches `hash`, checked on behalf of `requester`.
    pub async fn verify(
        &self,
        password: &str,
        hash: &str,
        requester: &Requester,
    ) -> Result<bool, DomainError> {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        let verifications = self.verifications.clone();
        self.run(requester, move || {
            verifications.fetch_add(1, Ordering::Relaxed);
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
    }

    /// Spends the time of one verification on nothing (for unknown emails).
    pub async fn verify_decoy(
        &self,
        password: &str,
        requester: &Requester,
    ) -> Result<(), DomainError> {
        let decoy = self.decoy_hash.clone();
        self.verify(password, &decoy, requester).await.map(|_| ())
    }

    /// How many verifications (decoys included) ran so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Takes a place in the queue for `requester`, or refuses.
    fn slot(&self, requester: &Requester) -> Result<Slot, DomainError> {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = queued.per_requester.get(requester).copied().unwrap_or(0);
        let bounded = *requester != Requester::Operator;
        if queued.total >= self.limits.queue || (bounded && mine >= self.limits.per_requester) {
            return Err(busy(&self.limits));
        }
        queued.total += 1;
        *queued.per_requester.entry(requester.clone()).or_insert(0) += 1;
        Ok(Slot {
            queued: self.queued.clone(),
            requester: requester.clone(),
        })
    }

    /// Runs `work` on a hashing thread; waits (without blocking the runtime)
    /// while all of them are busy, within the queue's bounds.
    async fn run<T: Send + 'static>(
        &self,
        requester: &Requester,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DomainError> {
        let slot = self.slot(requester)?;
        let deadline = Instant::now() + self.limits.max_wait;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = (Instant::now() <= deadline).then(work);
            drop(slot);
            let _ = done.send(outcome);
        });
        let stopped = || DomainError::Unavailable("the password hashers have stopped".into());
        self.jobs
            .lock()
            .map_err(|_| stopped())?
            .send(job)
            .map_err(|_| stopped())?;
        result
            .await
            .map_err(|_| stopped())?
            .ok_or_else(|| busy(&self.limits))
    }
}

/// The argon2id PHC string of `password`, with a fresh salt, on this thread.
fn hash_now(password: &str) -> Result<String, DomainError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| DomainError::Internal(format!("password hashing: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_v4_as_v4() {
        let peer = |text: &str| Requester::peer(Some(text.parse().expect("address")));
        assert_eq!(peer("2001:db8:1:2:aaaa::1"), peer("2001:db8:1:2:ffff::9"));
        assert_ne!(peer("2001:db8:1:2::1"), peer("2001:db8:1:3::1"));
        assert_eq!(peer("::ffff:192.0.2.7"), peer("192.0.2.7"));
        assert_ne!(peer("192.0.2.7"), peer("192.0.2.8"));
        assert_eq!(Requester::peer(None), Requester::Operator);
    }
}
