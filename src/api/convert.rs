//! Domain values ↔ protobuf messages.

use chrono::{DateTime, Utc};

use crate::domain::change::UserInfo;
use crate::domain::input;
use crate::domain::user::{Organisation, User, UserState};
use crate::domain::{DomainError, Role};
use crate::proto;

pub fn role_to_proto(role: Role) -> proto::Role {
    match role {
        Role::NanoAdmin => proto::Role::NanoAdmin,
        Role::NanoUser => proto::Role::NanoUser,
        Role::NanoReadOnly => proto::Role::NanoReadOnly,
    }
}

/// A role field: `None` for ROLE_UNSPECIFIED, INVALID_ARGUMENT for values
/// this service does not know.
pub fn optional_role(field: &str, value: i32) -> Result<Option<Role>, DomainError> {
    match proto::Role::try_from(value) {
        Ok(proto::Role::Unspecified) => Ok(None),
        Ok(proto::Role::NanoAdmin) => Ok(Some(Role::NanoAdmin)),
        Ok(proto::Role::NanoUser) => Ok(Some(Role::NanoUser)),
        Ok(proto::Role::NanoReadOnly) => Ok(Some(Role::NanoReadOnly)),
        Err(_) => Err(DomainError::invalid(field, "is not a known role")),
    }
}

/// A role field that must be set.
pub fn required_role(field: &str, value: i32) -> Result<Role, DomainError> {
    optional_role(field, value)?.ok_or_else(|| DomainError::invalid(field, "must be set"))
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// A count as the contract's int32, saturating rather than wrapping.
pub fn count(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

pub fn user(user: &User) -> proto::User {
    user_info(&UserInfo::from(user))
}

/// A user as the change feed keeps it (the tokenKey by its fingerprint).
pub fn user_info(user: &UserInfo) -> proto::User {
    proto::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        role: role_to_proto(user.role) as i32,
        created_at: Some(timestamp(user.created_at)),
        token_key_fingerprint: user.token_key_fingerprint.clone(),
        updated_at: Some(timestamp(user.updated_at)),
        etag: user.etag(),
        last_login_at: user.last_login_at.map(timestamp),
        state: state_to_proto(user.state) as i32,
    }
}

pub fn state_to_proto(state: UserState) -> proto::UserState {
    match state {
        UserState::Active => proto::UserState::Active,
        UserState::Suspended => proto::UserState::Suspended,
    }
}

/// A user state filter; USER_STATE_UNSPECIFIED means any.
pub fn optional_state(field: &str, value: i32) -> Result<Option<UserState>, DomainError> {
    match proto::UserState::try_from(value) {
        Ok(proto::UserState::Unspecified) => Ok(None),
        Ok(proto::UserState::Active) => Ok(Some(UserState::Active)),
        Ok(proto::UserState::Suspended) => Ok(Some(UserState::Suspended)),
        Err(_) => Err(DomainError::invalid(field, "is not a known user state")),
    }
}

pub fn api_token(token: &crate::domain::api_token::ApiToken) -> proto::ApiToken {
    proto::ApiToken {
        id: token.id.to_string(),
        user_id: token.user_id.to_string(),
        name: token.name.clone(),
        permissions: token
            .permissions
            .iter()
            .map(|p| p.id().to_owned())
            .collect(),
        created_at: Some(timestamp(token.created_at)),
        expires_at: Some(timestamp(token.expires_at)),
        last_used_at: token.last_used_at.map(timestamp),
    }
}

pub fn organisation(organisation: &Organisation) -> proto::Organisation {
    proto::Organisation {
        id: organisation.id.to_string(),
        name: organisation.name.clone(),
        user_count: count(organisation.user_count()),
        role_counts: organisation
            .role_counts
            .iter()
            .map(|(role, n)| proto::RoleCount {
                role: role_to_proto(*role) as i32,
                count: count(*n),
            })
            .collect(),
        created_at: Some(timestamp(organisation.created_at)),
        secure_playback: organisation.secure_playback,
        api_key_rotated_at: organisation.api_key_rotated_at.map(timestamp),
        api_key_fingerprint: organisation.api_key_fingerprint.clone().unwrap_or_default(),
        etag: organisation.etag(),
        max_non_revocable_lifetime: Some(prost_types::Duration {
            seconds: i64::try_from(organisation.max_non_revocable_lifetime.as_secs())
                .unwrap_or(i64::MAX),
            nanos: 0,
        }),
    }
}

/// The permission ids of a role, in the matrix's order.
pub fn permission_ids(role: Role) -> Vec<String> {
    role.permissions().map(|p| p.id().to_owned()).collect()
}

pub fn invite(invite: &crate::domain::invite::Invite) -> proto::Invite {
    proto::Invite {
        id: invite.id.to_string(),
        email: invite.email.clone(),
        role: role_to_proto(invite.role) as i32,
        created_at: Some(timestamp(invite.created_at)),
        expires_at: Some(timestamp(invite.expires_at)),
        created_by: invite.created_by.to_string(),
    }
}

pub fn audit_event(event: &crate::domain::audit::AuditEvent) -> proto::AuditEvent {
    proto::AuditEvent {
        id: event.id.to_string(),
        occurred_at: Some(timestamp(event.occurred_at)),
        actor: event.actor.clone(),
        action: event.action.clone(),
        target_type: event.target_type.clone(),
        target_id: event.target_id.clone(),
        target_label: event.target_label.clone(),
        before: event.before.clone().unwrap_or_default(),
        after: event.after.clone().unwrap_or_default(),
        request_id: event.request_id.clone().unwrap_or_default(),
        sequence: event.sequence.unwrap_or_default(),
    }
}

/// A timestamp field, when set, within the range of the contract's timestamps.
pub fn optional_time(
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, DomainError> {
    value
        .map(|ts| input::timestamp(field, ts.seconds, ts.nanos))
        .transpose()
}

/// A duration field, when set, within the range of the contract's
/// durations; negative durations are refused.
pub fn optional_duration(
    field: &str,
    value: Option<prost_types::Duration>,
) -> Result<Option<std::time::Duration>, DomainError> {
    value
        .map(|d| {
            input::duration(field, d.seconds, d.nanos)?;
            std::time::Duration::try_from(d)
                .map_err(|_| DomainError::invalid(field, "must be a positive duration"))
        })
        .transpose()
}

/// An optional text field of at most `max` characters; empty means unset.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<Option<String>, DomainError> {
    match value {
        "" => Ok(None),
        text if text.chars().count() > max => Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        )),
        text => Ok(Some(text.to_owned())),
    }
}
