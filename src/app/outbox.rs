//! Mail that is never lost: a transactional outbox (`store::outbox`).
//!
//! A change that asks for a mail writes its row in its own transaction: an
//! invite with the invite, a user's reset link with the reset. A password
//! reset request writes one row, "reset request for email E", whatever E is,
//! so that it answers alike, and as quickly, whether E is anyone's; a worker
//! finds the users later. Every replica runs workers that claim due rows
//! (`FOR UPDATE SKIP LOCKED`, for a lease), send them, and delete them; a
//! failed send is retried with exponential backoff and jitter until the mail
//! expires (its link would be useless), then given up. Claims take the
//! oldest due row of a recipient with nothing in flight, so that a flood of
//! mail for one address holds at most one worker at a time.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::opaque::{self, RESET_TOKEN_PREFIX};
use crate::domain::DomainError;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::USER_REQUEST_PASSWORD_RESET;
use crate::domain::email::Email;
use crate::mail::{MailError, Mailer};
use crate::metrics::metrics;
use crate::store::audit::Audit;
use crate::store::outbox::{self, ClaimedMail, MailKind, NewMail, Retry};
use crate::store::write::{Change, OrgLock};
use crate::store::{Store, Tx, resets, users};

/// How long a reset link works.
pub const RESET_VALID_MINUTES: u32 = 30;
/// The most users (of as many organisations) one reset request mails.
const MAX_RESET_USERS: i64 = 10;
/// The longest one database call of a worker may take.
const DB_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the workers run (`--mail-*` settings).
#[derive(Debug, Clone, Copy)]
pub struct OutboxSettings {
    /// Workers on this replica.
    pub workers: usize,
    /// How often an idle worker looks for due mail.
    pub poll: Duration,
    /// How long a claim lasts: the most one mail may take.
    pub lease: Duration,
    /// The first retry's delay, doubled at each failure…
    pub retry_base: Duration,
    /// … up to this.
    pub retry_max: Duration,
}

impl OutboxSettings {
    /// The most a worker spends on one mail: within its lease, with a margin
    /// for putting the row back.
    fn work_bound(&self) -> Duration {
        self.lease.mul_f64(0.75)
    }

    /// The delay before the attempt after `failures` failed ones: the base
    /// doubled each time, at most the maximum, less up to half of it at
    /// random (so that mails that failed together do not retry together).
    pub fn backoff(&self, failures: u32, random: f64) -> Duration {
        let doubled = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(failures.min(30)));
        let delay = doubled.min(self.retry_max);
        delay.mul_f64(1.0 - 0.5 * random.clamp(0.0, 1.0))
    }
}

/// What a mail row carries, sealed at rest.
#[derive(Serialize, Deserialize, Default)]
struct Payload {
    #[serde(default)]
    token: String,
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_at: String,
}

impl Payload {
    fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, DomainError> {
        serde_json::to_vec(self)
            .map(Zeroizing::new)
            .map_err(|_| DomainError::Internal("cannot write a mail's payload".into()))
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.token.zeroize();
    }
}

/// The invite mail to queue with an invite, in its transaction.
pub struct InviteMail<'a> {
    pub invite: &'a crate::domain::invite::Invite,
    pub token: &'a str,
    pub request_id: Option<&'a str>,
}

/// The outbox: queues mail, and wakes this replica's workers. Without a
/// mailer (no SMTP configured) nothing is queued, only counted.
#[derive(Clone)]
pub struct Outbox {
    wake: Option<Arc<Notify>>,
}

/// This replica's workers, until stopped.
pub struct OutboxWorkers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Outbox {
    /// No mail: every request for one is counted as `mail_off`.
    pub fn off() -> Self {
        Self { wake: None }
    }

    /// Starts the workers that send with `mailer`, and the sweeper that
    /// gives up expired mail and counts the outbox.
    pub fn start(
        store: Store,
        mailer: Arc<Mailer>,
        settings: OutboxSettings,
    ) -> (Self, OutboxWorkers) {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let worker = Arc::new(Worker {
            store,
            mailer,
            settings,
            wake: Arc::clone(&wake),
        });
        let mut tasks: Vec<JoinHandle<()>> = (0..settings.workers.max(1))
            .map(|_| tokio::spawn(Arc::clone(&worker).run(stopped.clone())))
            .collect();
        tasks.push(tokio::spawn(worker.sweep(stopped)));
        (Self { wake: Some(wake) }, OutboxWorkers { stop, tasks })
    }

    /// Whether mail is on.
    pub fn is_on(&self) -> bool {
        self.wake.is_some()
    }

    /// Queues a reset request for `email` (in `organisation_id`, or in every
    /// organisation): one write, the same whether the email is anyone's.
    pub async fn request_password_reset(
        &self,
        store: &Store,
        email: &Email,
        organisation_id: Option<Uuid>,
        request_id: Option<&str>,
    ) -> Result<(), DomainError> {
        let Some(wake) = &self.wake else {
            metrics().record_mail_job("password_reset", "mail_off");
            return Ok(());
        };
        let expires_at = Utc::now() + chrono::Duration::minutes(i64::from(RESET_VALID_MINUTES));
        let kind = MailKind::ResetRequest.as_str();
        if store
            .queue_reset_request(email.as_str(), organisation_id, request_id, expires_at)
            .await?
        {
            metrics().record_mail_queued(kind);
            wake.notify_waiters();
        } else {
            metrics().record_mail_job("password_reset", "coalesced");
        }
        Ok(())
    }

    /// Queues the invite's mail in the invite's transaction (when mail is
    /// on); call [`Outbox::queued`] after the commit.
    pub async fn queue_invite(
        &self,
        conn: &mut Tx<'_>,
        store: &Store,
        mail: InviteMail<'_>,
    ) -> Result<(), DomainError> {
        if !self.is_on() {
            return Ok(());
        }
        let invite = mail.invite;
        let payload = Payload {
            token: mail.token.to_owned(),
            organisation: crate::store::organisations::name(conn, invite.organisation_id).await?,
            role: invite.role.as_str().to_owned(),
            expires_at: invite.expires_at.to_rfc3339(),
        }
        .to_bytes()?;
        let new = NewMail {
            kind: MailKind::Invite,
            recipient: invite.email.as_str(),
            organisation_id: Some(invite.organisation_id),
            user_id: None,
            invite_id: Some(invite.id),
            reset_id: None,
            payload: &payload,
            request_id: mail.request_id,
            expires_at: invite.expires_at,
        };
        outbox::queue(conn, store.keyring(), new).await?;
        Ok(())
    }

    /// A mail of `kind` was committed: counted, and the workers woken (or,
    /// mail off, counted as such).
    pub fn queued(&self, kind: &'static str) {
        match &self.wake {
            Some(wake) => {
                metrics().record_mail_queued(kind);
                wake.notify_waiters();
            }
            None => metrics().record_mail_job(kind, "mail_off"),
        }
    }
}

impl OutboxWorkers {
    /// Stops the workers: each finishes the mail in hand (all within
    /// `grace`, else dropped mid-way: the claim lapses after the lease).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// What became of a claimed row.
enum Outcome {
    /// Done: the row goes (`label` counted in `usermgmt_mail_jobs_total`
    /// when the row was a request).
    Done(&'static str),
    /// Sent: the row goes.
    Sent,
    /// Failed, to be retried: why (without the mail's content).
    Failed(String),
    /// Never sendable: why.
    Undeliverable(String),
    /// Its link would be useless by now.
    Expired,
}

struct Worker {
    store: Store,
    mailer: Arc<Mailer>,
    settings: OutboxSettings,
    wake: Arc<Notify>,
}

/// `call`, or UNAVAILABLE once `DB_CALL_TIMEOUT` has passed.
async fn bounded<T>(call: impl Future<Output = Result<T, DomainError>>) -> Result<T, DomainError> {
    tokio::time::timeout(DB_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(DomainError::Unavailable(
                "the database did not answer in time".into(),
            ))
        })
}

fn random_fraction() -> f64 {
    getrandom::u32().map_or(0.5, |n| f64::from(n) / f64::from(u32::MAX))
}

impl Worker {
    /// Claims and handles due rows until stopped; when there are none,
    /// waits to be woken or for the poll interval.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claim = Uuid::new_v4();
            match bounded(self.store.claim_mail(claim, self.settings.lease)).await {
                Ok(Some(mail)) => {
                    self.handle(mail).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "the mail worker could not claim mail"),
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Every poll interval: gives up the expired rows no one holds, and
    /// counts the outbox.
    async fn sweep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            match bounded(self.store.expire_mail()).await {
                Ok(expired) => {
                    for mail in expired {
                        tracing::warn!(
                            mail = %mail.id,
                            kind = %mail.kind,
                            attempts = mail.attempts,
                            last_error = mail.last_error.as_deref().unwrap_or("none"),
                            "a mail expired before it could be sent: given up"
                        );
                        metrics().record_mail_given_up(&mail.kind, "expired");
                    }
                }
                Err(error) => tracing::warn!(%error, "could not give up expired mail"),
            }
            if let Ok(depth) = bounded(self.store.mail_outbox_depth()).await {
                metrics().set_mail_outbox_depth(depth);
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Does what the row asks, within the lease, then finishes the row.
    async fn handle(&self, mail: ClaimedMail) {
        let outcome = tokio::time::timeout(self.settings.work_bound(), self.attempt(&mail))
            .await
            .unwrap_or_else(|_| Outcome::Failed("did not finish within its lease".into()));
        self.finish(&mail, outcome).await;
    }

    async fn attempt(&self, mail: &ClaimedMail) -> Outcome {
        if mail.expires_at <= Utc::now() {
            return Outcome::Expired;
        }
        let payload = match &mail.payload {
            Ok(payload) => payload,
            Err(error) => return Outcome::Undeliverable(error.clone()),
        };
        let payload: Payload = match serde_json::from_slice(payload) {
            Ok(payload) => payload,
            Err(_) => return Outcome::Undeliverable("its payload does not parse".into()),
        };
        match bounded(self.store.mail_still_wanted(mail)).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Done("withdrawn"),
            Err(error) => return Outcome::Failed(error.to_string()),
        }
        let sent = match mail.kind {
            MailKind::ResetRequest => return self.reset_request(mail).await,
            MailKind::PasswordReset => {
                self.mailer
                    .send_password_reset(&mail.recipient, &payload.token, RESET_VALID_MINUTES)
                    .await
            }
            MailKind::Invite => {
                self.mailer
                    .send_invite(
                        &mail.recipient,
                        &payload.token,
                        &payload.organisation,
                        &payload.role,
                        &payload.expires_at,
                    )
                    .await
            }
        };
        match sent {
            Ok(()) => Outcome::Sent,
            // The server or the network: another attempt may succeed.
            Err(error @ (MailError::Smtp(_) | MailError::Timeout(_))) => {
                Outcome::Failed(error.to_string())
            }
            // The message itself cannot be built: it never will be.
            Err(error) => Outcome::Undeliverable(error.to_string()),
        }
    }

    /// Stores a reset for each active user with the email and queues its
    /// mail, each in one transaction; a user with a reset mail still
    /// waiting gets no second one (a flood of requests makes one mail, and
    /// a retried request mints no second link).
    async fn reset_request(&self, mail: &ClaimedMail) -> Outcome {
        let found = match bounded(self.store.users_by_email(
            &mail.recipient,
            mail.organisation_id,
            MAX_RESET_USERS,
        ))
        .await
        {
            Ok(found) => found,
            Err(error) => return Outcome::Failed(error.to_string()),
        };
        if found.is_empty() {
            return Outcome::Done("no_such_user");
        }
        // A suspended user cannot sign in, so a reset link would be of no use.
        let active: Vec<_> = found.into_iter().filter(|user| user.is_active()).collect();
        if active.is_empty() {
            return Outcome::Done("suspended");
        }
        let mut outcome = "coalesced";
        for user in active {
            match bounded(self.store_reset(mail, user.organisation_id, user.id)).await {
                Ok(true) => {
                    outcome = "sent";
                    metrics().record_mail_queued(MailKind::PasswordReset.as_str());
                    self.wake.notify_waiters();
                }
                Ok(false) => {}
                // The user went meanwhile.
                Err(DomainError::NotFound(_) | DomainError::Unauthenticated(_)) => {}
                Err(error) => return Outcome::Failed(error.to_string()),
            }
        }
        Outcome::Done(outcome)
    }

    /// Stores a reset for the user and queues its mail, in one transaction
    /// on the user's standing; false when a reset mail of the user is
    /// waiting already.
    async fn store_reset(
        &self,
        mail: &ClaimedMail,
        organisation_id: Uuid,
        user_id: Uuid,
    ) -> Result<bool, DomainError> {
        let secret = opaque::generate(RESET_TOKEN_PREFIX)?;
        let mut payload = Payload::default();
        payload.token.clone_from(&secret.token);
        let payload = payload.to_bytes()?;
        let ctx = ChangeContext {
            organisation_id,
            actor: Actor::User(user_id),
            proof: Proof::Standing,
            permission: None,
            request_id: mail.request_id.clone(),
        };
        let expires_at = Utc::now() + chrono::Duration::minutes(i64::from(RESET_VALID_MINUTES));
        let hash = &secret.hash;
        let keyring = self.store.keyring();
        let request_id = mail.request_id.as_deref();
        self.store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let user = users::locked(conn, organisation_id, user_id).await?;
                if !user.is_active() || outbox::reset_mail_pending(conn, user.id).await? {
                    return Ok(Change::unchanged(false));
                }
                let reset_id =
                    resets::insert(conn, organisation_id, user_id, hash, expires_at).await?;
                let recipient = user.email.to_lowercase();
                let new = NewMail {
                    kind: MailKind::PasswordReset,
                    recipient: &recipient,
                    organisation_id: Some(organisation_id),
                    user_id: Some(user.id),
                    invite_id: None,
                    reset_id: Some(reset_id),
                    payload: &payload,
                    request_id,
                    expires_at,
                };
                // The user's row lock keeps a second worker out until this
                // commits, so no reset mail of the user can be queued meanwhile.
                if !outbox::queue(conn, keyring, new).await? {
                    return Err(DomainError::Internal(
                        "a reset mail was queued beside the user's lock".into(),
                    ));
                }
                let audit = Audit::user(USER_REQUEST_PASSWORD_RESET, &user, None, None);
                Ok(Change::audited(true, audit))
            })
            .await
    }

    /// Deletes the row, puts it back for a retry, or gives it up; counts and
    /// logs (never the mail's token or link).
    async fn finish(&self, mail: &ClaimedMail, outcome: Outcome) {
        let kind = mail.kind.as_str();
        let request_kind = match mail.kind {
            MailKind::ResetRequest | MailKind::PasswordReset => "password_reset",
            MailKind::Invite => "invite",
        };
        let (reason, error) = match outcome {
            Outcome::Sent => {
                metrics().record_mail_sent(kind);
                self.delete(mail).await;
                return;
            }
            Outcome::Done(label) => {
                metrics().record_mail_job(request_kind, label);
                self.delete(mail).await;
                return;
            }
            Outcome::Failed(error) => {
                let failures = u32::try_from(mail.attempts).unwrap_or(0);
                let delay = self.settings.backoff(failures, random_fraction());
                let retried = bounded(self.store.retry_mail(mail.id, mail.claim, delay, &error));
                match retried.await {
                    Ok(Retry::Later) => {
                        tracing::info!(
                            mail = %mail.id,
                            kind,
                            attempts = mail.attempts + 1,
                            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            %error,
                            "a mail could not be sent: retried later"
                        );
                        metrics().record_mail_retried(kind);
                        return;
                    }
                    Ok(Retry::ClaimLost) => {
                        tracing::warn!(mail = %mail.id, kind, "a mail's claim lapsed mid-way");
                        return;
                    }
                    Ok(Retry::GivenUp) => ("expired", error),
                    Err(db) => {
                        // The claim lapses after the lease: retried then.
                        tracing::warn!(mail = %mail.id, kind, error = %db, "could not put a mail back");
                        return;
                    }
                }
            }
            Outcome::Undeliverable(error) => {
                self.delete(mail).await;
                ("undeliverable", error)
            }
            Outcome::Expired => {
                self.delete(mail).await;
                ("expired", "its link expired".to_owned())
            }
        };
        tracing::warn!(
            mail = %mail.id,
            kind,
            attempts = mail.attempts + 1,
            reason,
            %error,
            "a mail was given up"
        );
        metrics().record_mail_given_up(kind, reason);
    }

    async fn delete(&self, mail: &ClaimedMail) {
        match bounded(self.store.finish_mail(mail.id, mail.claim)).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(mail = %mail.id, "a mail's claim lapsed mid-way"),
            // The claim lapses after the lease; the row is taken again then.
            Err(error) => tracing::warn!(mail = %mail.id, %error, "could not finish a mail"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_below() {
        let settings = OutboxSettings {
            workers: 1,
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
        };
        assert_eq!(settings.backoff(0, 0.0), Duration::from_secs(2));
        assert_eq!(settings.backoff(3, 0.0), Duration::from_secs(16));
        assert_eq!(settings.backoff(3, 1.0), Duration::from_secs(8));
        assert_eq!(settings.backoff(40, 0.0), Duration::from_secs(600));
        assert_eq!(settings.backoff(u32::MAX, 0.5), Duration::from_secs(450));
    }
}
