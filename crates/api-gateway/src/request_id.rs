//! `X-Request-ID`: echoed if the client sent a safe one, otherwise a new UUID. The id is
//! available to everything that runs for the request through a task-local.

use actix_web::http::header::HeaderMap;

pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
    /// The client's `traceparent`, if it sent one.
    static INCOMING_TRACEPARENT: Option<String>;
}

/// The id of the request being served, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id and the client's `traceparent`.
pub async fn scope<F: std::future::Future>(
    id: String,
    incoming_traceparent: Option<String>,
    fut: F,
) -> F::Output {
    REQUEST_ID
        .scope(id, INCOMING_TRACEPARENT.scope(incoming_traceparent, fut))
        .await
}

/// The trace context to store with what the current request writes (outbox rows): the
/// current span's when tracing, else the client's `traceparent` (so a controller can still
/// continue the caller's trace), else none.
pub fn traceparent() -> Option<String> {
    cls_telemetry::traceparent(&tracing::Span::current()).or_else(|| {
        INCOMING_TRACEPARENT
            .try_with(Clone::clone)
            .ok()
            .flatten()
            .filter(|t| cls_domain::event::is_valid_traceparent(t))
    })
}

/// The client's id if it is at most 128 safe characters, else a new UUID.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_safe(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn is_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
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
