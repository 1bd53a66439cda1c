//! Trace context across internal gRPC calls (W3C `traceparent` in the metadata), with spans
//! named and attributed after the OpenTelemetry RPC conventions.

use tonic::Request;

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

/// Adds the current span's `traceparent` to an outgoing request (nothing when not tracing).
pub fn inject(request: &mut Request<()>) {
    if let Some(traceparent) = cls_telemetry::traceparent(&tracing::Span::current())
        && let Ok(value) = traceparent.parse()
    {
        request.metadata_mut().insert("traceparent", value);
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
    let span = tracing::info_span!(
        "gRPC request",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    cls_telemetry::set_remote_parent(&span, traceparent);
    span
}
