//! The change feed's vocabulary: an organisation's committed changes, each
//! numbered densely in commit order, the state of each target after it, and
//! the resume token that names a position in the feed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DomainError;
use super::api_token::ApiToken;
use super::invite::Invite;
use super::role::Role;
use super::session::Session;
use super::user::{Organisation, User, UserState};

/// The kinds of target a change can name (the audit log's `target_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetType {
    User,
    Invite,
    Session,
    ApiToken,
    PlaybackToken,
    PlaybackKey,
    Organisation,
    /// A registered internal service: only in the deployment's feed, the
    /// one of the nil organisation id ([`DEPLOYMENT`]).
    Service,
}

/// The organisation id of the deployment's own feed: the changes of what
/// belongs to no organisation (the registered internal services).
pub const DEPLOYMENT: Uuid = Uuid::nil();

impl TargetType {
    pub const ALL: [TargetType; 8] = [
        TargetType::User,
        TargetType::Invite,
        TargetType::Session,
        TargetType::ApiToken,
        TargetType::PlaybackToken,
        TargetType::PlaybackKey,
        TargetType::Organisation,
        TargetType::Service,
    ];

    /// The name the contract and the audit log use.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::User => "user",
            TargetType::Invite => "invite",
            TargetType::Session => "session",
            TargetType::ApiToken => "api_token",
            TargetType::PlaybackToken => "playback_token",
            TargetType::PlaybackKey => "playback_key",
            TargetType::Organisation => "organisation",
            TargetType::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<TargetType> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// A playback token's metadata, never the token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaybackTokenInfo {
    pub token_id: Uuid,
    pub scope: String,
    pub revocable: bool,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub kid: String,
}

/// A playback signing key's public half and its validity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigningKeyInfo {
    pub kid: String,
    pub organisation_id: Uuid,
    pub alg: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub verify_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A user as the feed keeps it: what the Get and List RPCs show, the
/// tokenKey by its fingerprint only (the tokenKey is in every access token
/// of the user; the feed's stored states outlive it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub token_key_fingerprint: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub state: UserState,
}

impl From<&User> for UserInfo {
    fn from(user: &User) -> Self {
        UserInfo {
            id: user.id,
            organisation_id: user.organisation_id,
            email: user.email.clone(),
            role: user.role,
            token_key_fingerprint: user.token_key_fingerprint(),
            version: user.version,
            created_at: user.created_at,
            updated_at: user.updated_at,
            last_login_at: user.last_login_at,
            state: user.state,
        }
    }
}

impl UserInfo {
    /// The user's entity tag, as [`User::etag`].
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// A registered internal service: its name and since when (never its key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A target's state after a change: the resource the Get and List RPCs
/// return. Stored with the change (as JSON), so never holding a secret, a
/// hash, a key or a token: a user's tokenKey only by its fingerprint, a
/// session without the tokenKey it was opened under, a signing key's
/// public half only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "state", rename_all = "snake_case")]
pub enum TargetState {
    User(UserInfo),
    Invite(Invite),
    Session(Session),
    ApiToken(ApiToken),
    PlaybackToken(PlaybackTokenInfo),
    PlaybackKey(SigningKeyInfo),
    Organisation(Organisation),
    Service(ServiceInfo),
}

/// One target of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    /// As in the audit log, e.g. "user.update_role"; "snapshot" in a
    /// snapshot.
    pub action: String,
    pub target_type: TargetType,
    pub target_id: String,
    /// The user the target belongs to (a session's or API token's user, a
    /// user itself), for deciding who may see it, tombstones included.
    pub owner: Option<Uuid>,
    /// None: the target no longer exists.
    pub state: Option<TargetState>,
    /// When the target stops existing on its own.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One committed transaction of one organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub organisation_id: Uuid,
    pub sequence: i64,
    pub committed_at: DateTime<Utc>,
    pub actor: String,
    pub request_id: Option<String>,
    pub targets: Vec<TargetChange>,
}

impl ChangeRecord {
    /// The position just after this change.
    pub fn position(&self) -> Position {
        Position {
            organisation_id: self.organisation_id,
            sequence: self.sequence,
            committed_at: Some(self.committed_at),
        }
    }
}

/// An organisation's feed as it stands: its last committed sequence, and
/// the last sequence no longer held (retention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heads {
    pub head: i64,
    pub pruned_through: i64,
}

/// A position in an organisation's feed: after the change `sequence` (0:
/// before the first), which committed at `committed_at` (so that a token of
/// another history, a restored database's, is told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub organisation_id: Uuid,
    pub sequence: i64,
    pub committed_at: Option<DateTime<Utc>>,
}

const TOKEN_VERSION: u8 = 1;
const TOKEN_LEN: usize = 1 + 16 + 8 + 8;

impl Position {
    /// The opaque resume token of this position.
    pub fn token(&self) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(self.organisation_id.as_bytes());
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        let micros = self.committed_at.map_or(0, |at| at.timestamp_micros());
        bytes.extend_from_slice(&micros.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a resume token names; INVALID_ARGUMENT (field `field`)
    /// when it is not one.
    pub fn from_token(field: &str, token: &str) -> Result<Position, DomainError> {
        let invalid = || DomainError::invalid(field, "is not a resume token of the change feed");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() != TOKEN_LEN || bytes[0] != TOKEN_VERSION {
            return Err(invalid());
        }
        let organisation_id = Uuid::from_slice(&bytes[1..17]).map_err(|_| invalid())?;
        let sequence = i64::from_be_bytes(bytes[17..25].try_into().map_err(|_| invalid())?);
        let micros = i64::from_be_bytes(bytes[25..33].try_into().map_err(|_| invalid())?);
        if sequence < 0 {
            return Err(invalid());
        }
        let committed_at = match micros {
            0 => None,
            micros => Some(DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?),
        };
        Ok(Position {
            organisation_id,
            sequence,
            committed_at,
        })
    }
}

/// Why a resume token cannot be resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresumable {
    /// Older than the retention window: the changes after it are gone.
    Expired,
    /// Ahead of the head, or naming a change this database does not hold
    /// with that commit time (a restored database).
    Unknown,
}

impl Unresumable {
    pub fn reason(self) -> &'static str {
        match self {
            Unresumable::Expired => "CHANGE_TOKEN_EXPIRED",
            Unresumable::Unknown => "CHANGE_TOKEN_UNKNOWN",
        }
    }

    pub fn into_error(self) -> DomainError {
        let message = match self {
            Unresumable::Expired => {
                "the changes after this token are no longer held: start again from a snapshot"
            }
            Unresumable::Unknown => {
                "this token names no change of this database: start again from a snapshot"
            }
        };
        DomainError::FailedPrecondition {
            reason: self.reason(),
            message: message.into(),
        }
    }
}

/// Whether the feed can be resumed after `position`, given the
/// organisation's `heads` and the commit time of the change at that position
/// (None: not held, or the position is 0).
pub fn check_resumable(
    position: &Position,
    heads: Heads,
    held_commit_time: Option<DateTime<Utc>>,
) -> Result<(), Unresumable> {
    if position.sequence > heads.head {
        return Err(Unresumable::Unknown);
    }
    if position.sequence < heads.pruned_through {
        return Err(Unresumable::Expired);
    }
    match (position.committed_at, held_commit_time) {
        (Some(named), Some(held)) if named.timestamp_micros() != held.timestamp_micros() => {
            Err(Unresumable::Unknown)
        }
        _ => Ok(()),
    }
}

/// Which targets a watcher asked for: empty sets match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    pub target_types: Vec<TargetType>,
    pub target_ids: Vec<String>,
}

impl ChangeFilter {
    pub fn matches(&self, target: &TargetChange) -> bool {
        (self.target_types.is_empty() || self.target_types.contains(&target.target_type))
            && (self.target_ids.is_empty() || self.target_ids.contains(&target.target_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_position() {
        let position = Position {
            organisation_id: Uuid::now_v7(),
            sequence: 42,
            committed_at: DateTime::from_timestamp_micros(1_765_000_000_123_456),
        };
        assert_eq!(
            Position::from_token("t", &position.token()).ok(),
            Some(position)
        );
    }

    #[test]
    fn garbage_is_not_a_token() {
        for garbage in ["", "x", "AAAA", &"A".repeat(1000)] {
            assert!(Position::from_token("t", garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn tokens_ahead_behind_or_of_another_history_are_refused() {
        let at = DateTime::from_timestamp_micros(1_765_000_000_000_000);
        let position = |sequence| Position {
            organisation_id: Uuid::nil(),
            sequence,
            committed_at: at,
        };
        let heads = Heads {
            head: 10,
            pruned_through: 3,
        };
        assert_eq!(
            check_resumable(&position(11), heads, None),
            Err(Unresumable::Unknown)
        );
        assert_eq!(
            check_resumable(&position(2), heads, None),
            Err(Unresumable::Expired)
        );
        assert_eq!(check_resumable(&position(3), heads, at), Ok(()));
        let other = DateTime::from_timestamp_micros(1_765_000_000_000_001);
        assert_eq!(
            check_resumable(&position(5), heads, other),
            Err(Unresumable::Unknown)
        );
    }
}
