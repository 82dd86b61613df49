//! Playback tokens: the signing keys of each organisation and what was
//! issued (never the tokens). The write path takes the organisation's row
//! first: issuing holds it shared, rotating exclusively, so a rotation sees
//! every token its old key signed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Store;
use super::Tx;
use super::audit::Audit;
use super::models::{PlaybackTokenRow, PublicKeyRow, SigningKeyRow};
use super::schema::{organisations, playback_signing_keys as keys, playback_tokens as tokens};
use super::secrets;
use super::text::StoredText as _;
use crate::domain::DomainError;
use crate::domain::actor::ChangeContext;
use crate::domain::audit::{
    PLAYBACK_KEY_CREATE, PLAYBACK_KEY_RETIRE, PLAYBACK_KEY_REVOKE, PLAYBACK_KEY_ROTATE,
    PLAYBACK_TOKEN_ISSUE, PLAYBACK_TOKEN_REVOKE,
};
use crate::domain::playback::{self, SigningAlgorithm};
use crate::sealing::{Keyring, Purpose};

/// A new signing key, as the caller generated it. Deliberately not `Debug`:
/// it holds the private key.
pub struct NewSigningKey {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub private_der: Vec<u8>,
    pub public_key: Vec<u8>,
}

/// What is recorded of a token about to be signed.
#[derive(Debug)]
pub struct NewPlaybackToken<'a> {
    pub jti: Uuid,
    pub revocable: bool,
    pub scope: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Issued tokens are forgotten a day after they expired: by then they fail
/// as expired whatever the list says.
const FORGET_AFTER: chrono::Duration = chrono::Duration::days(1);

fn key_audit(action: &'static str, kid: &str, before: Option<String>, after: &str) -> Audit {
    Audit {
        action,
        target_type: "playback_key",
        target_id: kid.to_owned(),
        target_label: String::new(),
        before,
        after: Some(after.to_owned()),
        owner: None,
    }
}

async fn current_key(
    conn: &mut AsyncPgConnection,
    organisation_id: Uuid,
) -> Result<Option<SigningKeyRow>, DomainError> {
    Ok(keys::table
        .filter(keys::organisation_id.eq(organisation_id))
        .filter(keys::retired_at.is_null())
        .select(SigningKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Inserts `key` as the organisation's current key unless it has one.
/// Returns whether it was inserted.
async fn insert_key(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
    organisation_id: Uuid,
    key: &NewSigningKey,
) -> Result<bool, DomainError> {
    let private_key = secrets::seal(
        keyring,
        Purpose::PlaybackPrivateKey,
        &key.kid,
        &key.private_der,
    )?;
    let inserted = diesel::insert_into(keys::table)
        .values((
            keys::kid.eq(&key.kid),
            keys::organisation_id.eq(organisation_id),
            keys::alg.eq(key.alg.stored()),
            keys::private_key.eq(private_key),
            keys::public_key.eq(&key.public_key),
        ))
        .on_conflict_do_nothing()
        .execute(conn.pg())
        .await?;
    Ok(inserted == 1)
}

/// The current key, created with `new_key` when there is none (with the
/// audit event of its creation).
async fn current_or_new_key(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
    organisation_id: Uuid,
    new_key: impl FnOnce() -> Result<NewSigningKey, DomainError>,
) -> Result<(SigningKeyRow, Option<Audit>), DomainError> {
    if let Some(key) = current_key(conn.pg(), organisation_id).await? {
        return Ok((key, None));
    }
    let key = new_key()?;
    let created = insert_key(conn, keyring, organisation_id, &key)
        .await?
        .then(|| key_audit(PLAYBACK_KEY_CREATE, &key.kid, None, key.alg.as_str()));
    // Either ours or the one a concurrent issue inserted first.
    let current = current_key(conn.pg(), organisation_id)
        .await?
        .ok_or_else(|| DomainError::Internal("no current playback signing key".into()))?;
    Ok((current, created))
}

/// Records a token about to be issued in a secure organisation (on the write
/// path, which holds the organisation's row shared) within its ceiling on
/// lifetimes, and returns the key to sign it with (the current key, created
/// with `new_key` on the organisation's first issue) and the audit events.
pub async fn record_token(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
    ctx: &ChangeContext,
    token: NewPlaybackToken<'_>,
    new_key: impl FnOnce() -> Result<NewSigningKey, DomainError>,
) -> Result<(SigningKeyRow, Vec<Audit>), DomainError> {
    let (secure, ceiling_seconds): (bool, i64) = organisations::table
        .find(ctx.organisation_id)
        .select((
            organisations::secure_playback,
            organisations::max_non_revocable_lifetime_seconds,
        ))
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("organisation"))?;
    if !secure {
        return Err(playback::not_secure_organisation());
    }
    let ceiling = std::time::Duration::from_secs(ceiling_seconds.try_into().unwrap_or(0));
    playback::check_ceiling(Utc::now(), token.expires_at, token.revocable, ceiling)?;
    let (mut key, created) =
        current_or_new_key(conn, keyring, ctx.organisation_id, new_key).await?;
    key.private_key = secrets::open(
        keyring,
        Purpose::PlaybackPrivateKey,
        &key.kid,
        &key.private_key,
    )?
    .to_vec();
    diesel::insert_into(tokens::table)
        .values((
            tokens::jti.eq(token.jti),
            tokens::organisation_id.eq(ctx.organisation_id),
            tokens::kid.eq(&key.kid),
            tokens::issued_by.eq(ctx.actor.to_string()),
            tokens::revocable.eq(token.revocable),
            tokens::scope.eq(token.scope),
            tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn.pg())
        .await?;
    diesel::delete(tokens::table.filter(tokens::expires_at.lt(Utc::now() - FORGET_AFTER)))
        .execute(conn.pg())
        .await?;
    let after = format!(
        "{}; expires {}; {}",
        token.scope,
        token.expires_at.to_rfc3339(),
        if token.revocable {
            "revocable"
        } else {
            "not revocable"
        }
    );
    let issued = Audit {
        action: PLAYBACK_TOKEN_ISSUE,
        target_type: "playback_token",
        target_id: token.jti.to_string(),
        target_label: key.kid.clone(),
        before: None,
        after: Some(after),
        owner: None,
    };
    Ok((key, created.into_iter().chain([issued]).collect()))
}

/// Makes `key` the organisation's current key (on the write path, which
/// holds the organisation's row exclusively). The old one retires but keeps
/// verifying until the last token it signed expires, or, with
/// `revoke_previous`, is revoked with every older key that still verifies,
/// and they verify nothing from now on. Returns
/// the new key, the retired key's id and the audit events.
pub async fn rotate_key(
    conn: &mut Tx<'_>,
    keyring: &Keyring,
    organisation_id: Uuid,
    key: &NewSigningKey,
    revoke_previous: bool,
) -> Result<(PublicKeyRow, Option<String>, Vec<Audit>), DomainError> {
    let old = current_key(conn.pg(), organisation_id).await?;
    let mut audits = Vec::new();
    if revoke_previous {
        if let Some(old) = &old {
            retire_now(conn, &old.kid).await?;
        }
        for (kid, alg) in revoke_still_verifying(conn, organisation_id).await? {
            audits.push(key_audit(
                PLAYBACK_KEY_REVOKE,
                &kid,
                Some(alg),
                "revoked: verifies no token any more",
            ));
        }
    } else if let Some(old) = &old {
        retire(conn, &old.kid).await?;
        audits.push(key_audit(
            PLAYBACK_KEY_RETIRE,
            &old.kid,
            Some(old.alg.clone()),
            "retired: verifies the tokens it signed until they expire",
        ));
    }
    if !insert_key(conn, keyring, organisation_id, key).await? {
        return Err(DomainError::Aborted("a concurrent rotation won".into()));
    }
    let old_kid = old.map(|old| old.kid);
    audits.push(key_audit(
        PLAYBACK_KEY_ROTATE,
        &key.kid,
        old_kid.clone(),
        key.alg.as_str(),
    ));
    let new = keys::table
        .find(&key.kid)
        .select(PublicKeyRow::as_select())
        .first(conn.pg())
        .await?;
    Ok((new, old_kid, audits))
}

/// Revokes a revocable token of the organisation; returns when it was
/// revoked, and the audit event when it was revoked just now. Revoking it
/// again changes nothing.
pub async fn revoke_token(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    jti: Uuid,
) -> Result<(DateTime<Utc>, Option<Audit>), DomainError> {
    let token: PlaybackTokenRow = tokens::table
        .filter(tokens::organisation_id.eq(organisation_id))
        .filter(tokens::jti.eq(jti))
        .select(PlaybackTokenRow::as_select())
        .for_update()
        .first(conn.pg())
        .await
        .optional()?
        .ok_or(DomainError::NotFound("playback token"))?;
    if !token.revocable {
        return Err(playback::not_revocable());
    }
    if let Some(revoked_at) = token.revoked_at {
        return Ok((revoked_at, None));
    }
    // As stored (microseconds), so that a second revocation reports the same.
    let revoked_at: Option<DateTime<Utc>> = diesel::update(tokens::table.find(jti))
        .set(tokens::revoked_at.eq(Utc::now()))
        .returning(tokens::revoked_at)
        .get_result(conn.pg())
        .await?;
    let audit = Audit {
        action: PLAYBACK_TOKEN_REVOKE,
        target_type: "playback_token",
        target_id: jti.to_string(),
        target_label: String::new(),
        before: Some(token.scope),
        after: Some("revoked".into()),
        owner: None,
    };
    let revoked_at =
        revoked_at.ok_or_else(|| DomainError::Internal("revoked_at not set".into()))?;
    Ok((revoked_at, Some(audit)))
}

impl Store {
    /// The algorithm of the organisation's current key, if it has one.
    pub async fn current_signing_algorithm(
        &self,
        organisation_id: Uuid,
    ) -> Result<Option<SigningAlgorithm>, DomainError> {
        let mut conn = self.conn().await?;
        let key = current_key(&mut conn, organisation_id).await?;
        key.map(|key| SigningAlgorithm::from_stored(&key.alg))
            .transpose()
    }

    /// The public half of the key `kid`, of any organisation, with its
    /// retirement and revocation (cached; a change of the key evicts it).
    pub async fn playback_public_key(
        &self,
        kid: &str,
    ) -> Result<Option<Arc<PublicKeyRow>>, DomainError> {
        self.read_through(
            |cache| cache.playback_key(kid),
            async || {
                let mut conn = self.conn().await?;
                Ok(keys::table
                    .find(kid)
                    .select(PublicKeyRow::as_select())
                    .first(&mut conn)
                    .await
                    .optional()?
                    .map(Arc::new))
            },
            |cache, epoch, key| cache.put_playback_key(epoch, key),
        )
        .await
    }

    /// Every key that still verifies tokens, of every organisation.
    pub async fn verifying_keys(&self) -> Result<Vec<PublicKeyRow>, DomainError> {
        let mut conn = self.conn().await?;
        Ok(keys::table
            .filter(
                keys::retired_at
                    .is_null()
                    .or(keys::verify_until.gt(Utc::now())),
            )
            .filter(keys::revoked_at.is_null())
            .select(PublicKeyRow::as_select())
            .order((keys::organisation_id, keys::created_at))
            .load(&mut conn)
            .await?)
    }

    /// Whether the token `jti` was revoked; `None` if it is not on record.
    pub async fn playback_token_revoked(&self, jti: Uuid) -> Result<Option<bool>, DomainError> {
        let mut conn = self.conn().await?;
        let revoked_at: Option<Option<DateTime<Utc>>> = tokens::table
            .find(jti)
            .select(tokens::revoked_at)
            .first(&mut conn)
            .await
            .optional()?;
        Ok(revoked_at.map(|at| at.is_some()))
    }
}

/// Retires a key: it verifies until the last token it signed has expired
/// (issuing holds the organisation's row shared, so none is in flight).
async fn retire(conn: &mut Tx<'_>, kid: &str) -> Result<(), DomainError> {
    let last_expiry: Option<DateTime<Utc>> = tokens::table
        .filter(tokens::kid.eq(kid))
        .select(diesel::dsl::max(tokens::expires_at))
        .first(conn.pg())
        .await?;
    let now = Utc::now();
    diesel::update(keys::table.find(kid))
        .set((
            keys::retired_at.eq(now),
            keys::verify_until.eq(last_expiry.unwrap_or(now).max(now)),
        ))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Retires a key from now on (it is about to be revoked).
async fn retire_now(conn: &mut Tx<'_>, kid: &str) -> Result<(), DomainError> {
    diesel::update(keys::table.find(kid))
        .set(keys::retired_at.eq(Utc::now()))
        .execute(conn.pg())
        .await?;
    Ok(())
}

/// Revokes every retired key of the organisation that still verifies: from
/// now on none verifies anything, whatever tokens it signed and whatever a
/// holder of its private half signs (a leak of one key is likely a leak of
/// the table). Returns their ids and algorithms.
async fn revoke_still_verifying(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
) -> Result<Vec<(String, String)>, DomainError> {
    let now = Utc::now();
    Ok(diesel::update(
        keys::table
            .filter(keys::organisation_id.eq(organisation_id))
            .filter(keys::retired_at.is_not_null())
            .filter(keys::revoked_at.is_null())
            .filter(keys::verify_until.is_null().or(keys::verify_until.gt(now))),
    )
    .set((keys::verify_until.eq(now), keys::revoked_at.eq(now)))
    .returning((keys::kid, keys::alg))
    .get_results(conn.pg())
    .await?)
}
