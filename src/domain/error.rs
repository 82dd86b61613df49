use super::permission::Permission;

/// One invalid field of a request, as `google.rpc.BadRequest` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why a credential was not accepted. The reason is safe to show the caller:
/// it never says whether a user or an email exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingCredentials,
    MalformedCredentials,
    AmbiguousCredentials,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
    InvalidLogin,
    InviteInvalid,
    ApiKeyInvalid,
    ServiceCredentialsMissing,
    ServiceCredentialsInvalid,
    /// A refresh token that is unknown, expired, or of an ended session.
    RefreshTokenInvalid,
    /// A refresh token presented a second time: its session was ended.
    RefreshTokenReused,
    /// A password reset token that is unknown, expired or used.
    ResetTokenInvalid,
    /// A personal API token that is unknown, revoked or expired.
    ApiTokenInvalid,
}

impl AuthFailure {
    /// The `google.rpc.ErrorInfo` reason.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "CREDENTIALS_MISSING",
            AuthFailure::MalformedCredentials => "CREDENTIALS_MALFORMED",
            AuthFailure::AmbiguousCredentials => "CREDENTIALS_AMBIGUOUS",
            AuthFailure::InvalidToken => "TOKEN_INVALID",
            AuthFailure::TokenExpired => "TOKEN_EXPIRED",
            AuthFailure::TokenRevoked => "TOKEN_REVOKED",
            AuthFailure::InvalidLogin => "LOGIN_FAILED",
            AuthFailure::InviteInvalid => "INVITE_INVALID",
            AuthFailure::ApiKeyInvalid => "API_KEY_INVALID",
            AuthFailure::ServiceCredentialsMissing => "SERVICE_CREDENTIALS_MISSING",
            AuthFailure::ServiceCredentialsInvalid => "SERVICE_CREDENTIALS_INVALID",
            AuthFailure::RefreshTokenInvalid => "REFRESH_TOKEN_INVALID",
            AuthFailure::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            AuthFailure::ResetTokenInvalid => "RESET_TOKEN_INVALID",
            AuthFailure::ApiTokenInvalid => "API_TOKEN_INVALID",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => {
                "credentials required: send `authorization: Bearer <access token>`, `x-bintu-token` or `x-bintu-apikey`"
            }
            AuthFailure::MalformedCredentials => "the credentials are malformed",
            AuthFailure::AmbiguousCredentials => "send exactly one credential",
            AuthFailure::InvalidToken => "the access token is invalid",
            AuthFailure::TokenExpired => "the access token has expired",
            AuthFailure::TokenRevoked => {
                "the access token is no longer valid: its user was changed, logged out or deleted"
            }
            AuthFailure::InvalidLogin => "email or password is wrong",
            AuthFailure::InviteInvalid => {
                "the invite token is invalid, expired, revoked or already used"
            }
            AuthFailure::ApiKeyInvalid => "the API key is not valid (it may have been rotated)",
            AuthFailure::ServiceCredentialsMissing => {
                "this method is for internal services: send `x-usermgmt-service-key`"
            }
            AuthFailure::ServiceCredentialsInvalid => "the service credentials are not valid",
            AuthFailure::RefreshTokenInvalid => {
                "the refresh token is invalid, expired, or its session has ended: sign in again"
            }
            AuthFailure::RefreshTokenReused => {
                "the refresh token was already used: its session has been ended, sign in again"
            }
            AuthFailure::ResetTokenInvalid => {
                "the password reset token is invalid, expired or already used"
            }
            AuthFailure::ApiTokenInvalid => "the API token is unknown, revoked or expired",
        }
    }
}

/// The errors of the service, in its own words. The status module maps each to a
/// gRPC status with `google.rpc` details.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid argument: {0:?}")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("unauthenticated: {}", .0.reason())]
    Unauthenticated(AuthFailure),
    #[error("permission denied: {0} required")]
    PermissionDenied(Permission),
    /// The credential is valid, but for another organisation than asked.
    #[error("the credential belongs to another organisation")]
    WrongOrganisation,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{resource} already exists: {message}")]
    AlreadyExists {
        resource: &'static str,
        message: String,
    },
    #[error("failed precondition {reason}: {message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("aborted: {0}")]
    Aborted(String),
    /// Too much is asked at once: the caller may retry after `retry_after`.
    #[error("resource exhausted {reason}: {message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        retry_after: std::time::Duration,
        /// The `ErrorInfo` metadata (which limit refused, say).
        metadata: Vec<(&'static str, String)>,
    },
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Something broke inside the service. The text is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        DomainError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

/// Collects the field violations of one request, so that the caller learns
/// every problem at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Keeps the value of `result`, or records its violations.
    pub fn check<T>(&mut self, result: Result<T, DomainError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(DomainError::InvalidArgument(mut violations)) => {
                self.0.append(&mut violations);
                None
            }
            Err(other) => {
                self.add("", other.to_string());
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidArgument(self.0))
        }
    }

    /// Ends validation: every violation at once, or the checked values that
    /// `values` gathers (all present when nothing was violated).
    pub fn conclude<T>(self, values: impl FnOnce() -> Option<T>) -> Result<T, DomainError> {
        self.into_result()?;
        values().ok_or_else(|| DomainError::Internal("a validated field is missing".into()))
    }
}
