//! Health, readiness, service info and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::{ApiError, Problem};

/// `GET /health` response (kept for existing clients).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) timestamp: OffsetDateTime,
    pub(crate) service: &'static str,
}

/// `GET /info` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Info {
    pub(crate) service: &'static str,
    pub(crate) version: &'static str,
    pub(crate) git_sha: &'static str,
    pub(crate) build_time: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProbeStatus {
    status: &'static str,
}

/// Liveness, in the original service's shape.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, description = "OK", body = Health)))]
pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        timestamp: OffsetDateTime::now_utc(),
        service: "cls-backend",
    })
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "OK", body = ProbeStatus)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ProbeStatus { status: "ok" })
}

/// Readiness: Postgres answers and the status-aggregator is serving, the gRPC peer the gateway
/// needs (the four `…/status` endpoints are served by it). The reconcile-scheduler is not
/// checked: triggers are best-effort and its periodic pass catches up, so no request needs it.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "Postgres and the status-aggregator answer", body = ProbeStatus), (status = 503, description = "A dependency is unavailable (the message names it); retry later", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = async {
        let mut conn = state.pool().get().await.ok()?;
        cls_storage::ping(&mut conn).await.ok()
    };
    let (database, aggregator) = tokio::join!(
        tokio::time::timeout(READY_CHECK_TIMEOUT, database),
        tokio::time::timeout(READY_CHECK_TIMEOUT, state.status_health.check()),
    );
    if !matches!(database, Ok(Some(()))) {
        return Err(ApiError::unavailable("the database"));
    }
    let reason = match aggregator {
        Ok(Ok(())) => return Ok(HttpResponse::Ok().json(ProbeStatus { status: "ready" })),
        Ok(Err(reason)) => reason,
        Err(_) => format!("no answer within {READY_CHECK_TIMEOUT:?}"),
    };
    tracing::warn!(%reason, "not ready: the status-aggregator is not serving");
    Err(ApiError::unavailable("the status aggregator"))
}

/// How long `/readyz` waits for each dependency.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Build information.
#[utoipa::path(get, path = "/info", tag = "system", responses((status = 200, description = "OK", body = Info)))]
pub(crate) async fn info() -> HttpResponse {
    HttpResponse::Ok().json(Info {
        service: "api-gateway",
        version: env!("CARGO_PKG_VERSION"),
        git_sha: env!("CLS_GIT_SHA"),
        build_time: env!("CLS_BUILD_TIME"),
    })
}

/// Prometheus text exposition (admin port).
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (open, idle) = state.pools.totals();
    state.metrics.db_connections.set(i64::from(open));
    state.metrics.db_idle_connections.set(i64::from(idle));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
