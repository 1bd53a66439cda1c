//! The stable error codes of the public API (SPEC §3.6) and field-level violations.

use std::fmt;

/// A stable, client-visible error code. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    AuthRequired,
    InvalidEmail,
    InvalidToken,
    Forbidden,
    RouteNotFound,
    ClusterNotFound,
    NodePoolNotFound,
    MethodNotAllowed,
    InvalidJson,
    ValidationFailed,
    InvalidId,
    InvalidQuery,
    InvalidClusterId,
    ClusterNameExists,
    NodePoolNameExists,
    ClusterNotDeletable,
    VersionConflict,
    StaleStatusReport,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::AuthRequired,
        ErrorCode::InvalidEmail,
        ErrorCode::InvalidToken,
        ErrorCode::Forbidden,
        ErrorCode::RouteNotFound,
        ErrorCode::ClusterNotFound,
        ErrorCode::NodePoolNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidJson,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidId,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidClusterId,
        ErrorCode::ClusterNameExists,
        ErrorCode::NodePoolNameExists,
        ErrorCode::ClusterNotDeletable,
        ErrorCode::VersionConflict,
        ErrorCode::StaleStatusReport,
        ErrorCode::PreconditionFailed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears in the `code` member of a problem body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::InvalidEmail => "INVALID_EMAIL",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RouteNotFound => "ROUTE_NOT_FOUND",
            ErrorCode::ClusterNotFound => "CLUSTER_NOT_FOUND",
            ErrorCode::NodePoolNotFound => "NODEPOOL_NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::InvalidId => "INVALID_ID",
            ErrorCode::InvalidQuery => "INVALID_QUERY",
            ErrorCode::InvalidClusterId => "INVALID_CLUSTER_ID",
            ErrorCode::ClusterNameExists => "CLUSTER_NAME_EXISTS",
            ErrorCode::NodePoolNameExists => "NODEPOOL_NAME_EXISTS",
            ErrorCode::ClusterNotDeletable => "CLUSTER_NOT_DELETABLE",
            ErrorCode::VersionConflict => "VERSION_CONFLICT",
            ErrorCode::StaleStatusReport => "STALE_STATUS_REPORT",
            ErrorCode::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status code this error is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::AuthRequired | ErrorCode::InvalidEmail | ErrorCode::InvalidToken => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RouteNotFound | ErrorCode::ClusterNotFound | ErrorCode::NodePoolNotFound => {
                404
            }
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::InvalidJson
            | ErrorCode::ValidationFailed
            | ErrorCode::InvalidId
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidClusterId => 400,
            ErrorCode::ClusterNameExists
            | ErrorCode::NodePoolNameExists
            | ErrorCode::ClusterNotDeletable
            | ErrorCode::VersionConflict
            | ErrorCode::StaleStatusReport => 409,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The RFC 9457 `title`: the standard reason phrase of the status code.
    pub fn title(self) -> &'static str {
        match self.http_status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            412 => "Precondition Failed",
            413 => "Payload Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One violation of a validation rule: the JSON path of the offending field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_map_to_the_spec_statuses() {
        let names: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        let expect = [
            ("AUTH_REQUIRED", 401),
            ("INVALID_EMAIL", 401),
            ("INVALID_TOKEN", 401),
            ("FORBIDDEN", 403),
            ("ROUTE_NOT_FOUND", 404),
            ("CLUSTER_NOT_FOUND", 404),
            ("NODEPOOL_NOT_FOUND", 404),
            ("METHOD_NOT_ALLOWED", 405),
            ("INVALID_JSON", 400),
            ("VALIDATION_FAILED", 400),
            ("INVALID_ID", 400),
            ("INVALID_QUERY", 400),
            ("INVALID_CLUSTER_ID", 400),
            ("CLUSTER_NAME_EXISTS", 409),
            ("NODEPOOL_NAME_EXISTS", 409),
            ("CLUSTER_NOT_DELETABLE", 409),
            ("VERSION_CONFLICT", 409),
            ("STALE_STATUS_REPORT", 409),
            ("PRECONDITION_FAILED", 412),
            ("PAYLOAD_TOO_LARGE", 413),
            ("UNSUPPORTED_MEDIA_TYPE", 415),
            ("IDEMPOTENCY_KEY_REUSED", 422),
            ("RATE_LIMITED", 429),
            ("INTERNAL", 500),
            ("UNAVAILABLE", 503),
        ];
        assert_eq!(expect.len(), ErrorCode::ALL.len());
        for (code, (name, status)) in ErrorCode::ALL.iter().zip(expect) {
            assert_eq!((code.as_str(), code.http_status()), (name, status));
        }
        assert_eq!(ErrorCode::VersionConflict.title(), "Conflict");
        assert_eq!(ErrorCode::Internal.title(), "Internal Server Error");
    }
}
