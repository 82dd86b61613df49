use tonic::{Request, Response, Status};

use super::{convert, principal};
use crate::app::audit::AuditLog;
use crate::domain::audit::AuditFilter;
use crate::domain::error::Violations;
use crate::domain::paging::{self, PageToken};
use crate::proto::{self, audit_service_server::AuditService};

pub struct AuditApi {
    pub audit: AuditLog,
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let page_size = v.check(paging::page_size(request.page_size));
        let filter = AuditFilter {
            actor: v
                .check(convert::optional_text("actor", &request.actor, 200))
                .flatten(),
            target_id: v
                .check(convert::optional_text("target_id", &request.target_id, 200))
                .flatten(),
            action: v
                .check(convert::optional_text("action", &request.action, 100))
                .flatten(),
            start_time: v
                .check(convert::optional_time("start_time", request.start_time))
                .flatten(),
            end_time: v
                .check(convert::optional_time("end_time", request.end_time))
                .flatten(),
        };
        let fingerprint = filter.fingerprint();
        let before = v
            .check(PageToken::decode(&request.page_token, &fingerprint))
            .flatten();
        v.into_result()?;
        let page_size = page_size.unwrap_or(paging::DEFAULT_PAGE_SIZE);

        let mut events = self
            .audit
            .list(&caller, &filter, before, page_size + 1)
            .await?;
        let next_page_token =
            paging::next_page_token(&mut events, page_size, &fingerprint, |e| e.id);
        Ok(Response::new(proto::ListAuditEventsResponse {
            events: events.iter().map(convert::audit_event).collect(),
            next_page_token,
        }))
    }
}
