use std::fmt;

use uuid::Uuid;

/// Who acts: a user, or (later) the holder of the organisation API key.
/// Its text form ("user:<id>") is what the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User(Uuid),
}

impl Actor {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
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
