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
