use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{convert, principal, request_id};
use crate::app::sessions::Sessions;
use crate::domain::error::Violations;
use crate::domain::paging::{self, PageRequest};
use crate::domain::session::Session;
use crate::domain::user::{optional_id, parse_id};
use crate::proto::{self, session_service_server::SessionService};

pub struct SessionApi {
    pub sessions: std::sync::Arc<Sessions>,
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let mut v = Violations::default();
        let user_id = v.check(optional_id("user_id", &request.user_id)).flatten();
        let page_size = v.check(paging::page_size(request.page_size));
        let filter = format!("sessions={}", request.user_id);
        let page = PageRequest::<Uuid>::read(&mut v, page_size, &request.page_token, filter);
        v.into_result()?;
        let mut found = self
            .sessions
            .list_sessions(&caller, user_id, page.after, page.fetch_limit())
            .await?;
        let next_page_token = page.next_token(&mut found.sessions, |s| s.id);
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: found
                .sessions
                .iter()
                .map(|session| session_to_proto(session, found.current))
                .collect(),
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeSessionResponse>, Status> {
        let caller = principal(&request)?;
        let request_id = request_id(&request);
        let session_id = parse_id("session_id", &request.get_ref().session_id)?;
        self.sessions
            .revoke_session(&caller, session_id, request_id)
            .await?;
        Ok(Response::new(proto::RevokeSessionResponse {}))
    }
}

pub(super) fn session_to_proto(session: &Session, current: Option<uuid::Uuid>) -> proto::Session {
    proto::Session {
        id: session.id.to_string(),
        user_id: session.user_id.to_string(),
        created_at: Some(convert::timestamp(session.created_at)),
        last_refreshed_at: session.last_refreshed_at.map(convert::timestamp),
        expires_at: Some(convert::timestamp(session.expires_at)),
        client_address: session.client_address.clone(),
        user_agent: session.user_agent.clone(),
        current: current == Some(session.id),
    }
}
