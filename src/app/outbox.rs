//! Mail sent on the side of a call: password reset links and invites. A
//! call hands its job over and returns at once, so that a reset request
//! answers in the same time whether its email exists or not; one worker
//! does the jobs in the order they came, off every call's path.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::opaque::{self, RESET_TOKEN_PREFIX};
use crate::domain::DomainError;
use crate::domain::actor::{Actor, ChangeContext, Proof};
use crate::domain::audit::USER_REQUEST_PASSWORD_RESET;
use crate::domain::email::Email;
use crate::domain::invite::Invite;
use crate::mail::Mailer;
use crate::metrics::metrics;
use crate::store::Store;
use crate::store::audit::Audit;
use crate::store::write::{Change, OrgLock};
use crate::store::{resets, users};

/// How long a reset link works.
pub const RESET_VALID_MINUTES: u32 = 30;
/// The most jobs waiting; more are dropped (and counted).
const QUEUE: usize = 1024;
/// The most users (of as many organisations) one reset request mails.
const MAX_RESET_USERS: i64 = 10;

enum Job {
    PasswordReset {
        email: Email,
        organisation_id: Option<Uuid>,
        request_id: Option<String>,
    },
    Invite {
        invite: Invite,
        token: String,
        organisation_name: String,
    },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::PasswordReset { .. } => "password_reset",
            Job::Invite { .. } => "invite",
        }
    }
}

/// The queue of mail jobs; without a mailer (no SMTP configured), jobs are
/// only counted.
#[derive(Clone)]
pub struct Outbox {
    jobs: Option<mpsc::Sender<Job>>,
}

impl Outbox {
    /// No mail: every job is counted as `mail_off`.
    pub fn off() -> Self {
        Self { jobs: None }
    }

    /// Starts the worker that sends with `mailer`.
    pub fn start(store: Store, mailer: Arc<Mailer>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(work(store, mailer, queue));
        Self { jobs: Some(jobs) }
    }

    /// Mails a reset link to each user with `email` (in `organisation_id`,
    /// or in every organisation), if any.
    pub fn request_password_reset(
        &self,
        email: Email,
        organisation_id: Option<Uuid>,
        request_id: Option<String>,
    ) {
        self.hand_over(Job::PasswordReset {
            email,
            organisation_id,
            request_id,
        });
    }

    /// Mails an invite to its invitee.
    pub fn invite(&self, invite: Invite, token: String, organisation_name: String) {
        self.hand_over(Job::Invite {
            invite,
            token,
            organisation_name,
        });
    }

    fn hand_over(&self, job: Job) {
        let kind = job.kind();
        let Some(jobs) = &self.jobs else {
            metrics().record_mail_job(kind, "mail_off");
            return;
        };
        if jobs.try_send(job).is_err() {
            tracing::warn!(kind, "the mail queue is full: a mail job was dropped");
            metrics().record_mail_job(kind, "dropped");
        }
    }
}

async fn work(store: Store, mailer: Arc<Mailer>, mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.recv().await {
        let kind = job.kind();
        let outcome = match job {
            Job::PasswordReset {
                email,
                organisation_id,
                request_id,
            } => send_resets(&store, &mailer, &email, organisation_id, request_id).await,
            Job::Invite {
                invite,
                token,
                organisation_name,
            } => mailer
                .send_invite(
                    &invite.email,
                    &token,
                    &organisation_name,
                    invite.role.as_str(),
                    &invite.expires_at.to_rfc3339(),
                )
                .await
                .map(|()| "sent")
                .map_err(|error| DomainError::Unavailable(error.to_string())),
        };
        let outcome = outcome.unwrap_or_else(|error| {
            tracing::warn!(kind, %error, "a mail job failed");
            "failed"
        });
        metrics().record_mail_job(kind, outcome);
    }
}

/// Stores a reset for each user with the email and mails its link.
async fn send_resets(
    store: &Store,
    mailer: &Mailer,
    email: &Email,
    organisation_id: Option<Uuid>,
    request_id: Option<String>,
) -> Result<&'static str, DomainError> {
    let found = store
        .users_by_email(email.as_str(), organisation_id, MAX_RESET_USERS)
        .await?;
    if found.is_empty() {
        return Ok("no_such_user");
    }
    // A suspended user cannot sign in, so a reset link would be of no use.
    let active: Vec<_> = found.into_iter().filter(|user| user.is_active()).collect();
    if active.is_empty() {
        return Ok("suspended");
    }
    for user in active {
        let secret = opaque::generate(RESET_TOKEN_PREFIX)?;
        let ctx = ChangeContext {
            organisation_id: user.organisation_id,
            actor: Actor::User(user.id),
            proof: Proof::Standing,
            permission: None,
            request_id: request_id.clone(),
        };
        let expires_at = Utc::now() + chrono::Duration::minutes(i64::from(RESET_VALID_MINUTES));
        let (organisation_id, user_id) = (user.organisation_id, user.id);
        let hash = &secret.hash;
        let to = store
            .write(&ctx, OrgLock::Shared, async |conn| {
                let user = users::locked(conn, organisation_id, user_id).await?;
                resets::insert(conn, organisation_id, user_id, hash, expires_at).await?;
                let audit = Audit::user(USER_REQUEST_PASSWORD_RESET, &user, None, None);
                Ok(Change::audited(user.email.clone(), audit))
            })
            .await?;
        mailer
            .send_password_reset(&to, &secret.token, RESET_VALID_MINUTES)
            .await
            .map_err(|error| DomainError::Unavailable(error.to_string()))?;
    }
    Ok("sent")
}
