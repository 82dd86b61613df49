use std::fmt;

use uuid::Uuid;

/// Who acts: a user, or the holder of the organisation API key (named by
/// the key's fingerprint). Its text form ("user:<id>", "api_key:<fp>") is
/// what the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User(Uuid),
    ApiKey(String),
}

impl Actor {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
            Actor::ApiKey(_) => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::ApiKey(fingerprint) => write!(f, "api_key:{fingerprint}"),
        }
    }
}

/// The context of a change: in whose organisation, by whom, for which call.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub organisation_id: Uuid,
    pub actor: Actor,
    pub request_id: Option<String>,
}
