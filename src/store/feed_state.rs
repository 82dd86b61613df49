//! The state each target of a change is left in, read in the change's own
//! transaction after the change (so exactly what it committed): the domain
//! value the Get and List RPCs return, the user it belongs to, when it ends
//! on its own, or none when it no longer exists (a tombstone). One query per
//! type of target, whatever the number of targets (seeding records
//! thousands in one change).
//!
//! What counts as "no longer exists" is what the List RPCs leave out: a
//! session ended or expired, an invite accepted, revoked or expired, an API
//! token revoked, expired or made under a tokenKey its user no longer has, a
//! signing key revoked or past its `verify_until`. A playback token stays
//! (with `revoked_at`) until it is forgotten: its revocation is what edge
//! servers need to know, until it expires.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::feed::Captured;
use super::models::{InviteRow, PublicKeyRow};
use super::schema::{
    invites, playback_signing_keys as keys, playback_tokens as tokens, service_credentials,
};
use crate::domain::DomainError;
use crate::domain::change::{
    PlaybackTokenInfo, ServiceInfo, SigningKeyInfo, TargetState, TargetType, UserInfo,
};
use crate::domain::invite::Invite;

/// The states of `targets` (each a target type and id, as the audit log
/// names them) of `organisation_id`, in their order.
pub(super) async fn capture(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    targets: &[(&str, &str)],
) -> Result<Vec<Captured>, DomainError> {
    let mut by_type: HashMap<TargetType, Vec<&str>> = HashMap::new();
    for (target_type, target_id) in targets {
        let Some(target_type) = TargetType::parse(target_type) else {
            return Err(DomainError::Internal(format!(
                "an audited change names an unknown target type {target_type:?}"
            )));
        };
        by_type.entry(target_type).or_default().push(target_id);
    }
    let mut found: HashMap<(TargetType, String), Captured> = HashMap::new();
    let now = Utc::now();
    for (target_type, ids) in by_type {
        let states = match target_type {
            TargetType::User => users(conn, organisation_id, &ids).await?,
            TargetType::Invite => invite_states(conn, organisation_id, &ids, now).await?,
            TargetType::Session => sessions(conn, organisation_id, &ids, now).await?,
            TargetType::ApiToken => api_tokens(conn, organisation_id, &ids).await?,
            TargetType::PlaybackToken => playback_tokens(conn, organisation_id, &ids).await?,
            TargetType::PlaybackKey => signing_keys(conn, organisation_id, &ids, now).await?,
            TargetType::Organisation => organisation(conn, organisation_id, &ids).await?,
            TargetType::Service => services(conn, &ids).await?,
        };
        found.extend(
            states
                .into_iter()
                .map(|(id, captured)| ((target_type, id), captured)),
        );
    }
    Ok(targets
        .iter()
        .map(|(target_type, target_id)| {
            TargetType::parse(target_type)
                .and_then(|t| found.get(&(t, (*target_id).to_owned())))
                .map_or_else(Captured::default, |captured| Captured {
                    owner: captured.owner,
                    state: captured.state.clone(),
                    expires_at: captured.expires_at,
                })
        })
        .collect())
}

/// The ids that are UUIDs (a target id that is not names nothing).
fn uuids(ids: &[&str]) -> Vec<Uuid> {
    ids.iter()
        .filter_map(|id| Uuid::try_parse(id).ok())
        .collect()
}

type States = Vec<(String, Captured)>;

async fn users(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
) -> Result<States, DomainError> {
    Ok(super::users::by_ids(conn, organisation_id, &uuids(ids))
        .await?
        .into_iter()
        .map(|user| {
            let captured = Captured {
                owner: Some(user.id),
                state: Some(TargetState::User(UserInfo::from(&user))),
                expires_at: None,
            };
            (user.id.to_string(), captured)
        })
        .collect())
}

async fn invite_states(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<States, DomainError> {
    // An invite, when it was accepted and when it was revoked.
    type Row = (InviteRow, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = invites::table
        .filter(invites::organisation_id.eq(organisation_id))
        .filter(invites::id.eq_any(uuids(ids)))
        .select((
            InviteRow::as_select(),
            invites::accepted_at,
            invites::revoked_at,
        ))
        .load(conn.pg())
        .await?;
    rows.into_iter()
        .map(|(row, accepted_at, revoked_at)| {
            let invite = Invite::try_from(row)?;
            let pending = accepted_at.is_none() && revoked_at.is_none() && invite.expires_at > now;
            let captured = if pending {
                Captured {
                    owner: None,
                    expires_at: Some(invite.expires_at),
                    state: Some(TargetState::Invite(invite.clone())),
                }
            } else {
                Captured::default()
            };
            Ok((invite.id.to_string(), captured))
        })
        .collect()
}

async fn sessions(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<States, DomainError> {
    Ok(super::sessions::by_ids(conn, organisation_id, &uuids(ids))
        .await?
        .into_iter()
        .map(|session| {
            let id = session.id.to_string();
            let owner = Some(session.user_id);
            let captured = if session.live(now) {
                Captured {
                    owner,
                    expires_at: Some(session.expires_at),
                    state: Some(TargetState::Session(session)),
                }
            } else {
                Captured {
                    owner,
                    ..Captured::default()
                }
            };
            (id, captured)
        })
        .collect())
}

async fn api_tokens(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
) -> Result<States, DomainError> {
    Ok(
        super::api_tokens::by_ids(conn, organisation_id, &uuids(ids))
            .await?
            .into_iter()
            .map(|(token, works)| {
                let id = token.id.to_string();
                let owner = Some(token.user_id);
                let captured = if works {
                    Captured {
                        owner,
                        expires_at: Some(token.expires_at),
                        state: Some(TargetState::ApiToken(token)),
                    }
                } else {
                    Captured {
                        owner,
                        ..Captured::default()
                    }
                };
                (id, captured)
            })
            .collect(),
    )
}

async fn playback_tokens(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
) -> Result<States, DomainError> {
    type Row = (
        Uuid,
        String,
        bool,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = tokens::table
        .filter(tokens::organisation_id.eq(organisation_id))
        .filter(tokens::jti.eq_any(uuids(ids)))
        .select((
            tokens::jti,
            tokens::kid,
            tokens::revocable,
            tokens::scope,
            tokens::expires_at,
            tokens::revoked_at,
        ))
        .load(conn.pg())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(jti, kid, revocable, scope, expires_at, revoked_at)| {
            let info = PlaybackTokenInfo {
                token_id: jti,
                scope,
                revocable,
                expires_at,
                revoked_at,
                kid,
            };
            let captured = Captured {
                owner: None,
                expires_at: Some(expires_at),
                state: Some(TargetState::PlaybackToken(info)),
            };
            (jti.to_string(), captured)
        })
        .collect())
}

async fn signing_keys(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<States, DomainError> {
    let rows: Vec<PublicKeyRow> = keys::table
        .filter(keys::organisation_id.eq(organisation_id))
        .filter(keys::kid.eq_any(ids))
        .select(PublicKeyRow::as_select())
        .load(conn.pg())
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            // As `Store::verifying_keys`: the current key, or a retired one
            // until its verify_until, never a revoked one.
            let verifies = row.revoked_at.is_none()
                && (row.retired_at.is_none() || row.verify_until.is_some_and(|until| until > now));
            let kid = row.kid.clone();
            let captured = if verifies {
                Captured {
                    owner: None,
                    expires_at: row.retired_at.and(row.verify_until),
                    state: Some(TargetState::PlaybackKey(SigningKeyInfo::from(row))),
                }
            } else {
                Captured::default()
            };
            (kid, captured)
        })
        .collect())
}

async fn organisation(
    conn: &mut Tx<'_>,
    organisation_id: Uuid,
    ids: &[&str],
) -> Result<States, DomainError> {
    // An organisation's changes name no other organisation.
    let own = organisation_id.to_string();
    if !ids.iter().any(|id| *id == own) {
        return Ok(Vec::new());
    }
    let state = match super::organisations::load(conn, organisation_id).await {
        Ok(organisation) => Some(TargetState::Organisation(organisation)),
        Err(DomainError::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    Ok(vec![(
        own,
        Captured {
            state,
            ..Captured::default()
        },
    )])
}

async fn services(conn: &mut Tx<'_>, ids: &[&str]) -> Result<States, DomainError> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> = service_credentials::table
        .filter(service_credentials::id.eq_any(uuids(ids)))
        .filter(service_credentials::revoked_at.is_null())
        .select((
            service_credentials::id,
            service_credentials::name,
            service_credentials::created_at,
        ))
        .load(conn.pg())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, created_at)| {
            let captured = Captured {
                state: Some(TargetState::Service(ServiceInfo {
                    id,
                    name,
                    created_at,
                })),
                ..Captured::default()
            };
            (id.to_string(), captured)
        })
        .collect())
}
