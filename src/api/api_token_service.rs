use chrono::Utc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{convert, principal, request_id};
use crate::app::api_tokens::{ApiTokens, TokenRequest};
use crate::domain::api_token;
use crate::domain::error::Violations;
use crate::domain::paging::{self, PageRequest};
use crate::domain::user::{optional_id, parse_id};
use crate::proto::{self, api_token_service_server::ApiTokenService};

pub struct ApiTokenApi {
    pub tokens: ApiTokens,
}

#[tonic::async_trait]
impl ApiTokenService for ApiTokenApi {
    async fn create_api_token(
        &self,
        request: Request<proto::CreateApiTokenRequest>,
    ) -> Result<Response<proto::CreateApiTokenResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let request = request.into_inner();
        let mut v = Violations::default();
        let name = v.check(api_token::validate_name("name", &request.name));
        let expires_at = v
            .check(convert::optional_time("expires_at", request.expires_at))
            .and_then(|at| v.check(api_token::validate_expiry("expires_at", at, Utc::now())));
        let permissions = v.check(api_token::validate_permissions(
            "permissions",
            &request.permissions,
            caller.role,
        ));
        let token_request = v.conclude(|| {
            Some(TokenRequest {
                name: name?,
                expires_at: expires_at?,
                permissions: permissions?,
            })
        })?;
        let created = self
            .tokens
            .create(&caller, token_request, request_id)
            .await?;
        Ok(Response::new(proto::CreateApiTokenResponse {
            api_token: Some(convert::api_token(&created.api_token)),
            token: created.token,
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<proto::ListApiTokensRequest>,
    ) -> Result<Response<proto::ListApiTokensResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let user_id = v.check(optional_id("user_id", &request.user_id)).flatten();
        let page_size = v.check(paging::page_size(request.page_size));
        let filter = format!("api_tokens={}", request.user_id);
        let page = PageRequest::<Uuid>::read(&mut v, page_size, &request.page_token, filter);
        v.into_result()?;
        let mut tokens = self
            .tokens
            .list(&caller, user_id, page.after, page.fetch_limit())
            .await?;
        let next_page_token = page.next_token(&mut tokens, |t| t.id);
        Ok(Response::new(proto::ListApiTokensResponse {
            api_tokens: tokens.iter().map(convert::api_token).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<proto::RevokeApiTokenRequest>,
    ) -> Result<Response<proto::RevokeApiTokenResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let token_id = parse_id("api_token_id", &request.get_ref().api_token_id)?;
        let token = self.tokens.revoke(&caller, token_id, request_id).await?;
        Ok(Response::new(proto::RevokeApiTokenResponse {
            api_token: Some(convert::api_token(&token)),
        }))
    }
}
