use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, principal, request_id};
use crate::auth::Authenticator;
use crate::domain::error::Violations;
use crate::domain::user::{MAX_PASSWORD_LEN, parse_id, validate_password};
use crate::domain::{DomainError, email::Email};
use crate::proto::{self, auth_service_server::AuthService};
use crate::store::Store;

pub struct AuthApi {
    pub authenticator: Arc<Authenticator>,
    pub store: Store,
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &request.email));
        if request.password.is_empty() || request.password.len() > MAX_PASSWORD_LEN {
            violations.add("password", "must be 1 to 1024 bytes");
        }
        let organisation_id = match request.organisation_id.as_str() {
            "" => None,
            raw => violations.check(parse_id("organisation_id", raw)),
        };
        violations.into_result()?;
        let email = email.ok_or_else(|| DomainError::invalid("email", "is required"))?;
        let logged_in = self
            .authenticator
            .login(&email, &request.password, organisation_id)
            .await?;
        Ok(Response::new(proto::LoginResponse {
            access_token: logged_in.token.token,
            expires_at: Some(convert::timestamp(logged_in.token.expires_at)),
            user_id: logged_in.user_id.to_string(),
            organisation_id: logged_in.organisation_id.to_string(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        let caller = principal(&request)?;
        let user = match caller.user_id() {
            Some(user_id) => Some(convert::user(
                &self.store.user(caller.organisation_id, user_id).await?,
            )),
            None => None,
        };
        let organisation = self.store.organisation(caller.organisation_id).await?;
        Ok(Response::new(proto::WhoAmIResponse {
            user,
            organisation: Some(convert::organisation(&organisation)),
            role: convert::role_to_proto(caller.role) as i32,
            permissions: convert::permission_ids(caller.role),
        }))
    }

    async fn accept_invite(
        &self,
        request: Request<proto::AcceptInviteRequest>,
    ) -> Result<Response<proto::AcceptInviteResponse>, Status> {
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        if request.invite_token.is_empty() {
            v.add("invite_token", "must not be empty");
        }
        v.check(validate_password("password", &request.password));
        v.into_result()?;
        let joined = self
            .authenticator
            .accept_invite(&request.invite_token, &request.password, request_id)
            .await?;
        Ok(Response::new(proto::AcceptInviteResponse {
            access_token: joined.token.token,
            expires_at: Some(convert::timestamp(joined.token.expires_at)),
            user_id: joined.user_id.to_string(),
            organisation_id: joined.organisation_id.to_string(),
        }))
    }
}
