//! Domain errors as gRPC statuses with `google.rpc` details (AIP-193), for
//! the handlers and for the per-call check's refusals alike.
//! Internal details are logged, never sent.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation as PbFieldViolation, StatusExt as _};

use crate::domain::DomainError;

/// The `ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: &str = "usermgmt";

pub fn to_status(error: DomainError) -> Status {
    match error {
        DomainError::InvalidArgument(violations) => {
            let message = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ");
            let violations = violations
                .into_iter()
                .map(|v| PbFieldViolation::new(v.field, v.description))
                .collect::<Vec<_>>();
            Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid request: {message}"),
                ErrorDetails::with_bad_request(violations),
            )
        }
        DomainError::Unauthenticated(failure) => with_reason(
            Code::Unauthenticated,
            failure.message(),
            failure.reason(),
            [],
        ),
        DomainError::PermissionDenied(permission) => with_reason(
            Code::PermissionDenied,
            &format!("the caller's role lacks the permission {permission}"),
            "PERMISSION_MISSING",
            [("permission", permission.id())],
        ),
        DomainError::WrongOrganisation => with_reason(
            Code::PermissionDenied,
            "the credential belongs to another organisation",
            "WRONG_ORGANISATION",
            [],
        ),
        DomainError::NotFound(resource) => Status::with_error_details(
            Code::NotFound,
            format!("{resource} not found"),
            ErrorDetails::with_resource_info(
                resource,
                "",
                "",
                "not found in the caller's organisation",
            ),
        ),
        DomainError::AlreadyExists { resource, message } => Status::with_error_details(
            Code::AlreadyExists,
            message.clone(),
            ErrorDetails::with_resource_info(resource, "", "", message),
        ),
        DomainError::FailedPrecondition { reason, message } => {
            with_reason(Code::FailedPrecondition, &message, reason, [])
        }
        DomainError::Aborted(message) => {
            with_reason(Code::Aborted, &message, "CONCURRENT_MODIFICATION", [])
        }
        DomainError::ResourceExhausted {
            reason,
            message,
            retry_after,
            metadata,
        } => {
            let mut details = ErrorDetails::with_retry_info(Some(retry_after));
            let metadata: HashMap<String, String> = metadata
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect();
            details.set_error_info(reason, ERROR_DOMAIN, metadata);
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        DomainError::Unimplemented(message) => Status::unimplemented(message),
        DomainError::Unavailable(message) => Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1))),
        ),
        DomainError::Internal(detail) => {
            tracing::error!(detail, "internal error");
            Status::internal("internal error")
        }
    }
}

fn with_reason<const N: usize>(
    code: Code,
    message: &str,
    reason: &str,
    metadata: [(&str, &str); N],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

impl From<DomainError> for Status {
    fn from(error: DomainError) -> Self {
        to_status(error)
    }
}
