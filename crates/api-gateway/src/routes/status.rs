//! `…/status` (SPEC §3.3, §4): controllers report, owners and controllers read. The gateway
//! checks identity, the caller's role and the body's shape; the status-aggregator (over gRPC)
//! validates against the current generation, stores and aggregates.

use actix_web::{HttpRequest, HttpResponse, web};
use cls_domain::error::{ErrorCode, FieldError};
use cls_domain::resource::ResourceKind;
use cls_domain::status::{ControllerReport, ControllerStatus, Status, report_violations};
use cls_rpc::status as pb;
use cls_rpc::trace::client_span;
use serde::Serialize;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Authenticated;
use crate::error::{ApiError, Problem};
use crate::routes::{json_body, path_id};

/// `GET /api/v1/clusters/{id}/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterStatusView {
    cluster_id: Uuid,
    status: Status,
    /// One row per controller, sorted by `controller_name`.
    controller_status: Vec<ControllerStatus>,
}

/// `GET /api/v1/nodepools/{id}/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodePoolStatusView {
    nodepool_id: Uuid,
    cluster_id: Uuid,
    status: Status,
    /// One row per controller, sorted by `controller_name`.
    controller_status: Vec<ControllerStatus>,
}

/// `PUT /api/v1/clusters/{id}/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterStatusStored {
    message: &'static str,
    cluster_id: Uuid,
    controller_name: String,
    observed_generation: i64,
}

/// `PUT /api/v1/nodepools/{id}/status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodePoolStatusStored {
    message: &'static str,
    nodepool_id: Uuid,
    cluster_id: Uuid,
    controller_name: String,
    observed_generation: i64,
}

fn pb_kind(kind: ResourceKind) -> pb::ResourceKind {
    match kind {
        ResourceKind::Cluster => pb::ResourceKind::Cluster,
        ResourceKind::NodePool => pb::ResourceKind::Nodepool,
    }
}

/// A failed call to the aggregator: 503 with `Retry-After`, never a hang (the channel has a
/// connect timeout and a per-call deadline).
fn peer_error(status: &tonic::Status) -> ApiError {
    if status.code() == tonic::Code::Unauthenticated {
        tracing::error!(error = %status, "the status-aggregator refused our token: check GRPC_SHARED_TOKEN");
    } else {
        tracing::warn!(error = %status, "status-aggregator call failed");
    }
    ApiError::unavailable("the status service")
}

fn not_found(kind: ResourceKind) -> ApiError {
    match kind {
        ResourceKind::Cluster => ApiError::cluster_not_found(),
        ResourceKind::NodePool => ApiError::nodepool_not_found(),
    }
}

fn rejected(kind: ResourceKind, r: pb::Rejected) -> ApiError {
    let code = ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == r.code)
        .unwrap_or(ErrorCode::Internal);
    match code {
        ErrorCode::ClusterNotFound | ErrorCode::NodePoolNotFound => not_found(kind),
        ErrorCode::ValidationFailed if !r.errors.is_empty() => ApiError::validation(
            r.errors
                .into_iter()
                .map(|e| FieldError::new(e.field, e.message))
                .collect(),
        ),
        ErrorCode::Internal => {
            tracing::error!(code = %r.code, message = %r.message, "unexpected rejection from the status-aggregator");
            ApiError::internal()
        }
        code => ApiError::new(code, r.message),
    }
}

async fn report(
    state: &AppState,
    caller: &Authenticated,
    req: &HttpRequest,
    kind: ResourceKind,
    id: &str,
    body: &[u8],
) -> Result<(Uuid, pb::Accepted), ApiError> {
    let id = path_id(id)?;
    if !caller.0.is_controller() {
        state.metrics.status_report_forbidden();
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only controllers may report status",
        ));
    }
    // Shape first, so malformed bodies get the same answers as on every other endpoint.
    json_body::<ControllerReport>(req, body, &[], |rest| {
        report_violations(rest, time::OffsetDateTime::now_utc())
    })?;
    let response = state
        .status()
        .report_status(pb::ReportStatusRequest {
            kind: pb_kind(kind).into(),
            resource_id: id.to_string(),
            report_json: body.to_vec(),
        })
        .instrument(client_span(
            "cls.status.v1.StatusAggregator",
            "ReportStatus",
        ))
        .await
        .map_err(|e| peer_error(&e))?
        .into_inner();
    match response.outcome {
        Some(pb::report_status_response::Outcome::Accepted(accepted)) => Ok((id, accepted)),
        Some(pb::report_status_response::Outcome::Rejected(r)) => Err(rejected(kind, r)),
        None => Err(ApiError::internal()),
    }
}

fn uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::internal())
}

/// Report a controller's status on a cluster (controllers only).
#[utoipa::path(put, path = "/api/v1/clusters/{id}/status", tag = "status", request_body = ControllerReport,
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "Stored; the aggregated status is recomputed", body = ClusterStatusStored),
        (status = 400, description = "Bad request: invalid id or body, or a generation the cluster does not have (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only controllers may report status", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "STALE_STATUS_REPORT: this controller already reported on a newer generation", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_cluster_status(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, accepted) = report(&state, &caller, &req, ResourceKind::Cluster, &id, &body).await?;
    Ok(HttpResponse::Ok().json(ClusterStatusStored {
        message: "Status update stored successfully",
        cluster_id: id,
        controller_name: accepted.controller_name,
        observed_generation: accepted.observed_generation,
    }))
}

/// Report a controller's status on a nodepool (controllers only).
#[utoipa::path(put, path = "/api/v1/nodepools/{id}/status", tag = "status", request_body = ControllerReport,
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "Stored; the aggregated status is recomputed", body = NodePoolStatusStored),
        (status = 400, description = "Bad request: invalid id or body, or a generation the nodepool does not have (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only controllers may report status", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "STALE_STATUS_REPORT: this controller already reported on a newer generation", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_nodepool_status(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (id, accepted) = report(&state, &caller, &req, ResourceKind::NodePool, &id, &body).await?;
    Ok(HttpResponse::Ok().json(NodePoolStatusStored {
        message: "Status updated successfully",
        nodepool_id: id,
        cluster_id: uuid(&accepted.cluster_id)?,
        controller_name: accepted.controller_name,
        observed_generation: accepted.observed_generation,
    }))
}

async fn read(
    state: &AppState,
    caller: &Authenticated,
    kind: ResourceKind,
    id: &str,
) -> Result<(Uuid, Uuid, Status, Vec<ControllerStatus>), ApiError> {
    let id = path_id(id)?;
    let response = state
        .status()
        .get_status(pb::GetStatusRequest {
            kind: pb_kind(kind).into(),
            resource_id: id.to_string(),
            caller: Some(pb::Caller {
                email: caller.0.email().to_owned(),
                controller: caller.0.is_controller(),
            }),
        })
        .instrument(client_span("cls.status.v1.StatusAggregator", "GetStatus"))
        .await
        .map_err(|e| peer_error(&e))?
        .into_inner();
    if !response.found {
        return Err(not_found(kind));
    }
    let decode_error = |e: serde_json::Error| {
        tracing::error!(error = %e, "undecodable status from the status-aggregator");
        ApiError::internal()
    };
    let status: Status = serde_json::from_slice(&response.status_json).map_err(decode_error)?;
    let rows: Vec<ControllerStatus> =
        serde_json::from_slice(&response.controller_status_json).map_err(decode_error)?;
    Ok((id, uuid(&response.cluster_id)?, status, rows))
}

/// A cluster's aggregated status and every controller's row.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/status", tag = "status", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = ClusterStatusView),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_cluster_status(
    state: web::Data<AppState>,
    caller: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (cluster_id, _, status, controller_status) =
        read(&state, &caller, ResourceKind::Cluster, &id).await?;
    Ok(HttpResponse::Ok().json(ClusterStatusView {
        cluster_id,
        status,
        controller_status,
    }))
}

/// A nodepool's aggregated status and every controller's row.
#[utoipa::path(get, path = "/api/v1/nodepools/{id}/status", tag = "status", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = NodePoolStatusView),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_nodepool_status(
    state: web::Data<AppState>,
    caller: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (nodepool_id, cluster_id, status, controller_status) =
        read(&state, &caller, ResourceKind::NodePool, &id).await?;
    Ok(HttpResponse::Ok().json(NodePoolStatusView {
        nodepool_id,
        cluster_id,
        status,
        controller_status,
    }))
}
