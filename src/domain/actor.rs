use std::fmt;

use uuid::Uuid;

use super::Permission;

/// The text form of [`Actor::Operator`].
const OPERATOR: &str = "operator";

/// Who acts: a user, the holder of the organisation API key (named by the
/// key's fingerprint), or the operator of the deployment (a command of the
/// `usermgmt` command line). Its text form ("user:<id>", "api_key:<fp>",
/// "operator") is what the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Actor {
    User(Uuid),
    ApiKey(String),
    Operator,
}

impl Actor {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
            Actor::ApiKey(_) | Actor::Operator => None,
        }
    }
}

impl std::str::FromStr for Actor {
    type Err = ();

    /// The text form back ("user:<id>", "api_key:<fp>", "operator").
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == OPERATOR {
            return Ok(Actor::Operator);
        }
        match text.split_once(':') {
            Some(("user", id)) => id.parse().map(Actor::User).map_err(|_| ()),
            Some(("api_key", fingerprint)) if !fingerprint.is_empty() => {
                Ok(Actor::ApiKey(fingerprint.to_owned()))
            }
            _ => Err(()),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::ApiKey(fingerprint) => write!(f, "api_key:{fingerprint}"),
            Actor::Operator => f.write_str(OPERATOR),
        }
    }
}

/// The context of a change: in whose organisation, by whom (and with what
/// credential), for which call.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub organisation_id: Uuid,
    pub actor: Actor,
    pub proof: Proof,
    /// What the actor's role must still hold when the change commits (none:
    /// any role): the permission the call was admitted with.
    pub permission: Option<Permission>,
    pub request_id: Option<String>,
}

/// What a change's caller was admitted with. The one write path re-verifies
/// it, under the organisation's row lock, in the transaction that commits the
/// change: a credential revoked meanwhile makes the change fail.
#[derive(Clone, PartialEq, Eq)]
pub enum Proof {
    /// A user's access token, by the tokenKey and the session it carried:
    /// the user must still exist with that tokenKey, and the session must
    /// still be live.
    Session { token_key: Uuid, session_id: Uuid },
    /// A user's personal API token, by the tokenKey it was made under and
    /// its id: the user must still exist, active, with that tokenKey, and
    /// the token must be unrevoked and unexpired; what it may do is its
    /// permissions within the user's role.
    ApiToken { token_key: Uuid, token_id: Uuid },
    /// The organisation API key, by its SHA-256: it must still be the
    /// organisation's current key.
    ApiKey(Vec<u8>),
    /// The standing of the actor alone, for a change made on its behalf (an
    /// invite accepted): a user that still exists with the permission, or the
    /// API key whose fingerprint is still the organisation's.
    Standing,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proof::Session { session_id, .. } => {
                write!(
                    f,
                    "Session {{ token_key: <redacted>, session_id: {session_id} }}"
                )
            }
            Proof::ApiToken { token_id, .. } => {
                write!(
                    f,
                    "ApiToken {{ token_key: <redacted>, token_id: {token_id} }}"
                )
            }
            Proof::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Proof::Standing => f.write_str("Standing"),
        }
    }
}
