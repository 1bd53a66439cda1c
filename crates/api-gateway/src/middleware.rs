//! The edge middleware every request passes: request id, the server span (its parent is the
//! client's `traceparent` when sent; exported as a `cls_telemetry::server::ServerSpan`, with a
//! log-only `tracing` span beside it), panic and timeout containment, metrics and the access
//! log line.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use futures_util::FutureExt as _;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::error::ApiError;
use crate::{AppState, request_id};

/// The edge middleware (public so tests can wrap their own routes with it).
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let id = request_id::from_headers(req.headers());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let timeout = state
        .as_ref()
        .map_or(Duration::from_secs(30), |s| s.request_timeout);
    let method = req.method().to_string();
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The route template, from the app's resource map (known before routing). Matched once:
    // each match runs the router's patterns again.
    let route = req.match_pattern();
    let route_label = route.as_deref().unwrap_or("unmatched");
    // OpenTelemetry semantic conventions; no bodies, headers or query strings. The exported
    // span is built directly (`ServerSpan`); the `tracing` span carries the same fields and
    // the trace id for log lines, and is not exported. Strings as `&str`, not `%` (`Display`):
    // the log layer copies them instead of formatting.
    let (server_span, trace_id) = cls_telemetry::server::ServerSpan::start(
        || match &route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        },
        &[
            ("http.request.method", &method),
            ("http.route", route_label),
            ("url.path", req.path()),
            ("request_id", &id),
        ],
        incoming.as_deref(),
    );
    let span = tracing::info_span!(
        target: cls_telemetry::server::LOG_ONLY_TARGET,
        "HTTP request",
        http.request.method = method.as_str(),
        http.route = route_label,
        http.response.status_code = Empty,
        url.path = req.path(),
        request_id = id.as_str(),
        trace_id = trace_id.as_str(),
    );

    // Panics and timeouts become problem responses; the connection stays usable.
    let outcome = request_id::scope(id.clone(), incoming, async {
        let call = AssertUnwindSafe(next.call(req)).catch_unwind();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(result)) => result.map(ServiceResponse::map_into_boxed_body),
            Ok(Err(_panic)) => {
                tracing::error!(request_id = %id, "request handler panicked");
                Err(ApiError::internal().with_request_id(&id).into())
            }
            Err(_elapsed) => {
                tracing::warn!(request_id = %id, "request timed out after {timeout:?}");
                Err(ApiError::unavailable("the service (request timed out)")
                    .with_request_id(&id)
                    .into())
            }
        }
    });
    let outcome = server_span.run(outcome).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let _entered = span.enter();
    let mut response = match outcome {
        Ok(response) => response,
        Err(err) => {
            let status = err.as_response_error().status_code().as_u16();
            let code = err.as_error::<ApiError>().map(|e| e.code.as_str());
            if let Some(state) = &state {
                state
                    .metrics
                    .observe(&method, route_label, status, code, elapsed.as_secs_f64());
            }
            span.record("http.response.status_code", status);
            server_span.end(("http.response.status_code", status.into()), status >= 500);
            tracing::info!(request_id = %id, http.request.method = %method, http.response.status_code = status, "{method} {status}");
            return Err(match err.as_error::<ApiError>() {
                Some(_) => err,
                None => problem_for(status, Some(err.to_string()))
                    .with_request_id(&id)
                    .into(),
            });
        }
    };
    if response.status().as_u16() >= 400 && !is_problem(&response) {
        response = as_problem(response, &id);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(request_id::HEADER), value);
    }
    let status = response.status().as_u16();
    let error_code = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(|e| e.code.as_str());
    let caller = response
        .request()
        .extensions()
        .get::<crate::auth::CallerTag>()
        .map(|c| c.0.clone());
    if let Some(state) = &state {
        state.metrics.observe(
            &method,
            route_label,
            status,
            error_code,
            elapsed.as_secs_f64(),
        );
    }
    span.record("http.response.status_code", status);
    server_span.end(("http.response.status_code", status.into()), status >= 500);
    tracing::info!(
        request_id = %id,
        http.request.method = %method,
        http.route = %route_label,
        http.response.status_code = status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        caller = caller.as_deref().unwrap_or("-"),
        error.code = error_code.unwrap_or(""),
        "{method} {route_label} {status}"
    );
    Ok(response)
}

fn is_problem(response: &ServiceResponse<BoxBody>) -> bool {
    response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == crate::error::PROBLEM_JSON.as_bytes())
}

/// The problem for an error made outside our handlers (actix extractors, CORS): the stable
/// code for its status, so every failure has the same shape.
fn problem_for(status: u16, detail: Option<String>) -> ApiError {
    use cls_domain::ErrorCode;
    let (code, message) = match status {
        400 => (
            ErrorCode::InvalidJson,
            detail.unwrap_or_else(|| "bad request".to_owned()),
        ),
        401 => (
            ErrorCode::AuthRequired,
            "authentication required".to_owned(),
        ),
        403 => (
            ErrorCode::Forbidden,
            detail.unwrap_or_else(|| "forbidden".to_owned()),
        ),
        404 => (ErrorCode::RouteNotFound, "no such route".to_owned()),
        405 => (ErrorCode::MethodNotAllowed, "method not allowed".to_owned()),
        413 => (
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {} bytes", crate::routes::MAX_BODY),
        ),
        415 => (
            ErrorCode::UnsupportedMediaType,
            "unsupported media type".to_owned(),
        ),
        429 => (ErrorCode::RateLimited, "too many requests".to_owned()),
        503 => (ErrorCode::Unavailable, "service unavailable".to_owned()),
        _ => (ErrorCode::Internal, "internal server error".to_owned()),
    };
    ApiError::new(code, message)
}

/// Replaces a non-problem error response with its problem (see [`problem_for`]).
fn as_problem(response: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let status = response.status().as_u16();
    let detail = response.response().error().map(ToString::to_string);
    let (request, original) = response.into_parts();
    let mut problem = problem_for(status, detail)
        .with_request_id(id)
        .error_response();
    if let Some(allow) = original.headers().get(actix_web::http::header::ALLOW) {
        problem
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, allow.clone());
    }
    ServiceResponse::new(request, problem)
}
