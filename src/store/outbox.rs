//! The mail outbox (`mail_outbox`): each mail to send is a row written in
//! the transaction of the change that asks for it, its payload (the token
//! among it) sealed with the store's keyring. Any replica's worker claims due
//! rows for a lease (`FOR UPDATE SKIP LOCKED`, one row per recipient at a
//! time), and deletes a row once its mail is sent or given up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bytea, Int4, Interval, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::schema::mail_outbox;
use super::secrets::{open, seal};
use super::write::Change;
use super::{Store, Tx, interval};
use crate::domain::DomainError;
use crate::sealing::{Keyring, Purpose};

/// What a row of the outbox asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// Reset the password of the users with this email (if any): the worker
    /// finds them, stores a reset for each and queues its mail.
    ResetRequest,
    /// A user's password reset link.
    PasswordReset,
    /// An invite to its invitee.
    Invite,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::ResetRequest => "reset_request",
            MailKind::PasswordReset => "password_reset",
            MailKind::Invite => "invite",
        }
    }

    fn from_stored(stored: &str) -> Result<Self, DomainError> {
        match stored {
            "reset_request" => Ok(MailKind::ResetRequest),
            "password_reset" => Ok(MailKind::PasswordReset),
            "invite" => Ok(MailKind::Invite),
            other => Err(DomainError::Internal(format!(
                "unknown mail kind {other:?} in mail_outbox"
            ))),
        }
    }
}

/// A row to queue.
pub struct NewMail<'a> {
    pub kind: MailKind,
    /// The normalised email the mail goes to.
    pub recipient: &'a str,
    pub organisation_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub invite_id: Option<Uuid>,
    pub reset_id: Option<Uuid>,
    /// Sealed before it is stored.
    pub payload: &'a [u8],
    pub request_id: Option<&'a str>,
    /// When the mail becomes useless.
    pub expires_at: DateTime<Utc>,
}

/// A row a worker claimed, its payload opened.
pub struct ClaimedMail {
    pub id: Uuid,
    /// The claim: only its holder may finish the row.
    pub claim: Uuid,
    pub kind: MailKind,
    pub recipient: String,
    pub organisation_id: Option<Uuid>,
    pub invite_id: Option<Uuid>,
    pub reset_id: Option<Uuid>,
    /// The opened payload, or why it does not open.
    pub payload: Result<Zeroizing<Vec<u8>>, String>,
    pub request_id: Option<String>,
    /// Failed attempts so far.
    pub attempts: i32,
    pub expires_at: DateTime<Utc>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Due again later.
    Later,
    /// The next attempt would come after the mail's expiry: deleted.
    GivenUp,
    /// The claim had passed to another worker: nothing changed.
    ClaimLost,
}

/// A row given up because it expired.
pub struct Expired {
    pub id: Uuid,
    pub kind: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    recipient: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    organisation_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    invite_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    reset_id: Option<Uuid>,
    #[diesel(sql_type = Bytea)]
    payload: Vec<u8>,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct ExpiredRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// Claims the oldest due row of the recipients that have none in flight,
/// one recipient at a time, so that a flood for one address does not hold
/// back the others'. The locking select re-checks the row as it is when
/// locked (a row another worker claimed meanwhile no longer qualifies), and
/// skips the rows other claims hold locked.
const CLAIM: &str = "\
WITH due AS (
    SELECT DISTINCT ON (m.recipient) m.id
    FROM mail_outbox m
    WHERE m.next_attempt_at <= now() AND m.expires_at > now()
      AND (m.claimed_until IS NULL OR m.claimed_until < now())
      AND NOT EXISTS (SELECT 1 FROM mail_outbox busy
                      WHERE busy.recipient = m.recipient AND busy.claimed_until >= now())
    ORDER BY m.recipient, m.next_attempt_at, m.id
), picked AS (
    SELECT m.id
    FROM mail_outbox m JOIN due ON due.id = m.id
    WHERE m.next_attempt_at <= now() AND m.expires_at > now()
      AND (m.claimed_until IS NULL OR m.claimed_until < now())
    ORDER BY m.next_attempt_at, m.id
    LIMIT 1
    FOR UPDATE OF m SKIP LOCKED
)
UPDATE mail_outbox o SET claimed_by = $1, claimed_until = now() + $2
FROM picked WHERE o.id = picked.id
RETURNING o.id, o.kind, o.recipient, o.organisation_id, o.invite_id, o.reset_id,
          o.payload, o.request_id, o.attempts, o.expires_at";

/// Deletes the row `id` if `claim` still holds it: whether it did.
async fn delete_claimed(conn: &mut Tx<'_>, id: Uuid, claim: Uuid) -> Result<bool, DomainError> {
    let deleted = diesel::delete(
        mail_outbox::table
            .filter(mail_outbox::id.eq(id))
            .filter(mail_outbox::claimed_by.eq(claim)),
    )
    .execute(conn.pg())
    .await?;
    Ok(deleted == 1)
}

/// A reset request row's payload: nothing but the row itself.
const EMPTY_PAYLOAD: &[u8] = b"{}";

impl Store {
    /// Queues a request to reset the password of the users with `email`
    /// (in `organisation_id`, or in every organisation), whoever they are:
    /// the same write whether the email exists or not. A request already
    /// pending for the email and scope absorbs it: false.
    pub async fn queue_reset_request(
        &self,
        email: &str,
        organisation_id: Option<Uuid>,
        request_id: Option<&str>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, DomainError> {
        let keyring = self.keyring();
        self.operate(async |conn| {
            let new = NewMail {
                kind: MailKind::ResetRequest,
                recipient: email,
                organisation_id,
                user_id: None,
                invite_id: None,
                reset_id: None,
                payload: EMPTY_PAYLOAD,
                request_id,
                expires_at,
            };
            Ok(Change::unchanged(queue(conn, keyring, new).await?))
        })
        .await
    }

    /// Claims a due row for `lease` as `claim`, if there is one.
    pub async fn claim_mail(
        &self,
        claim: Uuid,
        lease: Duration,
    ) -> Result<Option<ClaimedMail>, DomainError> {
        let row = self
            .operate(async |conn| {
                let row = diesel::sql_query(CLAIM)
                    .bind::<diesel::sql_types::Uuid, _>(claim)
                    .bind::<Interval, _>(interval(lease))
                    .get_result::<ClaimedRow>(conn.pg())
                    .await
                    .optional()?;
                Ok(Change::unchanged(row))
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let payload = open(
            self.keyring(),
            Purpose::MailPayload,
            &row.id.to_string(),
            &row.payload,
        )
        .map_err(|error| error.to_string());
        Ok(Some(ClaimedMail {
            id: row.id,
            claim,
            kind: MailKind::from_stored(&row.kind)?,
            recipient: row.recipient,
            organisation_id: row.organisation_id,
            invite_id: row.invite_id,
            reset_id: row.reset_id,
            payload,
            request_id: row.request_id,
            attempts: row.attempts,
            expires_at: row.expires_at,
        }))
    }

    /// Deletes a claimed row (its mail sent, or given up); false when the
    /// claim had passed to another worker.
    pub async fn finish_mail(&self, id: Uuid, claim: Uuid) -> Result<bool, DomainError> {
        self.operate(async |conn| Ok(Change::unchanged(delete_claimed(conn, id, claim).await?)))
            .await
    }

    /// Puts a claimed row back, due after `delay`, with `error` (which must
    /// not hold the mail's content); gives it up instead when that is past
    /// its expiry.
    pub async fn retry_mail(
        &self,
        id: Uuid,
        claim: Uuid,
        delay: Duration,
        error: &str,
    ) -> Result<Retry, DomainError> {
        let error: String = error.chars().take(500).collect();
        self.operate(async |conn| {
            let later = diesel::sql_query(
                "UPDATE mail_outbox SET attempts = attempts + 1, \
                   next_attempt_at = now() + $3, claimed_by = NULL, claimed_until = NULL, \
                   last_error = $4 \
                 WHERE id = $1 AND claimed_by = $2 AND now() + $3 < expires_at",
            )
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<diesel::sql_types::Uuid, _>(claim)
            .bind::<Interval, _>(interval(delay))
            .bind::<Text, _>(&error)
            .execute(conn.pg())
            .await?;
            if later == 1 {
                return Ok(Change::unchanged(Retry::Later));
            }
            Ok(Change::unchanged(
                if delete_claimed(conn, id, claim).await? {
                    Retry::GivenUp
                } else {
                    Retry::ClaimLost
                },
            ))
        })
        .await
    }

    /// Deletes the expired rows that no worker holds, returning them.
    pub async fn expire_mail(&self) -> Result<Vec<Expired>, DomainError> {
        let rows = self
            .operate(async |conn| {
                let rows = diesel::sql_query(
                    "DELETE FROM mail_outbox WHERE expires_at <= now() \
                       AND (claimed_until IS NULL OR claimed_until < now()) \
                     RETURNING id, kind, attempts, last_error",
                )
                .load::<ExpiredRow>(conn.pg())
                .await?;
                Ok(Change::unchanged(rows))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Expired {
                id: row.id,
                kind: row.kind,
                attempts: row.attempts,
                last_error: row.last_error,
            })
            .collect())
    }

    /// How many rows the outbox holds.
    pub async fn mail_outbox_depth(&self) -> Result<i64, DomainError> {
        let mut conn = self.conn().await?;
        Ok(mail_outbox::table.count().get_result(&mut conn).await?)
    }

    /// Whether the mail is still of use: its invite still pending, its
    /// reset still unused, both unexpired.
    pub async fn mail_still_wanted(&self, mail: &ClaimedMail) -> Result<bool, DomainError> {
        use super::schema::{invites, password_resets};
        if mail.kind == MailKind::ResetRequest {
            return Ok(true);
        }
        let mut conn = self.conn().await?;
        let wanted = match (mail.kind, mail.invite_id, mail.reset_id) {
            (MailKind::Invite, Some(invite_id), _) => {
                diesel::select(diesel::dsl::exists(
                    invites::table
                        .filter(invites::id.eq(invite_id))
                        .filter(invites::accepted_at.is_null())
                        .filter(invites::revoked_at.is_null())
                        .filter(invites::expires_at.gt(diesel::dsl::now)),
                ))
                .get_result(&mut conn)
                .await?
            }
            (MailKind::PasswordReset, _, Some(reset_id)) => {
                diesel::select(diesel::dsl::exists(
                    password_resets::table
                        .filter(password_resets::id.eq(reset_id))
                        .filter(password_resets::used_at.is_null())
                        .filter(password_resets::expires_at.gt(diesel::dsl::now)),
                ))
                .get_result(&mut conn)
                .await?
            }
            // A mail row without what it refers to: nothing to send.
            _ => false,
        };
        Ok(wanted)
    }
}

/// Writes `new` to the outbox, its payload sealed; false when a pending row
/// absorbs it (one reset request per email and scope, one reset mail per
/// user).
pub async fn queue(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
    new: NewMail<'_>,
) -> Result<bool, DomainError> {
    let id = Uuid::now_v7();
    let payload = seal(keyring, Purpose::MailPayload, &id.to_string(), new.payload)?;
    let inserted = diesel::insert_into(mail_outbox::table)
        .values((
            mail_outbox::id.eq(id),
            mail_outbox::kind.eq(new.kind.as_str()),
            mail_outbox::recipient.eq(new.recipient),
            mail_outbox::organisation_id.eq(new.organisation_id),
            mail_outbox::user_id.eq(new.user_id),
            mail_outbox::invite_id.eq(new.invite_id),
            mail_outbox::reset_id.eq(new.reset_id),
            mail_outbox::payload.eq(payload),
            mail_outbox::request_id.eq(new.request_id),
            mail_outbox::expires_at.eq(new.expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn.pg())
        .await?;
    Ok(inserted == 1)
}

/// Whether the user has a reset mail waiting to be sent.
pub async fn reset_mail_pending(conn: &mut Tx<'_>, user_id: Uuid) -> Result<bool, DomainError> {
    Ok(diesel::select(diesel::dsl::exists(
        mail_outbox::table
            .filter(mail_outbox::kind.eq(MailKind::PasswordReset.as_str()))
            .filter(mail_outbox::user_id.eq(user_id)),
    ))
    .get_result(conn.pg())
    .await?)
}
