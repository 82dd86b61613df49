use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{convert, principal, request_id};
use crate::app::confirm::{Confirmation, Step};
use crate::app::invites::Invites;
use crate::app::users::{UserFilter, Users};
use crate::domain::DomainError;
use crate::domain::email::{Email, EmailPrefix};
use crate::domain::error::Violations;
use crate::domain::invite;
use crate::domain::paging::{self, KeyedCursor, PageRequest, PageToken};
use crate::domain::user::{UserCursor, parse_id, validate_password};
use crate::proto::{self, user_service_server::UserService};

pub struct UserApi {
    pub users: Users,
    pub invites: std::sync::Arc<Invites>,
}

/// Where the page asked for starts: a keyed cursor in a prefix search's
/// email order, else an id.
fn user_cursor(
    raw: &str,
    filter: &UserFilter,
    fingerprint: &str,
) -> Result<Option<UserCursor>, DomainError> {
    if filter.email_prefix.is_some() {
        Ok(
            KeyedCursor::decode(raw, fingerprint)?.map(|cursor| UserCursor {
                id: cursor.after,
                email: Some(cursor.key),
            }),
        )
    } else {
        Ok(PageToken::decode(raw, fingerprint)?.map(|id| UserCursor { id, email: None }))
    }
}

fn confirmation(confirmation: Confirmation, user_id: String) -> proto::Confirmation {
    proto::Confirmation {
        confirmation_token: confirmation.token,
        expires_at: Some(convert::timestamp(confirmation.expires_at)),
        warning: confirmation.warning,
        action: confirmation.action.as_str().to_owned(),
        user_id,
        pending_invites: convert::count(confirmation.pending_invites),
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
        let user = self.users.get(&caller, user_id).await?;
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
        let state = violations
            .check(convert::optional_state("state", request.state))
            .flatten();
        let email_prefix = violations
            .check(EmailPrefix::parse("email_prefix", &request.email_prefix))
            .flatten();
        let filter = UserFilter {
            role,
            state,
            email_prefix,
        };
        let fingerprint = filter.fingerprint();
        let after = violations
            .check(user_cursor(&request.page_token, &filter, &fingerprint))
            .flatten();
        violations.into_result()?;
        let page = PageRequest::new(page_size, after, fingerprint);
        let searching = filter.email_prefix.is_some();
        let mut found = self
            .users
            .list(&caller, filter, page.after.clone(), page.fetch_limit())
            .await?;
        // A search pages in email order, its cursor carrying the email; one
        // that stopped reading early resumes after the last row it read.
        let mut next_page_token = page.next_token(&mut found.users, |u| UserCursor {
            id: u.id,
            email: searching.then(|| u.email.clone()),
        });
        if next_page_token.is_empty()
            && let Some(after) = &found.resume_after
        {
            next_page_token = page.token_after(after);
        }
        Ok(Response::new(proto::ListUsersResponse {
            users: found.users.iter().map(convert::user).collect(),
            next_page_token,
            total_size: convert::count(found.total_size),
        }))
    }

    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::CreateUserResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let email = v.check(Email::parse("email", &request.email));
        let role = v.check(convert::required_role("role", request.role));
        v.check(validate_password("password", &request.password));
        let (email, role) = v.conclude(|| Some((email?, role?)))?;
        let user = self
            .users
            .create(&caller, request_id, &email, role, &request.password)
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
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let email = v.check(Email::parse("email", &request.email));
        let role = v.check(convert::required_role("role", request.role));
        let ttl = v
            .check(convert::optional_duration("ttl", request.ttl))
            .and_then(|ttl| v.check(invite::requested_ttl(ttl)));
        let (email, role, ttl) = v.conclude(|| Some((email?, role?, ttl?)))?;
        let invited = self
            .invites
            .create(&caller, request_id, &email, role, ttl)
            .await?;
        Ok(Response::new(proto::CreateInviteResponse {
            invite: Some(convert::invite(&invited.invite)),
            invite_token: invited.token,
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
        let page = PageRequest::<Uuid>::read(&mut v, page_size, &request.page_token, "invites");
        v.into_result()?;
        let mut invites = self
            .invites
            .list(&caller, page.after, page.fetch_limit())
            .await?;
        let next_page_token = page.next_token(&mut invites, |i| i.id);
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
        let request_id = request_id(&request);
        let invite_id = parse_id("invite_id", &request.get_ref().invite_id)?;
        let invite = self.invites.revoke(&caller, request_id, invite_id).await?;
        Ok(Response::new(proto::RevokeInviteResponse {
            invite: Some(convert::invite(&invite)),
        }))
    }

    async fn update_user_role(
        &self,
        request: Request<proto::UpdateUserRoleRequest>,
    ) -> Result<Response<proto::UpdateUserRoleResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &request.user_id));
        let role = v.check(convert::required_role("role", request.role));
        let etag = v
            .check(convert::optional_text("etag", &request.etag, 64))
            .flatten();
        let (user_id, role) = v.conclude(|| Some((user_id?, role?)))?;
        let change = self
            .users
            .update_role(&caller, request_id, user_id, role, etag.as_deref())
            .await?;
        Ok(Response::new(proto::UpdateUserRoleResponse {
            user: Some(convert::user(&change.user)),
            changed: change.changed,
            revoked_invites: convert::count(
                i64::try_from(change.revoked_invites).unwrap_or(i64::MAX),
            ),
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
            .users
            .delete(&caller, request_id, user_id, &request.confirmation_token)
            .await?;
        let outcome = match step {
            Step::ConfirmationRequired(asked) => {
                Outcome::ConfirmationRequired(confirmation(asked, user_id.to_string()))
            }
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
        let step = self
            .users
            .renew_token_key(&caller, request_id, user_id, &request.confirmation_token)
            .await?;
        let outcome = match step {
            Step::ConfirmationRequired(asked) => {
                Outcome::ConfirmationRequired(confirmation(asked, user_id.to_string()))
            }
            Step::Done(user) => Outcome::Renewed(convert::user(&user)),
        };
        Ok(Response::new(proto::RenewTokenKeyResponse {
            outcome: Some(outcome),
        }))
    }

    async fn suspend_user(
        &self,
        request: Request<proto::SuspendUserRequest>,
    ) -> Result<Response<proto::SuspendUserResponse>, Status> {
        use proto::suspend_user_response::Outcome;
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let user_id = parse_id("user_id", &request.user_id)?;
        let step = self
            .users
            .suspend(&caller, request_id, user_id, &request.confirmation_token)
            .await?;
        let outcome = match step {
            Step::ConfirmationRequired(asked) => {
                Outcome::ConfirmationRequired(confirmation(asked, user_id.to_string()))
            }
            Step::Done(user) => Outcome::Suspended(convert::user(&user)),
        };
        Ok(Response::new(proto::SuspendUserResponse {
            outcome: Some(outcome),
        }))
    }

    async fn reactivate_user(
        &self,
        request: Request<proto::ReactivateUserRequest>,
    ) -> Result<Response<proto::ReactivateUserResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &request.user_id));
        let etag = v
            .check(convert::optional_text("etag", &request.etag, 64))
            .flatten();
        let user_id = v.conclude(|| user_id)?;
        let user = self
            .users
            .reactivate(&caller, request_id, user_id, etag.as_deref())
            .await?;
        Ok(Response::new(proto::ReactivateUserResponse {
            user: Some(convert::user(&user)),
        }))
    }
}
