//! `X-Request-ID`: echoed if the client sent a safe one, otherwise a new UUID. The id is
//! available to everything that runs for the request through a task-local.

use actix_web::http::header::HeaderMap;

pub use cls_telemetry::request::HEADER;
use cls_telemetry::request::{Request, is_safe_id};

/// The id of the request being served, if any.
pub fn current() -> Option<String> {
    cls_telemetry::request::current().map(|r| r.id)
}

/// Runs `fut` with `id` as the current request id and the client's `traceparent`.
pub async fn scope<F: std::future::Future>(
    id: String,
    incoming_traceparent: Option<String>,
    fut: F,
) -> F::Output {
    let request = Request {
        id,
        traceparent: incoming_traceparent,
    };
    cls_telemetry::request::scope(request, fut).await
}

/// The trace context to store with what the current request writes (outbox rows): the
/// current span's when tracing, else the client's `traceparent` (so a controller can still
/// continue the caller's trace), else none.
pub fn traceparent() -> Option<String> {
    cls_telemetry::traceparent(&tracing::Span::current()).or_else(|| {
        cls_telemetry::request::current()
            .and_then(|r| r.traceparent)
            .filter(|t| cls_domain::event::is_valid_traceparent(t))
    })
}

/// The client's id if it is at most 128 safe characters, else a new UUID.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_safe_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn with(id: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(HEADER),
            HeaderValue::from_str(id).unwrap(),
        );
        from_headers(&headers)
    }

    #[test]
    fn safe_ids_are_echoed_and_others_replaced() {
        assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
        let replaced = with("has space");
        assert!(uuid::Uuid::parse_str(&replaced).is_ok());
        assert!(uuid::Uuid::parse_str(&with(&"a".repeat(129))).is_ok());
        assert_eq!(with(&"a".repeat(128)), "a".repeat(128));
        assert!(uuid::Uuid::parse_str(&from_headers(&HeaderMap::new())).is_ok());
    }
}
