//! The one error type of the HTTP edge: RFC 9457 problem details with the stable `code`,
//! `message` (= `detail`), `request_id` and, for validation failures, `errors` (SPEC §3.6).
//! Internal causes are logged here, once, and never sent to clients.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use cls_domain::{ErrorCode, FieldError};
use cls_storage::StorageError;
use serde::Serialize;

use crate::request_id;

/// The problem+json media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub errors: Vec<FieldError>,
    /// `Allow` for 405.
    pub allow: Option<&'static str>,
    /// `Retry-After` seconds for 429/503.
    pub retry_after: Option<u32>,
    /// The request id, when the error is rendered outside the request's task (panics,
    /// timeouts); otherwise the task-local id is used.
    pub request_id: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// A stable error code, e.g. `CLUSTER_NOT_FOUND`.
    pub code: &'static str,
    /// The same as `detail` (existing clients read `message`).
    pub message: String,
    pub request_id: String,
    /// Present for validation failures only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            errors: Vec::new(),
            allow: None,
            retry_after: None,
            request_id: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let message = match errors.as_slice() {
            [only] => format!("validation failed: {only}"),
            _ => format!("validation failed: {} problems", errors.len()),
        };
        ApiError {
            errors,
            ..ApiError::new(ErrorCode::ValidationFailed, message)
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::validation(vec![FieldError::new(field, message)])
    }

    pub fn cluster_not_found() -> ApiError {
        ApiError::new(ErrorCode::ClusterNotFound, "cluster not found")
    }

    pub fn nodepool_not_found() -> ApiError {
        ApiError::new(ErrorCode::NodePoolNotFound, "nodepool not found")
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal server error")
    }

    pub fn unavailable(what: &str) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::Unavailable,
                format!("{what} is unavailable, retry later"),
            )
        }
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("method not allowed; allowed: {allow}"),
            )
        }
    }

    pub fn with_request_id(mut self, id: &str) -> ApiError {
        self.request_id = Some(id.to_owned());
        self
    }

    pub fn problem(&self) -> Problem {
        Problem {
            problem_type: "about:blank",
            title: self.code.title(),
            status: self.code.http_status(),
            detail: self.message.clone(),
            code: self.code.as_str(),
            message: self.message.clone(),
            request_id: self
                .request_id
                .clone()
                .or_else(request_id::current)
                .unwrap_or_default(),
            errors: (self.code == ErrorCode::ValidationFailed).then(|| self.errors.clone()),
        }
    }

    /// Maps a storage error for a request about a cluster.
    pub fn from_cluster_storage(err: StorageError) -> ApiError {
        match err {
            StorageError::NotFound => ApiError::cluster_not_found(),
            other => ApiError::from(other),
        }
    }

    /// Maps a storage error for a request about a nodepool.
    pub fn from_nodepool_storage(err: StorageError) -> ApiError {
        match err {
            StorageError::NotFound => ApiError::nodepool_not_found(),
            other => ApiError::from(other),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if let Some(id) = &self.request_id
            && let Ok(value) = HeaderValue::from_str(id)
        {
            response.insert_header((request_id::HEADER, value));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> ApiError {
        match err {
            StorageError::NotFound => ApiError::new(ErrorCode::RouteNotFound, "not found"),
            StorageError::NameExists {
                kind: "nodepool",
                name,
            } => ApiError::new(
                ErrorCode::NodePoolNameExists,
                format!("a nodepool named '{name}' already exists in this cluster"),
            ),
            StorageError::NameExists { name, .. } => ApiError::new(
                ErrorCode::ClusterNameExists,
                format!("a cluster named '{name}' already exists"),
            ),
            StorageError::VersionConflict => ApiError::new(
                ErrorCode::VersionConflict,
                "resource_version does not match the current version; fetch the resource and retry",
            ),
            StorageError::PreconditionFailed => ApiError::new(
                ErrorCode::PreconditionFailed,
                "If-Match does not match the current ETag; fetch the resource and retry",
            ),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database connection lost");
                ApiError::unavailable("the database")
            }
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::internal()
            }
        }
    }
}

impl From<cls_storage::pool::RunError> for ApiError {
    fn from(err: cls_storage::pool::RunError) -> ApiError {
        tracing::warn!(error = %err, "no database connection");
        ApiError::unavailable("the database")
    }
}

/// Lets gateway transactions (`conn.transaction(..)`) return `ApiError` directly.
impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> ApiError {
        ApiError::from(StorageError::Database(err))
    }
}
