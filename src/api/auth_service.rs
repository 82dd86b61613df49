use tonic::{Request, Response, Status};

use super::{convert, principal, request_id, service_caller};
use crate::app::authorize::Authorization;
use crate::app::credentials::Credentials;
use crate::app::invites::Invites;
use crate::app::sessions::{Client, Sessions};
use crate::auth::{Credential, Principal, Verdict, opaque};
use crate::domain::error::AuthFailure;
use crate::domain::error::Violations;
use crate::domain::user::{MAX_PASSWORD_LEN, optional_id, validate_password};
use crate::domain::{DomainError, Permission, email::Email};
use crate::proto::{self, auth_service_server::AuthService};

pub struct AuthApi {
    pub sessions: std::sync::Arc<Sessions>,
    pub invites: std::sync::Arc<Invites>,
    pub authorization: Authorization,
    pub credentials: Credentials,
}

/// Where a call comes from: its peer address and user agent.
fn client<T>(request: &Request<T>) -> Client {
    Client {
        peer: request.remote_addr().map(|addr| addr.ip()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

fn peer<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    request.remote_addr().map(|addr| addr.ip())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let client = client(&request);
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &request.email));
        if request.password.is_empty() || request.password.len() > MAX_PASSWORD_LEN {
            violations.add("password", "must be 1 to 1024 bytes");
        }
        let organisation_id = violations
            .check(optional_id("organisation_id", &request.organisation_id))
            .flatten();
        violations.into_result()?;
        let email = email.ok_or_else(|| DomainError::invalid("email", "is required"))?;
        let logged_in = self
            .sessions
            .login(
                &email,
                &request.password,
                organisation_id,
                &client,
                request_id,
            )
            .await?;
        Ok(Response::new(proto::LoginResponse {
            access_token: logged_in.token.token,
            expires_at: Some(convert::timestamp(logged_in.token.expires_at)),
            user_id: logged_in.user_id.to_string(),
            organisation_id: logged_in.organisation_id.to_string(),
            refresh_token: logged_in.refresh.token,
            refresh_expires_at: Some(convert::timestamp(logged_in.refresh.expires_at)),
            session_id: logged_in.session_id.to_string(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        let caller = principal(&request)?;
        let identity = self.authorization.who_am_i(&caller).await?;
        Ok(Response::new(proto::WhoAmIResponse {
            user: identity.user.as_deref().map(convert::user),
            organisation: Some(convert::organisation(&identity.organisation)),
            role: convert::role_to_proto(caller.role) as i32,
            permissions: caller.permissions().map(|p| p.id().to_owned()).collect(),
        }))
    }

    async fn authorize(
        &self,
        request: Request<proto::AuthorizeRequest>,
    ) -> Result<Response<proto::AuthorizeResponse>, Status> {
        service_caller(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let credential = v.check(credential(request.credential.as_ref()));
        let permission = v.check(permission("permission", &request.permission));
        let organisation_id = v
            .check(optional_id("organisation_id", &request.organisation_id))
            .flatten();
        let (credential, permission) = v.conclude(|| Some((credential?, permission?)))?;
        let verdict = self
            .authorization
            .authorize(credential, permission, organisation_id)
            .await?;
        Ok(Response::new(decision(verdict)))
    }

    async fn authorize_batch(
        &self,
        request: Request<proto::AuthorizeBatchRequest>,
    ) -> Result<Response<proto::AuthorizeBatchResponse>, Status> {
        service_caller(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let credential = v.check(credential(request.credential.as_ref()));
        if request.permissions.is_empty() || request.permissions.len() > MAX_BATCH {
            v.add("permissions", "must list 1 to 100 permissions");
        }
        let permissions: Vec<Permission> = request
            .permissions
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| v.check(permission(&format!("permissions[{i}]"), raw)))
            .collect();
        let organisation_id = v
            .check(optional_id("organisation_id", &request.organisation_id))
            .flatten();
        let credential = v.conclude(|| credential)?;
        let verdicts = self
            .authorization
            .authorize_each(credential, &permissions, organisation_id)
            .await?;
        Ok(Response::new(proto::AuthorizeBatchResponse {
            decisions: verdicts.into_iter().map(decision).collect(),
        }))
    }

    async fn accept_invite(
        &self,
        request: Request<proto::AcceptInviteRequest>,
    ) -> Result<Response<proto::AcceptInviteResponse>, Status> {
        let request_id = request_id(&request);
        let client = client(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        v.check(opaque_token("invite_token", &request.invite_token));
        v.check(validate_password("password", &request.password));
        v.into_result()?;
        let joined = self
            .invites
            .accept(
                &request.invite_token,
                &request.password,
                request_id,
                &client,
            )
            .await?;
        Ok(Response::new(proto::AcceptInviteResponse {
            access_token: joined.token.token,
            expires_at: Some(convert::timestamp(joined.token.expires_at)),
            user_id: joined.user_id.to_string(),
            organisation_id: joined.organisation_id.to_string(),
            refresh_token: joined.refresh.token,
            refresh_expires_at: Some(convert::timestamp(joined.refresh.expires_at)),
            session_id: joined.session_id.to_string(),
        }))
    }

    async fn refresh(
        &self,
        request: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let request_id = request_id(&request);
        let request = request.into_inner();
        opaque_token("refresh_token", &request.refresh_token)?;
        let refreshed = self
            .sessions
            .refresh(&request.refresh_token, request_id)
            .await?;
        Ok(Response::new(proto::RefreshResponse {
            access_token: refreshed.token.token,
            expires_at: Some(convert::timestamp(refreshed.token.expires_at)),
            refresh_token: refreshed.refresh.token,
            refresh_expires_at: Some(convert::timestamp(refreshed.refresh.expires_at)),
        }))
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let caller = principal(&request)?;
        self.sessions.logout(&caller, request_id(&request)).await?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let peer = peer(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        if request.current_password.is_empty() || request.current_password.len() > MAX_PASSWORD_LEN
        {
            v.add("current_password", "must be 1 to 1024 bytes");
        }
        v.check(validate_password("new_password", &request.new_password));
        v.into_result()?;
        self.credentials
            .change_password(
                &caller,
                &request.current_password,
                &request.new_password,
                peer,
                request_id,
            )
            .await?;
        Ok(Response::new(proto::ChangePasswordResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<proto::RequestPasswordResetRequest>,
    ) -> Result<Response<proto::RequestPasswordResetResponse>, Status> {
        let request_id = request_id(&request);
        let peer = peer(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let email = v.check(Email::parse("email", &request.email));
        let organisation_id = v
            .check(optional_id("organisation_id", &request.organisation_id))
            .flatten();
        let email = v.conclude(|| email)?;
        self.credentials
            .request_password_reset(email, organisation_id, peer, request_id)
            .await?;
        Ok(Response::new(proto::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<proto::ResetPasswordRequest>,
    ) -> Result<Response<proto::ResetPasswordResponse>, Status> {
        let request_id = request_id(&request);
        let peer = peer(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        v.check(opaque_token("reset_token", &request.reset_token));
        v.check(validate_password("new_password", &request.new_password));
        v.into_result()?;
        self.credentials
            .reset_password(
                &request.reset_token,
                &request.new_password,
                peer,
                request_id,
            )
            .await?;
        Ok(Response::new(proto::ResetPasswordResponse {}))
    }
}

/// An opaque token's field: present and not longer than any of ours.
fn opaque_token(field: &str, token: &str) -> Result<(), DomainError> {
    if token.is_empty() || token.len() > opaque::MAX_LEN {
        Err(DomainError::invalid(field, "must be 1 to 128 characters"))
    } else {
        Ok(())
    }
}

/// The most permissions one AuthorizeBatch may ask about.
const MAX_BATCH: usize = 100;

fn credential(credential: Option<&proto::Credential>) -> Result<Credential<'_>, DomainError> {
    use proto::credential::Kind;
    match credential.and_then(|c| c.kind.as_ref()) {
        Some(Kind::AccessToken(token)) => Ok(Credential::AccessToken(token)),
        Some(Kind::ApiKey(key)) => Ok(Credential::ApiKey(key)),
        None => Err(DomainError::invalid(
            "credential",
            "must hold an access_token or an api_key",
        )),
    }
}

fn permission(field: &str, raw: &str) -> Result<Permission, DomainError> {
    raw.parse()
        .map_err(|_| DomainError::invalid(field, "is not a permission of RoleService.ListRoles"))
}

fn decision(verdict: Verdict) -> proto::AuthorizeResponse {
    use proto::DenialReason;
    let authorized = |p: &Principal| proto::AuthorizedPrincipal {
        organisation_id: p.organisation_id.to_string(),
        user_id: p.user_id().map(|id| id.to_string()).unwrap_or_default(),
        role: convert::role_to_proto(p.role) as i32,
        actor: p.actor.to_string(),
    };
    match verdict {
        Verdict::Allowed(principal) => proto::AuthorizeResponse {
            allowed: true,
            principal: Some(authorized(&principal)),
            ..Default::default()
        },
        Verdict::Denied { principal, reason } => {
            let (denial, code) = match &reason {
                DomainError::Unauthenticated(AuthFailure::TokenExpired) => {
                    (DenialReason::CredentialExpired, "TOKEN_EXPIRED")
                }
                DomainError::Unauthenticated(AuthFailure::TokenRevoked) => {
                    (DenialReason::CredentialRevoked, "TOKEN_REVOKED")
                }
                DomainError::Unauthenticated(failure) => {
                    (DenialReason::CredentialInvalid, failure.reason())
                }
                DomainError::WrongOrganisation => {
                    (DenialReason::WrongOrganisation, "WRONG_ORGANISATION")
                }
                _ => (DenialReason::PermissionMissing, "PERMISSION_MISSING"),
            };
            proto::AuthorizeResponse {
                allowed: false,
                principal: principal.as_ref().map(authorized),
                denial_reason: denial as i32,
                reason: code.to_owned(),
                message: reason.to_string(),
            }
        }
    }
}
