//! The secrets kept in the database, sealed at rest with the store's keyring
//! ([`crate::sealing`]): the shared secrets of `service_secrets`, the
//! private keys of `playback_signing_keys` and the payloads of the mail
//! outbox (`mail_outbox`, whose rows live until their mail is sent).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bytea, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use uuid::Uuid;

use super::Tx;
use super::audit::Audit;
use super::schema::{mail_outbox, playback_signing_keys as keys, service_secrets};
use super::write::Change;
use super::{Store, db_error};
use crate::domain::DomainError;
use crate::domain::audit::PLAYBACK_KEY_REWRAP;
use crate::sealing::{Keyring, OpenError, Purpose, Sealing, sealing_of};

/// Playback keys re-sealed per query, within the one transaction.
const REWRAP_BATCH: i64 = 500;

/// What the secrets at rest look like to the configured keyring.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SecretsAtRest {
    /// Stored plain (before a key-encryption key was configured).
    pub plain: i64,
    /// Sealed with a key-encryption key other than the sealing one.
    pub sealed_with_previous: i64,
}

/// What `usermgmt keys rewrap` changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    /// Re-sealed with the sealing key-encryption key.
    pub sealed: u64,
    /// Sealed with it already.
    pub unchanged: u64,
}

/// Names a stored secret in errors and logs (never its value).
fn describe(purpose: Purpose, row_id: &str) -> String {
    match purpose {
        Purpose::ServiceSecret => format!("the service secret {row_id:?} (service_secrets)"),
        Purpose::PlaybackPrivateKey => {
            format!("the private key of playback signing key {row_id:?} (playback_signing_keys)")
        }
        Purpose::MailPayload => format!("the payload of mail {row_id} (mail_outbox)"),
    }
}

fn cannot_open(purpose: Purpose, row_id: &str, error: &OpenError) -> DomainError {
    DomainError::Internal(format!(
        "cannot open {}: {error}",
        describe(purpose, row_id)
    ))
}

/// The plain value of a stored secret.
pub(crate) fn open(
    keyring: &Keyring,
    purpose: Purpose,
    row_id: &str,
    stored: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, DomainError> {
    keyring
        .open(purpose, row_id, stored)
        .map_err(|error| cannot_open(purpose, row_id, &error))
}

/// A secret as it is to be stored: sealed when a key-encryption key is
/// configured.
pub(crate) fn seal(
    keyring: &Keyring,
    purpose: Purpose,
    row_id: &str,
    plain: &[u8],
) -> Result<Vec<u8>, DomainError> {
    keyring
        .seal(purpose, row_id, plain)
        .map_err(DomainError::Internal)
}

/// How many playback private keys share a header, with one of them.
#[derive(QueryableByName)]
struct KeyGroup {
    #[diesel(sql_type = Text)]
    kid: String,
    #[diesel(sql_type = Bytea)]
    private_key: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

impl Store {
    /// The shared secret `name`: the stored one, or `candidate` if none was
    /// stored yet. Replicas starting together agree on one value.
    pub async fn shared_secret(
        &self,
        name: &str,
        candidate: &[u8],
    ) -> Result<Vec<u8>, DomainError> {
        let keyring = self.keyring();
        let sealed = seal(keyring, Purpose::ServiceSecret, name, candidate)?;
        let mut conn = self.conn().await?;
        diesel::insert_into(service_secrets::table)
            .values((
                service_secrets::name.eq(name),
                service_secrets::value.eq(sealed),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        let stored: Vec<u8> = service_secrets::table
            .find(name)
            .select(service_secrets::value)
            .first(&mut conn)
            .await
            .map_err(db_error)?;
        Ok(open(keyring, Purpose::ServiceSecret, name, &stored)?.to_vec())
    }

    /// The shared secret `name` as stored, opened; `None` when there is none
    /// yet. Reads only (`usermgmt bench-tokens` signs its benchmark tokens with it).
    pub async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, DomainError> {
        let mut conn = self.conn().await?;
        let stored: Option<Vec<u8>> = service_secrets::table
            .find(name)
            .select(service_secrets::value)
            .first(&mut conn)
            .await
            .optional()
            .map_err(db_error)?;
        stored
            .map(|stored| Ok(open(self.keyring(), Purpose::ServiceSecret, name, &stored)?.to_vec()))
            .transpose()
    }

    /// Checks at start that the keyring opens every stored secret: each
    /// shared secret, and one playback key per key-encryption key (a KEK's
    /// id is a hash of it, so one that opens one key opens all of its).
    /// Fails naming the first secret that does not open.
    pub async fn check_secrets_at_rest(&self) -> Result<SecretsAtRest, DomainError> {
        let keyring = self.keyring();
        let mut conn = self.conn().await?;
        let shared: Vec<(String, Vec<u8>)> = service_secrets::table
            .select((service_secrets::name, service_secrets::value))
            .order(service_secrets::name)
            .load(&mut conn)
            .await?;
        let mut found = SecretsAtRest::default();
        for (name, stored) in &shared {
            open(keyring, Purpose::ServiceSecret, name, stored)?;
            found.count(keyring, stored, 1);
        }
        for group in playback_key_groups(&mut conn).await? {
            open(
                keyring,
                Purpose::PlaybackPrivateKey,
                &group.kid,
                &group.private_key,
            )?;
            found.count(keyring, &group.private_key, group.count);
        }
        Ok(found)
    }

    /// Re-seals every stored secret with the sealing key-encryption key, in
    /// one transaction: plain ones and those sealed with a previous key
    /// (which the keyring must open). Nothing changes if one does not open.
    pub async fn rewrap_secrets(&self) -> Result<Rewrapped, DomainError> {
        let keyring = self.keyring();
        if keyring.sealing_id().is_none() {
            return Err(DomainError::Internal(
                "no key-encryption key to seal with".into(),
            ));
        }
        self.operate(async |conn| {
            let mut done = rewrap_shared_secrets(conn, keyring).await?;
            let (keys, resealed) = rewrap_playback_keys(conn, keyring).await?;
            for more in [keys, rewrap_mail_payloads(conn, keyring).await?] {
                done.sealed += more.sealed;
                done.unchanged += more.unchanged;
            }
            // The deployment's secrets and the mail rows are no
            // organisation's resources; each re-sealed signing key is a
            // change of its organisation.
            let change = resealed
                .into_iter()
                .fold(Change::unchanged(done), |change, (organisation_id, kid)| {
                    change.and_in(organisation_id, rewrap_audit(&kid))
                });
            Ok(change)
        })
        .await
    }
}

impl SecretsAtRest {
    fn count(&mut self, keyring: &Keyring, stored: &[u8], rows: i64) {
        match sealing_of(stored) {
            Ok(Sealing::Plain) => self.plain += rows,
            _ if keyring.is_current(stored) => {}
            _ => self.sealed_with_previous += rows,
        }
    }
}

/// The playback private keys grouped by their first bytes (the sealed
/// header: magic, version and KEK id), with one key of each group.
async fn playback_key_groups(conn: &mut AsyncPgConnection) -> Result<Vec<KeyGroup>, DomainError> {
    Ok(diesel::sql_query(
        "SELECT k.kid, k.private_key, g.count \
         FROM (SELECT min(kid) AS kid, count(*) AS count \
               FROM playback_signing_keys GROUP BY substring(private_key FROM 1 FOR 16)) g \
         JOIN playback_signing_keys k ON k.kid = g.kid \
         ORDER BY k.kid",
    )
    .load(conn)
    .await?)
}

/// `stored`, re-sealed with the sealing KEK unless it is sealed with it.
fn rewrapped(
    keyring: &Keyring,
    purpose: Purpose,
    row_id: &str,
    stored: &[u8],
) -> Result<Option<Vec<u8>>, DomainError> {
    if keyring.is_current(stored) {
        // Opened anyway: a value sealed for another row must not pass.
        open(keyring, purpose, row_id, stored)?;
        return Ok(None);
    }
    let plain = open(keyring, purpose, row_id, stored)?;
    seal(keyring, purpose, row_id, &plain).map(Some)
}

async fn rewrap_shared_secrets(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
) -> Result<Rewrapped, DomainError> {
    let rows: Vec<(String, Vec<u8>)> = service_secrets::table
        .select((service_secrets::name, service_secrets::value))
        .order(service_secrets::name)
        .for_update()
        .load(conn.pg())
        .await?;
    let mut done = Rewrapped::default();
    for (name, stored) in rows {
        match rewrapped(keyring, Purpose::ServiceSecret, &name, &stored)? {
            Some(sealed) => {
                diesel::update(service_secrets::table.find(&name))
                    .set(service_secrets::value.eq(sealed))
                    .execute(conn.pg())
                    .await?;
                done.sealed += 1;
            }
            None => done.unchanged += 1,
        }
    }
    Ok(done)
}

/// Re-seals the playback signing keys; returns the counts and the keys
/// re-sealed, each with its organisation.
async fn rewrap_playback_keys(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
) -> Result<(Rewrapped, Vec<(Uuid, String)>), DomainError> {
    let mut done = Rewrapped::default();
    let mut resealed = Vec::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, Uuid, Vec<u8>)> = keys::table
            .filter(keys::kid.gt(&after))
            .select((keys::kid, keys::organisation_id, keys::private_key))
            .order(keys::kid)
            .limit(REWRAP_BATCH)
            .for_update()
            .load(conn.pg())
            .await?;
        let Some((last, _, _)) = rows.last() else {
            return Ok((done, resealed));
        };
        after = last.clone();
        for (kid, organisation_id, stored) in rows {
            match rewrapped(keyring, Purpose::PlaybackPrivateKey, &kid, &stored)? {
                Some(sealed) => {
                    diesel::update(keys::table.find(&kid))
                        .set(keys::private_key.eq(sealed))
                        .execute(conn.pg())
                        .await?;
                    done.sealed += 1;
                    resealed.push((organisation_id, kid));
                }
                None => done.unchanged += 1,
            }
        }
    }
}

/// The audit event of a signing key's re-sealing (its public half and
/// validity are as they were: the feed repeats them).
fn rewrap_audit(kid: &str) -> Audit {
    Audit {
        action: PLAYBACK_KEY_REWRAP,
        target_type: "playback_key",
        target_id: kid.to_owned(),
        target_label: String::new(),
        before: None,
        after: Some("private key re-sealed with the current key-encryption key".into()),
        owner: None,
    }
}

/// Re-seals the payloads of the mail outbox, so that a mail queued before a
/// rotation is still sent after the previous key is discarded.
async fn rewrap_mail_payloads(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
) -> Result<Rewrapped, DomainError> {
    let rows: Vec<(uuid::Uuid, Vec<u8>)> = mail_outbox::table
        .select((mail_outbox::id, mail_outbox::payload))
        .order(mail_outbox::id)
        .for_update()
        .load(conn.pg())
        .await?;
    let mut done = Rewrapped::default();
    for (id, stored) in rows {
        match rewrapped(keyring, Purpose::MailPayload, &id.to_string(), &stored)? {
            Some(sealed) => {
                diesel::update(mail_outbox::table.find(id))
                    .set(mail_outbox::payload.eq(sealed))
                    .execute(conn.pg())
                    .await?;
                done.sealed += 1;
            }
            None => done.unchanged += 1,
        }
    }
    Ok(done)
}
