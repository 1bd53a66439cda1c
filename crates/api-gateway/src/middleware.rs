//! The edge middleware every request passes: request id, panic and timeout containment,
//! metrics and the access log line.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, web};
use futures_util::FutureExt as _;

use crate::error::ApiError;
use crate::{AppState, request_id};

pub(crate) async fn edge(
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

    // Panics and timeouts become problem responses; the connection stays usable.
    let outcome = request_id::scope(id.clone(), async {
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
    })
    .await;

    let elapsed = started.elapsed();
    let mut response = match outcome {
        Ok(response) => response,
        Err(err) => {
            let status = err.as_response_error().status_code().as_u16();
            let code = err.as_error::<ApiError>().map(|e| e.code.as_str());
            if let Some(state) = &state {
                state
                    .metrics
                    .observe(&method, "unknown", status, code, elapsed.as_secs_f64());
            }
            tracing::info!(request_id = %id, http.request.method = %method, http.response.status_code = status, "{method} {status}");
            return Err(err);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(request_id::HEADER), value);
    }
    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
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
        state
            .metrics
            .observe(&method, &route, status, error_code, elapsed.as_secs_f64());
    }
    tracing::info!(
        request_id = %id,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        caller = caller.as_deref().unwrap_or("-"),
        error.code = error_code.unwrap_or(""),
        "{method} {route} {status}"
    );
    Ok(response)
}
