use tonic::{Request, Response, Status};

use super::{convert, principal};
use crate::domain::error::Violations;
use crate::domain::paging::{self, PageToken};
use crate::domain::user::parse_id;
use crate::proto::{self, user_service_server::UserService};
use crate::store::{Store, users::UserQuery};

pub struct UserApi {
    pub store: Store,
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
        let next_page_token = if users.len() as i64 > page_size {
            users.truncate(page_size as usize);
            users
                .last()
                .map(|last| {
                    PageToken {
                        filter,
                        after: last.id,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let total_size = self.store.count_users(caller.organisation_id, role).await?;
        Ok(Response::new(proto::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
            next_page_token,
            total_size: convert::count(total_size),
        }))
    }
}
