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
use crate::domain::audit::{AuditEvent, AuditFilter, SequenceCursor, is_change};
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
    /// The user the target belongs to (a session's or API token's, a user
    /// itself), for the change feed: who may see the change, tombstones
    /// included (when the row is gone, this is all that says whose it was).
    pub owner: Option<Uuid>,
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
            owner: Some(user.id),
        }
    }

    /// A session's event, labelled with its user.
    pub fn session(action: &'static str, session_id: Uuid, user: &User) -> Self {
        Self::session_of(action, session_id, user.id, &user.email)
    }

    /// A session's event, labelled with the email of its user `user_id`.
    pub fn session_of(action: &'static str, session_id: Uuid, user_id: Uuid, email: &str) -> Self {
        Audit {
            action,
            target_type: "session",
            target_id: session_id.to_string(),
            target_label: email.to_owned(),
            before: None,
            after: Some(format!("user {user_id}")),
            owner: Some(user_id),
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
            owner: Some(token.user_id),
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
            owner: None,
        }
    }
}

/// Who a change's audit events are made by (unless an event names its own
/// actor): in which organisation, by whom, for which call.
pub(super) struct Author<'a> {
    pub organisation_id: Uuid,
    pub actor: &'a Actor,
    pub request_id: Option<&'a str>,
}

impl<'a> Author<'a> {
    /// The caller of a write.
    pub fn of(ctx: &'a ChangeContext) -> Self {
        Author {
            organisation_id: ctx.organisation_id,
            actor: &ctx.actor,
            request_id: ctx.request_id.as_deref(),
        }
    }
}

/// The most audit rows one statement inserts (each binds 15 parameters, and
/// a statement binds at most 65,535).
const INSERT_BATCH: usize = 1000;

/// Writes the audit events of a change, on the change's own connection (and
/// so in its transaction), each as made by `author`'s actor or the actor it
/// names. When one of them records a change of the organisation's state, the
/// change takes the organisation's next sequence number, and every event
/// that does is a target of it, with the target's state after the change.
/// Returns the change's position in the feed.
pub(super) async fn record(
    conn: &mut Tx<'_>,
    author: Author<'_>,
    audits: Vec<(Option<Actor>, Audit)>,
) -> Result<Option<Position>, DomainError> {
    if audits.is_empty() {
        return Ok(None);
    }
    let organisation_id = author.organisation_id;
    let targets: Vec<(&str, &str)> = audits
        .iter()
        .filter(|(_, audit)| is_change(audit.action))
        .map(|(_, audit)| (audit.target_type, audit.target_id.as_str()))
        .collect();
    let (position, captured) = if targets.is_empty() {
        (None, Vec::new())
    } else {
        let captured = feed::capture(conn, organisation_id, &targets).await?;
        (
            Some(feed::next_change(conn, organisation_id).await?),
            captured,
        )
    };
    let mut captured = captured.into_iter();
    let occurred_at = position
        .and_then(|position| position.committed_at)
        .unwrap_or_else(Utc::now);
    let mut rows = Vec::with_capacity(audits.len());
    for (actor, audit) in audits {
        let actor = actor.as_ref().unwrap_or(author.actor).to_string();
        let (sequence, captured) = match position {
            Some(position) if is_change(audit.action) => (
                Some(position.sequence),
                captured.next().ok_or_else(|| {
                    DomainError::Internal("a change's target was not captured".into())
                })?,
            ),
            _ => (None, feed::Captured::default()),
        };
        let state = captured
            .state
            .map(serde_json::to_value)
            .transpose()
            .map_err(|error| DomainError::Internal(format!("a change's state: {error}")))?;
        let owner_id = match sequence {
            Some(_) => captured.owner.or(audit.owner),
            None => None,
        };
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
            request_id: author.request_id.map(str::to_owned),
            sequence,
            owner_id,
            state,
            expires_at: captured.expires_at,
        });
    }
    for batch in rows.chunks(INSERT_BATCH) {
        diesel::insert_into(audit_events::table)
            .values(batch)
            .execute(conn.pg())
            .await?;
    }
    Ok(position)
}

type AuditSelect = diesel::dsl::IntoBoxed<
    'static,
    diesel::dsl::Select<audit_events::table, diesel::dsl::AsSelect<AuditRow, diesel::pg::Pg>>,
    diesel::pg::Pg,
>;

/// The organisation's events that match `filter` (but its
/// `after_sequence`), boxed.
fn filtered(organisation_id: Uuid, filter: &AuditFilter) -> AuditSelect {
    let mut query = audit_events::table
        .select(AuditRow::as_select())
        .into_boxed()
        .filter(audit_events::organisation_id.eq(organisation_id));
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
    query
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
        let mut query = filtered(organisation_id, filter)
            .order(audit_events::id.desc())
            .limit(limit);
        if let Some(before_id) = before_id {
            query = query.filter(audit_events::id.lt(before_id));
        }
        let rows = query.load(&mut conn).await.map_err(db_error)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    /// A page of the organisation's audit events of the change feed's
    /// changes after `after_sequence`, oldest first by (sequence, id),
    /// after `after` (the last event of the previous page).
    pub async fn list_audit_events_by_sequence(
        &self,
        organisation_id: Uuid,
        filter: &AuditFilter,
        after_sequence: i64,
        after: Option<SequenceCursor>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, DomainError> {
        let mut conn = self.conn().await?;
        let mut query = filtered(organisation_id, filter)
            .filter(audit_events::sequence.gt(after_sequence))
            .order((audit_events::sequence.asc(), audit_events::id.asc()))
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(
                audit_events::sequence
                    .gt(after.sequence)
                    .or(audit_events::sequence
                        .eq(after.sequence)
                        .and(audit_events::id.gt(after.id))),
            );
        }
        let rows = query.load(&mut conn).await.map_err(db_error)?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }
}
