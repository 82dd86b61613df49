//! The double-confirmed calls (DeleteUser, RenewTokenKey, SuspendUser,
//! RotateApiKey): a first call without a confirmation token answers with
//! one, a second call with it carries the action out. One helper for all
//! four, with any caller.

use tonic::transport::Channel;
use tonic::{Request, Status};
use usermgmt::proto::{
    self, organisation_service_client::OrganisationServiceClient,
    user_service_client::UserServiceClient,
};

use super::{authed, with_header};

/// Who makes a call: a bearer token (an access token or a personal API
/// token) or the organisation API key.
#[derive(Clone, Debug)]
pub enum Caller {
    Token(String),
    ApiKey(String),
}

impl Caller {
    pub fn req<T>(&self, message: T) -> Request<T> {
        match self {
            Caller::Token(token) => authed(message, token),
            Caller::ApiKey(key) => with_header(message, "x-bintu-apikey", key),
        }
    }
}

/// A double-confirmed action and what it is about.
#[derive(Clone, Debug)]
pub enum TwoStep {
    DeleteUser(String),
    RenewTokenKey(String),
    SuspendUser(String),
    RotateApiKey,
}

/// The first step's answer: what the confirmation says.
#[derive(Clone, Debug)]
pub struct Asked {
    pub confirmation_token: String,
    pub expires_at: Option<prost_types::Timestamp>,
    pub warning: String,
    /// The action the token confirms, the user it is for and how many
    /// pending invites it revokes with it (RotateApiKey's confirmation
    /// names none of them: empty and 0).
    pub action: String,
    pub user_id: String,
    pub pending_invites: i32,
}

impl From<proto::Confirmation> for Asked {
    fn from(confirmation: proto::Confirmation) -> Self {
        Asked {
            confirmation_token: confirmation.confirmation_token,
            expires_at: confirmation.expires_at,
            warning: confirmation.warning,
            action: confirmation.action,
            user_id: confirmation.user_id,
            pending_invites: confirmation.pending_invites,
        }
    }
}

impl From<proto::ApiKeyConfirmation> for Asked {
    fn from(confirmation: proto::ApiKeyConfirmation) -> Self {
        Asked {
            confirmation_token: confirmation.confirmation_token,
            expires_at: confirmation.expires_at,
            warning: confirmation.warning,
            action: String::new(),
            user_id: String::new(),
            pending_invites: 0,
        }
    }
}

/// The second step's answer.
#[derive(Clone, Debug)]
pub enum Done {
    Deleted(proto::User),
    Renewed(proto::User),
    Suspended(proto::User),
    Rotated(proto::RotatedApiKey),
}

impl Done {
    /// The user a user action answered with.
    pub fn user(self) -> proto::User {
        match self {
            Done::Deleted(user) | Done::Renewed(user) | Done::Suspended(user) => user,
            Done::Rotated(key) => panic!("a rotated key, not a user: {key:?}"),
        }
    }

    /// The new key of a rotation.
    pub fn rotated(self) -> proto::RotatedApiKey {
        match self {
            Done::Rotated(key) => key,
            other => panic!("expected the new key, got {other:?}"),
        }
    }
}

/// One answer of a double-confirmed call.
#[derive(Clone, Debug)]
pub enum Step {
    Asked(Asked),
    Done(Done),
}

/// One call of `action` with `confirmation_token` (empty: the first step);
/// the answer as it comes.
pub async fn call(
    channel: &Channel,
    caller: &Caller,
    action: &TwoStep,
    confirmation_token: &str,
) -> Result<Step, Status> {
    let token = confirmation_token.to_owned();
    let mut users = UserServiceClient::new(channel.clone());
    let step = match action {
        TwoStep::DeleteUser(user_id) => {
            use proto::delete_user_response::Outcome;
            let request = proto::DeleteUserRequest {
                user_id: user_id.clone(),
                confirmation_token: token,
            };
            match users
                .delete_user(caller.req(request))
                .await?
                .into_inner()
                .outcome
            {
                Some(Outcome::ConfirmationRequired(c)) => Step::Asked(c.into()),
                Some(Outcome::Deleted(user)) => Step::Done(Done::Deleted(user)),
                None => panic!("DeleteUser answered no outcome"),
            }
        }
        TwoStep::RenewTokenKey(user_id) => {
            use proto::renew_token_key_response::Outcome;
            let request = proto::RenewTokenKeyRequest {
                user_id: user_id.clone(),
                confirmation_token: token,
            };
            match users
                .renew_token_key(caller.req(request))
                .await?
                .into_inner()
                .outcome
            {
                Some(Outcome::ConfirmationRequired(c)) => Step::Asked(c.into()),
                Some(Outcome::Renewed(user)) => Step::Done(Done::Renewed(user)),
                None => panic!("RenewTokenKey answered no outcome"),
            }
        }
        TwoStep::SuspendUser(user_id) => {
            use proto::suspend_user_response::Outcome;
            let request = proto::SuspendUserRequest {
                user_id: user_id.clone(),
                confirmation_token: token,
            };
            match users
                .suspend_user(caller.req(request))
                .await?
                .into_inner()
                .outcome
            {
                Some(Outcome::ConfirmationRequired(c)) => Step::Asked(c.into()),
                Some(Outcome::Suspended(user)) => Step::Done(Done::Suspended(user)),
                None => panic!("SuspendUser answered no outcome"),
            }
        }
        TwoStep::RotateApiKey => {
            use proto::rotate_api_key_response::Outcome;
            let request = proto::RotateApiKeyRequest {
                confirmation_token: token,
            };
            match OrganisationServiceClient::new(channel.clone())
                .rotate_api_key(caller.req(request))
                .await?
                .into_inner()
                .outcome
            {
                Some(Outcome::ConfirmationRequired(c)) => Step::Asked(c.into()),
                Some(Outcome::Rotated(key)) => Step::Done(Done::Rotated(key)),
                None => panic!("RotateApiKey answered no outcome"),
            }
        }
    };
    Ok(step)
}

/// The first step: the confirmation (anything else panics).
pub async fn ask(channel: &Channel, caller: &Caller, action: &TwoStep) -> Result<Asked, Status> {
    match call(channel, caller, action, "").await? {
        Step::Asked(asked) => Ok(asked),
        Step::Done(done) => panic!("{action:?}: expected a confirmation, got {done:?}"),
    }
}

/// The second step with `confirmation_token` (a confirmation again panics).
pub async fn confirm(
    channel: &Channel,
    caller: &Caller,
    action: &TwoStep,
    confirmation_token: &str,
) -> Result<Done, Status> {
    assert!(
        !confirmation_token.is_empty(),
        "{action:?}: the second step needs a confirmation token"
    );
    match call(channel, caller, action, confirmation_token).await? {
        Step::Done(done) => Ok(done),
        Step::Asked(asked) => panic!("{action:?}: expected it done, got {asked:?}"),
    }
}

/// Both steps, the second with the first's confirmation.
pub async fn both(channel: &Channel, caller: &Caller, action: &TwoStep) -> Result<Done, Status> {
    let asked = ask(channel, caller, action).await?;
    confirm(channel, caller, action, &asked.confirmation_token).await
}
