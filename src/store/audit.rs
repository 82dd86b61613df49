use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Tx;
use super::feed;
use super::models::AuditRow;
use super::schema::audit_events;
use super::{Store, db_error};
use crate::domain::DomainError;
use crate::domain::actor::{Actor, ChangeContext};
use crate::domain::api_token::ApiToken;
use crate::domain::audit::{AuditEvent, AuditFilter, is_change};
use crate::domain::change::Position;
use crate::domain::invite::Invite;
use crate::domain::user::User;

/// What a change records about itself.
pub struct Audit {
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub target_label: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Audit {
    pub fn user(
        action: &'static str,
        user: &User,
        before: Option<String>,
        after: Option<String>,
    ) -> Self {
        Audit {
            action,
            target_type: "user",
            target_id: user.id.to_string(),
            target_label: user.email.clone(),
            before,
            after,
        }
    }

    /// A session's event, labelled with its user.
    pub fn session(action: &'static str, session_id: Uuid, user: &User) -> Self {
        Audit {
            action,
            target_type: "session",
            target_id: session_id.to_string(),
            target_label: user.email.clone(),
            before: None,
            after: Some(format!("user {}", user.id)),
        }
    }

    /// A personal API token's event: labelled with its name, saying whose
    /// it is and what it may do (never the secret).
    pub fn api_token(action: &'static str, token: &ApiToken) -> Self {
        let permissions = if token.permissions.is_empty() {
            "the whole role".to_owned()
        } else {
            token
                .permissions
                .iter()
                .map(|p| p.id())
                .collect::<Vec<_>>()
                .join(",")
        };
        Audit {
            action,
            target_type: "api_token",
            target_id: token.id.to_string(),
            target_label: token.name.clone(),
            before: None,
            after: Some(format!(
                "user {}; permissions {permissions}; expires {}",
                token.user_id,
                token.expires_at.to_rfc3339()
            )),
        }
    }

    pub fn invite(action: &'static str, invite: &Invite, after: Option<String>) -> Self {
        Audit {
            action,
            target_type: "invite",
            target_id: invite.id.to_string(),
            target_label: invite.email.clone(),
            before: None,
            after,
        }
    }
}

/// Writes the audit events of a change, on the change's own connection (and
/// so in its transaction), each as made by `ctx`'s actor or the actor it
/// names. When one of them records a change of the organisation's state, the
/// change takes the organisation's next sequence number, and every event
/// that does is a target of it, with the target's state after the change.
/// Returns the change's position in the feed.
pub(super) async fn record(
    conn: &mut Tx<'_>,
    ctx: &ChangeContext,
    audits: Vec<(Option<Actor>, Audit)>,
) -> Result<Option<Position>, DomainError> {
    if audits.is_empty() {
        return Ok(None);
    }
    let organisation_id = ctx.organisation_id;
    let mut captured = Vec::with_capacity(audits.len());
    for (_, audit) in &audits {
        captured.push(if is_change(audit.action) {
            Some(feed::capture(conn, organisation_id, audit.target_type, &audit.target_id).await?)
        } else {
            None
        });
    }
    let position = if captured.iter().any(Option::is_some) {
        Some(feed::next_change(conn, organisation_id).await?)
    } else {
        None
    };
    let occurred_at = position
        .and_then(|position| position.committed_at)
        .unwrap_or_else(Utc::now);
    let mut rows = Vec::with_capacity(audits.len());
    for ((actor, audit), captured) in audits.into_iter().zip(captured) {
        let actor = actor.as_ref().unwrap_or(&ctx.actor).to_string();
        let (sequence, captured) = match (position, captured) {
            (Some(position), Some(captured)) => (Some(position.sequence), captured),
            _ => (None, feed::Captured::default()),
        };
        let state = captured
            .state
            .map(serde_json::to_value)
            .transpose()
            .map_err(|error| DomainError::Internal(format!("a change's state: {error}")))?;
        rows.push(AuditRow {
            id: Uuid::now_v7(),
            organisation_id,
            occurred_at,
            actor,
            action: audit.action.to_owned(),
            target_type: audit.target_type.to_owned(),
            target_id: audit.target_id,
            target_label: audit.target_label,
            before: audit.before,
            after: audit.after,
            request_id: ctx.request_id.clone(),
            sequence,
            owner_id: captured.owner,
            state,
            expires_at: captured.expires_at,
        });
    }
    diesel::insert_into(audit_events::table)
        .values(rows)
        .execute(conn.pg())
        .await?;
    Ok(position)
}

impl Store {
    /// A page of the organisation's audit events, newest first.
    pub async fn list_audit_events(
        &self,
        organisation_id: Uuid,
        filter: &AuditFilter,
        before_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        let mut conn = self.conn().await?;
        let mut query = audit_events::table
            .filter(audit_events::organisation_id.eq(organisation_id))
            .select(AuditRow::as_select())
            .order(audit_events::id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_events::actor.eq(actor.clone()));
        }
        if let Some(target_id) = &filter.target_id {
            query = query.filter(audit_events::target_id.eq(target_id.clone()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_events::action.eq(action.clone()));
        }
        if let Some(start) = filter.start_time {
            query = query.filter(audit_events::occurred_at.ge(start));
        }
        if let Some(end) = filter.end_time {
            query = query.filter(audit_events::occurred_at.lt(end));
        }
        if let Some(before_id) = before_id {
            query = query.filter(audit_events::id.lt(before_id));
        }
        let rows = query.load(&mut conn).await.map_err(db_error)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}
