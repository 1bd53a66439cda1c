//! The admin HTTP server of the internal services: `/healthz` (the process serves),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// The readiness check: `Ok(())` when ready, else what is not.
pub type ReadinessFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
pub type Readiness = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

/// A [`Readiness`] from an async check.
pub fn readiness<F, Fut>(check: F) -> Readiness
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

/// Called before `/metrics` renders, to refresh gauges that are sampled on demand.
pub type BeforeScrape = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
    before_scrape: Option<BeforeScrape>,
}

/// How long `/readyz` waits for the check before answering 503.
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// The admin router.
pub fn router(
    registry: Registry,
    readiness: Readiness,
    before_scrape: Option<BeforeScrape>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            registry,
            readiness,
            before_scrape,
        })
}

/// Serves the admin router until `shutdown` completes.
/// [`serve`] as a background task: a failure to serve is logged.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = serve(listener, router, shutdown).await {
        tracing::error!(error = %e, "admin server failed");
    }
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match tokio::time::timeout(READINESS_TIMEOUT, (state.readiness)()).await {
        Ok(Ok(())) => json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
        Ok(Err(reason)) => not_ready(&reason),
        Err(_) => not_ready("the readiness check timed out"),
    }
}

fn not_ready(reason: &str) -> Response {
    let body = serde_json::json!({"status": "not ready", "reason": reason}).to_string();
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Some(refresh) = &state.before_scrape {
        refresh().await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&state.registry),
    )
        .into_response()
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
