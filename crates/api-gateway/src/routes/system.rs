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

/// Readiness: Postgres answers.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "OK", body = ProbeStatus), (status = 503, description = "A dependency is unavailable; retry later", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let check = async {
        let mut conn = state.pool().get().await.ok()?;
        cls_storage::ping(&mut conn).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Some(())) => Ok(HttpResponse::Ok().json(ProbeStatus { status: "ready" })),
        _ => Err(ApiError::unavailable("the database")),
    }
}

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
