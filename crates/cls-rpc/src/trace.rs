//! Trace context and request ids across internal gRPC calls (W3C `traceparent` and
//! `x-request-id` in the metadata), with spans named and attributed after the OpenTelemetry
//! RPC conventions.

use tonic::Request;
use tonic::codegen::http;
use tracing::field::Empty;

/// The span of an outgoing call; run the call inside it (`.instrument(span)`) so the
/// interceptor sends its context.
pub fn client_span(service: &'static str, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "gRPC call",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// The trace context to send with what the current task does (gRPC calls, outbox rows): the
/// current span's `traceparent` when tracing, else the client's of the request being served
/// (passed through, so a peer or a controller can still continue the caller's trace), else
/// none.
pub fn current_traceparent() -> Option<String> {
    cls_telemetry::traceparent(&tracing::Span::current()).or_else(|| {
        cls_telemetry::request::current()
            .and_then(|r| r.traceparent)
            .filter(|t| cls_domain::event::is_valid_traceparent(t))
    })
}

/// Adds the trace context ([`current_traceparent`]) and the id of the request being served,
/// if any, to an outgoing request.
pub fn inject(request: &mut Request<()>) {
    if let Some(traceparent) = current_traceparent()
        && let Ok(value) = traceparent.parse()
    {
        request.metadata_mut().insert("traceparent", value);
    }
    if let Some(served) = cls_telemetry::request::current()
        && let Ok(value) = served.id.parse()
    {
        request
            .metadata_mut()
            .insert(cls_telemetry::request::HEADER, value);
    }
}

/// The request an incoming call serves: the caller's `x-request-id` (if it is safe to use)
/// and `traceparent`. `None` for a call made for no request (a scheduler round).
fn served_request(headers: &http::HeaderMap) -> Option<cls_telemetry::request::Request> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header(cls_telemetry::request::HEADER)
        .filter(|id| cls_telemetry::request::is_safe_id(id))?;
    Some(cls_telemetry::request::Request {
        id: id.to_owned(),
        traceparent: header("traceparent").map(str::to_owned),
    })
}

/// Runs every incoming call as part of the request it serves (`served_request`), so the
/// calls it makes in turn (the status-aggregator's reconcile trigger) carry the same request
/// id: a request is one `request_id` in the logs of every service it crosses, not only of the
/// first peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestScopeLayer;

impl<S> tower_layer::Layer<S> for RequestScopeLayer {
    type Service = RequestScope<S>;

    fn layer(&self, inner: S) -> RequestScope<S> {
        RequestScope { inner }
    }
}

/// See [`RequestScopeLayer`].
#[derive(Debug, Clone)]
pub struct RequestScope<S> {
    inner: S,
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for RequestScope<S>
where
    S: tonic::codegen::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let served = served_request(request.headers());
        let call = self.inner.call(request);
        match served {
            Some(served) => Box::pin(cls_telemetry::request::scope(served, call)),
            None => Box::pin(call),
        }
    }
}

/// The span of an incoming call, a child of the caller's `traceparent`. Health checks and
/// reflection get none (probes would drown the traces).
pub fn server_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if !service.starts_with("cls.") {
        return tracing::Span::none();
    }
    // `request_id` and `trace_id` are for the log lines of the call, as on the gateway's
    // request span; a call made for no request (a scheduler round) has no `request_id`.
    let span = tracing::info_span!(
        "gRPC request",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        request_id = Empty,
        trace_id = Empty,
    );
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let traceparent = header("traceparent");
    if let Some(served) = served_request(request.headers()) {
        span.record("request_id", served.id);
    }
    span.record(
        "trace_id",
        cls_telemetry::adopt_remote_parent(&span, traceparent),
    );
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use cls_telemetry::request::{self, Request as Served};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn injected() -> tonic::metadata::MetadataMap {
        let mut call = Request::new(());
        inject(&mut call);
        call.metadata().clone()
    }

    #[tokio::test]
    async fn calls_made_for_a_request_carry_its_id_and_the_clients_trace() {
        let served = Served {
            id: "req-9".to_owned(),
            traceparent: Some(TP.to_owned()),
        };
        let metadata = request::scope(served, async { injected() }).await;
        assert_eq!(metadata.get("x-request-id").unwrap(), "req-9");
        // No exporter here: the client's trace context is passed through.
        assert_eq!(metadata.get("traceparent").unwrap(), TP);

        let without_trace = Served {
            id: "req-10".to_owned(),
            traceparent: Some("garbage".to_owned()),
        };
        let metadata = request::scope(without_trace, async { injected() }).await;
        assert_eq!(metadata.get("x-request-id").unwrap(), "req-10");
        assert!(metadata.get("traceparent").is_none());

        // A call made for no request (a scheduler round) carries neither.
        assert!(injected().is_empty());
    }
}
