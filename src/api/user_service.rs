use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{convert, principal, request_id};
use crate::auth::opaque::{self, CONFIRMATION_PREFIX, INVITE_PREFIX};
use crate::auth::{Authenticator, Principal};
use crate::domain::error::Violations;
use crate::domain::invariants::ConfirmedAction;
use crate::domain::paging::{self, PageToken};
use crate::domain::user::{parse_id, validate_password};
use crate::domain::{DomainError, Permission, email::Email, invite, user::User};
use crate::proto::{self, user_service_server::UserService};
use crate::store::admin::NewConfirmation;
use crate::store::invites::NewInvite;
use crate::store::{Store, users::UserQuery};

/// Lifetimes of what user administration hands out.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The lifetime of an invite whose request gives none.
    pub invite_ttl: Duration,
    /// The lifetime of the confirmation of a delete or renew.
    pub confirmation_ttl: Duration,
}

pub struct UserApi {
    pub store: Store,
    pub authenticator: Arc<Authenticator>,
    pub settings: AdminSettings,
}

/// A step of a double-confirmed action.
enum Step {
    ConfirmationRequired(proto::Confirmation),
    Done(User),
}

impl UserApi {
    /// Runs the first step (no token: hand out a confirmation) or the second
    /// (carry the action out) of a double-confirmed action.
    async fn double_confirmed(
        &self,
        caller: &Principal,
        request_id: Option<String>,
        action: ConfirmedAction,
        user_id: Uuid,
        confirmation_token: &str,
    ) -> Result<Step, DomainError> {
        let ctx = caller.change(request_id);
        if confirmation_token.is_empty() {
            let secret = opaque::generate(CONFIRMATION_PREFIX)?;
            let expires_at = Utc::now() + self.settings.confirmation_ttl;
            let confirmation = NewConfirmation {
                action,
                target_id: user_id,
                token_hash: &secret.hash,
                expires_at,
            };
            let user = self.store.create_confirmation(&ctx, confirmation).await?;
            return Ok(Step::ConfirmationRequired(proto::Confirmation {
                confirmation_token: secret.token,
                expires_at: Some(convert::timestamp(expires_at)),
                warning: action.warning(&user),
                action: action.as_str().to_owned(),
                user_id: user.id.to_string(),
                pending_invites: 0,
            }));
        }
        if confirmation_token.len() > opaque::MAX_LEN {
            return Err(DomainError::invalid("confirmation_token", "is too long"));
        }
        let token_hash = opaque::hash(confirmation_token);
        let user = match action {
            ConfirmedAction::DeleteUser => {
                self.store.delete_user(&ctx, user_id, &token_hash).await?
            }
            ConfirmedAction::RenewTokenKey => {
                self.store
                    .renew_token_key(&ctx, user_id, &token_hash)
                    .await?
            }
            ConfirmedAction::RotateApiKey => {
                return Err(DomainError::Internal(
                    "rotate_api_key is not a user action".into(),
                ));
            }
        };
        Ok(Step::Done(user))
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        let caller = principal(&request)?;
        let user_id = parse_id("user_id", &request.get_ref().user_id)?;
        let user = self.store.user(caller.organisation_id, user_id).await?;
        Ok(Response::new(proto::GetUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let page_size = violations.check(paging::page_size(request.page_size));
        let role = violations
            .check(convert::optional_role("role", request.role))
            .flatten();
        let filter = format!("role={}", role.map_or("*", |r| r.as_str()));
        let after = violations
            .check(PageToken::decode(&request.page_token, &filter))
            .flatten();
        violations.into_result()?;
        let page_size = page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE);

        let mut users = self
            .store
            .list_users(UserQuery {
                organisation_id: caller.organisation_id,
                role,
                after,
                limit: page_size + 1,
            })
            .await?;
        let next_page_token = paging::next_page_token(&mut users, page_size, &filter, |u| u.id);
        // The organisation's per-role counts (cached, exact) rather than a
        // count(*) per page, which dominated the page time at 100k users.
        let organisation = self.store.organisation(caller.organisation_id).await?;
        let total_size = organisation.user_count_with(role);
        Ok(Response::new(proto::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
            next_page_token,
            total_size: convert::count(total_size),
        }))
    }

    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::CreateUserResponse>, Status> {
        let caller = principal(&request)?;
        let ctx = caller.change(request_id(&request));
        let request = request.into_inner();
        let mut v = Violations::default();
        let email = v.check(Email::parse("email", &request.email));
        let role = v.check(convert::required_role("role", request.role));
        v.check(validate_password("password", &request.password));
        let (email, role) = v.conclude(|| Some((email?, role?)))?;
        let password_hash = self
            .authenticator
            .passwords()
            .hash(&request.password)
            .await?;
        let user = self
            .store
            .create_user(&ctx, &email, role, &password_hash)
            .await?;
        Ok(Response::new(proto::CreateUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn create_invite(
        &self,
        request: Request<proto::CreateInviteRequest>,
    ) -> Result<Response<proto::CreateInviteResponse>, Status> {
        let caller = principal(&request)?;
        let ctx = caller.change(request_id(&request));
        let request = request.into_inner();
        let mut v = Violations::default();
        let email = v.check(Email::parse("email", &request.email));
        let role = v.check(convert::required_role("role", request.role));
        let ttl = v
            .check(convert::optional_duration("ttl", request.ttl))
            .and_then(|ttl| v.check(invite::invite_ttl(ttl, self.settings.invite_ttl)));
        let (email, role, ttl) = v.conclude(|| Some((email?, role?, ttl?)))?;
        let secret = opaque::generate(INVITE_PREFIX)?;
        let new = NewInvite {
            email: &email,
            role,
            token_hash: &secret.hash,
            expires_at: Utc::now() + ttl,
        };
        let invite = self.store.create_invite(&ctx, new).await?;
        Ok(Response::new(proto::CreateInviteResponse {
            invite: Some(convert::invite(&invite)),
            invite_token: secret.token,
        }))
    }

    async fn list_invites(
        &self,
        request: Request<proto::ListInvitesRequest>,
    ) -> Result<Response<proto::ListInvitesResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let page_size = v.check(paging::page_size(request.page_size));
        let after = v
            .check(PageToken::decode(&request.page_token, "invites"))
            .flatten();
        v.into_result()?;
        let page_size = page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE);
        let mut invites = self
            .store
            .list_invites(caller.organisation_id, after, page_size + 1)
            .await?;
        let next_page_token = paging::next_page_token(&mut invites, page_size, "invites", |i| i.id);
        Ok(Response::new(proto::ListInvitesResponse {
            invites: invites.iter().map(convert::invite).collect(),
            next_page_token,
        }))
    }

    async fn revoke_invite(
        &self,
        request: Request<proto::RevokeInviteRequest>,
    ) -> Result<Response<proto::RevokeInviteResponse>, Status> {
        let caller = principal(&request)?;
        let ctx = caller.change(request_id(&request));
        let invite_id = parse_id("invite_id", &request.get_ref().invite_id)?;
        let invite = self.store.revoke_invite(&ctx, invite_id).await?;
        Ok(Response::new(proto::RevokeInviteResponse {
            invite: Some(convert::invite(&invite)),
        }))
    }

    async fn update_user_role(
        &self,
        request: Request<proto::UpdateUserRoleRequest>,
    ) -> Result<Response<proto::UpdateUserRoleResponse>, Status> {
        let caller = principal(&request)?;
        let ctx = caller.change(request_id(&request));
        let request = request.into_inner();
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &request.user_id));
        let role = v.check(convert::required_role("role", request.role));
        let etag = v
            .check(convert::optional_text("etag", &request.etag, 64))
            .flatten();
        let (user_id, role) = v.conclude(|| Some((user_id?, role?)))?;
        let (user, changed) = self
            .store
            .update_user_role(&ctx, user_id, role, etag.as_deref())
            .await?;
        Ok(Response::new(proto::UpdateUserRoleResponse {
            user: Some(convert::user(&user)),
            changed,
            revoked_invites: 0,
        }))
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        use proto::delete_user_response::Outcome;
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        let step = self
            .double_confirmed(
                &caller,
                request_id,
                ConfirmedAction::DeleteUser,
                user_id,
                &request.confirmation_token,
            )
            .await?;
        let outcome = match step {
            Step::ConfirmationRequired(confirmation) => Outcome::ConfirmationRequired(confirmation),
            Step::Done(user) => Outcome::Deleted(convert::user(&user)),
        };
        Ok(Response::new(proto::DeleteUserResponse {
            outcome: Some(outcome),
        }))
    }

    async fn renew_token_key(
        &self,
        request: Request<proto::RenewTokenKeyRequest>,
    ) -> Result<Response<proto::RenewTokenKeyResponse>, Status> {
        use proto::renew_token_key_response::Outcome;
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        caller.require_unless_self(Permission::UsersRenewToken, user_id)?;
        let step = self
            .double_confirmed(
                &caller,
                request_id,
                ConfirmedAction::RenewTokenKey,
                user_id,
                &request.confirmation_token,
            )
            .await?;
        let outcome = match step {
            Step::ConfirmationRequired(confirmation) => Outcome::ConfirmationRequired(confirmation),
            Step::Done(user) => Outcome::Renewed(convert::user(&user)),
        };
        Ok(Response::new(proto::RenewTokenKeyResponse {
            outcome: Some(outcome),
        }))
    }
}
