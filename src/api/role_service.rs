use tonic::{Request, Response, Status};

use super::convert;
use crate::domain::{Permission, Role};
use crate::proto::{self, role_service_server::RoleService};

/// Serves the permission matrix, straight from the domain.
pub struct RoleApi;

#[tonic::async_trait]
impl RoleService for RoleApi {
    async fn list_roles(
        &self,
        _request: Request<proto::ListRolesRequest>,
    ) -> Result<Response<proto::ListRolesResponse>, Status> {
        let roles = Role::ALL
            .into_iter()
            .map(|role| proto::RoleDefinition {
                role: convert::role_to_proto(role) as i32,
                display_name: role.as_str().to_owned(),
                description: role.description().to_owned(),
                permissions: convert::permission_ids(role),
            })
            .collect();
        let permissions = Permission::ALL
            .into_iter()
            .map(|permission| proto::PermissionDefinition {
                id: permission.id().to_owned(),
                description: permission.description().to_owned(),
            })
            .collect();
        Ok(Response::new(proto::ListRolesResponse {
            roles,
            permissions,
        }))
    }
}
