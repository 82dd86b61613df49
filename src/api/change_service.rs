use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::{convert, playback_service, session_service};
use crate::app::changes::{Changes, Event, Start, WatchRequest, Watcher};
use crate::auth::ServiceCaller;
use crate::domain::DomainError;
use crate::domain::change::{
    ChangeFilter, ChangeRecord, Position, TargetChange, TargetState, TargetType,
};
use crate::domain::error::Violations;
use crate::domain::user::optional_id;
use crate::proto::{self, change_service_server::ChangeService};
use crate::status::to_status;

pub struct ChangeApi {
    pub changes: Arc<Changes>,
}

/// The most ids or types a filter may list.
const MAX_FILTER: usize = 100;

/// ListChanges' page size when none is asked, and the most it returns.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ChangeService for ChangeApi {
    type WatchChangesStream = WatchStream;

    async fn watch_changes(
        &self,
        request: Request<proto::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let who = watcher(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let (organisation_id, filter) = scope(
            &mut v,
            &request.organisation_id,
            &request.target_types,
            &request.target_ids,
        );
        let start = v.check(start(&request.resume_token, request.start));
        let heartbeat = v
            .check(convert::optional_duration(
                "heartbeat_interval",
                request.heartbeat_interval,
            ))
            .flatten();
        v.into_result()?;
        let (Some(filter), Some(start)) = (filter, start) else {
            return Err(Status::internal("internal error"));
        };
        let events = self
            .changes
            .watch(
                who,
                WatchRequest {
                    organisation_id,
                    start,
                    filter,
                    heartbeat,
                },
            )
            .await?;
        let stream = futures::stream::unfold(events, |mut events| async move {
            let event = events.next().await?;
            let item = match event {
                Ok(event) => Ok(proto::WatchChangesResponse {
                    event: Some(event_to_proto(event)),
                }),
                Err(error) => Err(to_status(error)),
            };
            Some((item, events))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_changes(
        &self,
        request: Request<proto::ListChangesRequest>,
    ) -> Result<Response<proto::ListChangesResponse>, Status> {
        let who = watcher(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let (organisation_id, filter) = scope(
            &mut v,
            &request.organisation_id,
            &request.target_types,
            &request.target_ids,
        );
        let after = v
            .check(optional_position("page_token", &request.page_token))
            .flatten();
        let page_size = match i64::from(request.page_size) {
            0 => DEFAULT_PAGE,
            n if n < 0 => {
                v.add("page_size", "must not be negative");
                DEFAULT_PAGE
            }
            n => n.min(MAX_PAGE),
        };
        v.into_result()?;
        let Some(filter) = filter else {
            return Err(Status::internal("internal error"));
        };
        let page = self
            .changes
            .list(&who, organisation_id, after, page_size, &filter)
            .await?;
        let next_page_token = if page.position.sequence < page.head {
            page.position.token()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListChangesResponse {
            changes: page
                .changes
                .iter()
                .map(|(change, previous)| change_to_proto(change, *previous))
                .collect(),
            next_page_token,
            head: page.head,
            resume_token: page.position.token(),
        }))
    }
}

/// The caller of a feed RPC: a registered service, or a member.
fn watcher<T>(request: &Request<T>) -> Result<Watcher, Status> {
    if let Some(service) = request.extensions().get::<ServiceCaller>() {
        return Ok(Watcher::Service(service.clone()));
    }
    super::principal(request).map(Watcher::Member)
}

/// The longest target id a filter may name.
const MAX_TARGET_ID: usize = 200;

/// The filters of a feed request; each bad element is named by its index
/// (`target_types[2]`), as every repeated field's are.
/// The organisation and the filter a feed request asks for (each None when
/// invalid, with its violations in `v`).
fn scope(
    v: &mut Violations,
    organisation_id: &str,
    types: &[String],
    ids: &[String],
) -> (Option<uuid::Uuid>, Option<ChangeFilter>) {
    let organisation_id = v
        .check(optional_id("organisation_id", organisation_id))
        .flatten();
    (organisation_id, v.check(filter(types, ids)))
}

fn filter(types: &[String], ids: &[String]) -> Result<ChangeFilter, DomainError> {
    let mut v = Violations::default();
    if types.len() > MAX_FILTER {
        v.add("target_types", format!("at most {MAX_FILTER}"));
    }
    if ids.len() > MAX_FILTER {
        v.add("target_ids", format!("at most {MAX_FILTER}"));
    }
    v.into_result()?;
    let mut v = Violations::default();
    let mut target_types = Vec::with_capacity(types.len());
    for (i, name) in types.iter().enumerate() {
        match TargetType::parse(name) {
            Some(target_type) => target_types.push(target_type),
            None => v.add(
                format!("target_types[{i}]"),
                "must be one of user, invite, session, api_token, playback_token, \
                 playback_key, organisation",
            ),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() || id.len() > MAX_TARGET_ID {
            v.add(
                format!("target_ids[{i}]"),
                format!("must be 1 to {MAX_TARGET_ID} bytes"),
            );
        }
    }
    v.into_result()?;
    Ok(ChangeFilter {
        target_types,
        target_ids: ids.to_vec(),
    })
}

fn optional_position(field: &str, token: &str) -> Result<Option<Position>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > 200 {
        return Err(DomainError::invalid(
            field,
            "is not a resume token of the change feed",
        ));
    }
    Position::from_token(field, token).map(Some)
}

fn start(resume_token: &str, start: i32) -> Result<Start, DomainError> {
    let start = proto::ChangeStart::try_from(start)
        .map_err(|_| DomainError::invalid("start", "is not a start point"))?;
    match (optional_position("resume_token", resume_token)?, start) {
        (Some(position), proto::ChangeStart::Unspecified) => Ok(Start::Resume(position)),
        (Some(_), _) => Err(DomainError::invalid(
            "start",
            "must be unset when a resume token is given",
        )),
        (None, proto::ChangeStart::Snapshot) => Ok(Start::Snapshot),
        (None, proto::ChangeStart::Now | proto::ChangeStart::Unspecified) => Ok(Start::Now),
    }
}

fn event_to_proto(event: Event) -> proto::watch_changes_response::Event {
    use proto::watch_changes_response::Event as E;
    match event {
        Event::Change { change, previous } => E::Change(change_to_proto(&change, previous)),
        Event::Heartbeat { head, position, at } => E::Heartbeat(proto::Heartbeat {
            head,
            sequence: position.sequence,
            resume_token: position.token(),
            time: Some(convert::timestamp(at)),
        }),
        Event::Snapshot {
            targets,
            last,
            position,
        } => E::Snapshot(proto::SnapshotPage {
            targets: targets.iter().map(target_to_proto).collect(),
            last,
            sequence: position.sequence,
            resume_token: if last {
                position.token()
            } else {
                String::new()
            },
        }),
    }
}

fn change_to_proto(change: &ChangeRecord, previous_sequence: i64) -> proto::Change {
    proto::Change {
        organisation_id: change.organisation_id.to_string(),
        sequence: change.sequence,
        commit_time: Some(convert::timestamp(change.committed_at)),
        actor: change.actor.clone(),
        request_id: change.request_id.clone().unwrap_or_default(),
        targets: change.targets.iter().map(target_to_proto).collect(),
        resume_token: change.position().token(),
        previous_sequence,
    }
}

fn target_to_proto(target: &TargetChange) -> proto::TargetChange {
    proto::TargetChange {
        action: target.action.clone(),
        target_type: target.target_type.as_str().to_owned(),
        target_id: target.target_id.clone(),
        state: state_to_proto(target.state.as_ref()),
        expires_at: target.expires_at.map(convert::timestamp),
    }
}

/// The state of a target; none for a registered service (the contract has
/// no message for one yet: its type and id say what it is).
fn state_to_proto(state: Option<&TargetState>) -> Option<proto::target_change::State> {
    use proto::target_change::State as S;
    let Some(state) = state else {
        return Some(S::Tombstone(proto::Tombstone {}));
    };
    Some(match state {
        TargetState::User(user) => S::User(convert::user_info(user)),
        TargetState::Invite(invite) => S::Invite(convert::invite(invite)),
        TargetState::Session(session) => {
            S::Session(session_service::session_to_proto(session, None))
        }
        TargetState::ApiToken(token) => S::ApiToken(convert::api_token(token)),
        TargetState::PlaybackToken(token) => S::PlaybackToken(proto::PlaybackTokenInfo {
            token_id: token.token_id.to_string(),
            scope: token.scope.clone(),
            revocable: token.revocable,
            expires_at: Some(convert::timestamp(token.expires_at)),
            revoked_at: token.revoked_at.map(convert::timestamp),
            kid: token.kid.clone(),
        }),
        TargetState::PlaybackKey(key) => match playback_service::signing_key_to_proto(key) {
            Ok(key) => S::SigningKey(key),
            Err(error) => {
                tracing::error!(%error, kid = %key.kid, "a signing key in the feed does not convert");
                S::SigningKey(proto::SigningKey {
                    kid: key.kid.clone(),
                    ..Default::default()
                })
            }
        },
        TargetState::Organisation(organisation) => {
            S::Organisation(convert::organisation(organisation))
        }
        TargetState::Service(_) => return None,
    })
}
