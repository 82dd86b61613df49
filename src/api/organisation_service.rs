use tonic::{Request, Response, Status};

use super::{convert, principal};
use crate::proto::{self, organisation_service_server::OrganisationService};
use crate::store::Store;

pub struct OrganisationApi {
    pub store: Store,
}

#[tonic::async_trait]
impl OrganisationService for OrganisationApi {
    async fn get_organisation(
        &self,
        request: Request<proto::GetOrganisationRequest>,
    ) -> Result<Response<proto::GetOrganisationResponse>, Status> {
        let caller = principal(&request)?;
        let organisation = self.store.organisation(caller.organisation_id).await?;
        Ok(Response::new(proto::GetOrganisationResponse {
            organisation: Some(convert::organisation(&organisation)),
        }))
    }
}
