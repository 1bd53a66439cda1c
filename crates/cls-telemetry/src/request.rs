//! The request a task works for: its id (`X-Request-ID`) and the client's `traceparent`. The
//! gateway sets it for everything a request runs; gRPC calls made meanwhile send the id on
//! (`x-request-id` metadata), so a peer's log lines for the call carry the same `request_id`.

use std::future::Future;

/// The header (and gRPC metadata key) carrying a request id.
pub const HEADER: &str = "x-request-id";

/// The longest request id accepted from a client or a peer.
pub const MAX_LEN: usize = 128;

/// What identifies the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    /// The client's `traceparent`, if it sent one.
    pub traceparent: Option<String>,
}

tokio::task_local! {
    static CURRENT: Request;
}

/// Runs `fut` as part of `request`.
pub async fn scope<F: Future>(request: Request, fut: F) -> F::Output {
    CURRENT.scope(request, fut).await
}

/// The request being served, if any.
pub fn current() -> Option<Request> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Whether a request id from outside may be used as is: 1 to 128 characters from
/// `[A-Za-z0-9-_.:/+=]` (safe in headers and log lines).
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_is_visible_inside_its_scope_only() {
        assert_eq!(current(), None);
        let request = Request {
            id: "req-1".to_owned(),
            traceparent: None,
        };
        let seen = scope(request.clone(), async { current() }).await;
        assert_eq!(seen, Some(request));
        assert_eq!(current(), None);
    }

    #[test]
    fn only_short_plain_ids_are_safe() {
        assert!(is_safe_id("abc-123_x.y:z/+="));
        assert!(!is_safe_id(""));
        assert!(!is_safe_id("has space"));
        assert!(!is_safe_id("line\nbreak"));
        assert!(!is_safe_id(&"a".repeat(MAX_LEN + 1)));
    }
}
