use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::DomainError;
use super::role::Role;

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The longest organisation name, in characters.
pub const MAX_ORGANISATION_NAME_CHARS: usize = 200;

/// A user as the service knows it. The password hash stays in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub token_key: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the user last signed in with a password.
    pub last_login_at: Option<DateTime<Utc>>,
    pub state: UserState,
}

/// Where a page of users starts: after this user (and, in a prefix search's
/// email order, after this email, as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCursor {
    pub id: Uuid,
    pub email: Option<String>,
}

/// A search's cursor carries the email it pages in the order of.
impl super::paging::Cursor for UserCursor {
    fn encode(&self, filter: &str) -> String {
        match &self.email {
            Some(email) => super::paging::KeyedCursor {
                after: self.id,
                key: email.clone(),
            }
            .encode(filter),
            None => self.id.encode(filter),
        }
    }
}

/// Whether a user may act: a suspended user keeps their record and role but
/// can neither sign in nor use any credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UserState {
    Active,
    Suspended,
}

impl UserState {
    /// The state's spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Suspended => "suspended",
        }
    }
}

impl User {
    /// A short fingerprint of the current tokenKey, safe to show.
    pub fn token_key_fingerprint(&self) -> String {
        token_key_fingerprint(self.token_key)
    }

    /// The user's entity tag (AIP-154): changes with every change of the user.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    pub fn is_active(&self) -> bool {
        self.state == UserState::Active
    }
}

pub fn token_key_fingerprint(token_key: Uuid) -> String {
    super::fingerprint::of_digest(&Sha256::digest(token_key.as_bytes()))
}

/// An organisation with its user counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Organisation {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub role_counts: Vec<(Role, i64)>,
    /// Whether every playback needs a playback token.
    pub secure_playback: bool,
    pub api_key_fingerprint: Option<String>,
    pub api_key_rotated_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// The ceiling on the lifetime of its playback tokens that are not
    /// revocable.
    pub max_non_revocable_lifetime: std::time::Duration,
}

impl Organisation {
    /// The organisation's entity tag (AIP-154).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The number of users with `role`, or of all users.
    pub fn user_count_with(&self, role: Option<Role>) -> i64 {
        match role {
            None => self.user_count(),
            Some(role) => self
                .role_counts
                .iter()
                .filter(|(r, _)| *r == role)
                .map(|(_, count)| count)
                .sum(),
        }
    }

    pub fn user_count(&self) -> i64 {
        self.role_counts.iter().map(|(_, count)| count).sum()
    }

    /// The organisation as a caller may see it who may not read its users:
    /// what it is, not who is in it (no counts, nothing of its API key).
    pub fn without_members(&self) -> Organisation {
        Organisation {
            role_counts: Vec::new(),
            api_key_fingerprint: None,
            api_key_rotated_at: None,
            ..self.clone()
        }
    }
}

/// Parses a UUID given in the request field `field`.
pub fn parse_id(field: &str, raw: &str) -> Result<Uuid, DomainError> {
    if raw.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Uuid::try_parse(raw).map_err(|_| DomainError::invalid(field, "must be a UUID"))
}

/// An optional UUID field: empty means unset.
pub fn optional_id(field: &str, raw: &str) -> Result<Option<Uuid>, DomainError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        parse_id(field, raw).map(Some)
    }
}

/// Checks a new password's length; its strength is the caller's business.
pub fn validate_password(field: &str, password: &str) -> Result<(), DomainError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(DomainError::invalid(field, "must be at least 8 characters"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(DomainError::invalid(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

/// Checks an organisation name: trimmed, 1 to 200 characters, readable
/// (`text::display_name`).
pub fn validate_organisation_name(field: &str, name: &str) -> Result<String, DomainError> {
    super::text::display_name(field, name, MAX_ORGANISATION_NAME_CHARS)
}
