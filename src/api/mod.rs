//! The gRPC surface: thin tonic adapters that turn requests into domain
//! values, call the store or the authenticator, and turn results back.

pub mod api_token_service;
pub mod audit_service;
pub mod auth_service;
pub mod change_service;
pub mod convert;
pub mod organisation_service;
pub mod playback_service;
pub mod role_service;
pub mod screen;
pub mod session_service;
pub mod user_service;

use tonic::{Request, Status};

use crate::auth::Principal;

/// The caller, as the per-call check established it for this request.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a handler that needs a caller ran without the per-call check");
            Status::internal("internal error")
        })
}

/// The internal service calling, as the per-call check established it.
pub fn service_caller<T>(request: &Request<T>) -> Result<crate::auth::ServiceCaller, Status> {
    request
        .extensions()
        .get::<crate::auth::ServiceCaller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a service method ran without the per-call check");
            Status::internal("internal error")
        })
}

/// The call's request id (set by the server's telemetry layer), for the
/// audit log.
pub fn request_id<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<tower_http::request_id::RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned)
}
