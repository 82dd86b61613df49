use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{convert, principal};
use crate::app::audit::AuditLog;
use crate::domain::audit::{AuditFilter, SequenceCursor};
use crate::domain::error::Violations;
use crate::domain::paging::{self, PageRequest};
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
            after_sequence: match request.after_sequence {
                0 => None,
                n if n < 0 => {
                    v.add("after_sequence", "must not be negative");
                    None
                }
                n => Some(n),
            },
        };
        let fingerprint = filter.fingerprint();
        let mut events;
        let next_page_token;
        if let Some(after_sequence) = filter.after_sequence {
            // The change feed's order, oldest first.
            let page = PageRequest::<SequenceCursor>::read(
                &mut v,
                page_size,
                &request.page_token,
                fingerprint,
            );
            v.into_result()?;
            events = self
                .audit
                .list_by_sequence(
                    &caller,
                    &filter,
                    after_sequence,
                    page.after,
                    page.fetch_limit(),
                )
                .await?;
            next_page_token = page.next_token(&mut events, SequenceCursor::after);
        } else {
            let page =
                PageRequest::<Uuid>::read(&mut v, page_size, &request.page_token, fingerprint);
            v.into_result()?;
            events = self
                .audit
                .list(&caller, &filter, page.after, page.fetch_limit())
                .await?;
            next_page_token = page.next_token(&mut events, |e| e.id);
        }
        Ok(Response::new(proto::ListAuditEventsResponse {
            events: events.iter().map(convert::audit_event).collect(),
            next_page_token,
        }))
    }
}
