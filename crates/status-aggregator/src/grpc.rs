//! `cls.status.v1.StatusAggregator` over the [`Aggregator`].

use cls_domain::identity::Caller;
use cls_domain::resource::ResourceKind;
use cls_rpc::status as pb;
use cls_rpc::status::status_aggregator_server::StatusAggregator;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::aggregator::{Aggregator, ReportError};

#[derive(Debug, Clone)]
pub struct StatusService {
    pub(crate) aggregator: Aggregator,
}

#[allow(
    clippy::result_large_err,
    reason = "tonic::Status is the error type of the API"
)]
fn target(kind: i32, id: &str) -> Result<(ResourceKind, Uuid), Status> {
    let kind = match pb::ResourceKind::try_from(kind) {
        Ok(pb::ResourceKind::Cluster) => ResourceKind::Cluster,
        Ok(pb::ResourceKind::Nodepool) => ResourceKind::NodePool,
        _ => {
            return Err(Status::invalid_argument(
                "kind: must be CLUSTER or NODEPOOL",
            ));
        }
    };
    let id =
        Uuid::parse_str(id).map_err(|_| Status::invalid_argument("resource_id: must be a UUID"))?;
    Ok((kind, id))
}

fn unavailable(e: &cls_storage::StorageError) -> Status {
    tracing::warn!(error = %e, "status storage unavailable");
    if e.is_unavailable() {
        Status::unavailable("the status database is unavailable")
    } else {
        Status::internal("status storage failed")
    }
}

#[tonic::async_trait]
impl StatusAggregator for StatusService {
    async fn report_status(
        &self,
        request: Request<pb::ReportStatusRequest>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let request = request.into_inner();
        let (kind, id) = target(request.kind, &request.resource_id)?;
        let outcome = match self
            .aggregator
            .report(kind, id, &request.report_json, OffsetDateTime::now_utc())
            .await
        {
            Ok(accepted) => pb::report_status_response::Outcome::Accepted(pb::Accepted {
                cluster_id: accepted.cluster_id.to_string(),
                controller_name: accepted.controller_name,
                observed_generation: accepted.observed_generation,
            }),
            Err(ReportError::Rejected(rejected)) => {
                pb::report_status_response::Outcome::Rejected(pb::Rejected {
                    code: rejected.code.as_str().to_owned(),
                    message: rejected.message,
                    errors: rejected
                        .errors
                        .into_iter()
                        .map(|e| pb::FieldError {
                            field: e.field,
                            message: e.message,
                        })
                        .collect(),
                })
            }
            Err(ReportError::Storage(e)) => return Err(unavailable(&e)),
        };
        Ok(Response::new(pb::ReportStatusResponse {
            outcome: Some(outcome),
        }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let request = request.into_inner();
        let (kind, id) = target(request.kind, &request.resource_id)?;
        let caller = match request.caller {
            Some(pb::Caller {
                email,
                controller: true,
            }) => Caller::Controller(email),
            Some(pb::Caller {
                email,
                controller: false,
            }) if !email.is_empty() => Caller::User(email),
            _ => return Err(Status::invalid_argument("caller: required")),
        };
        let view = self
            .aggregator
            .get(kind, id, &caller)
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(view) = view else {
            return Ok(Response::new(pb::GetStatusResponse::default()));
        };
        Ok(Response::new(pb::GetStatusResponse {
            found: true,
            cluster_id: view.cluster_id.to_string(),
            status_json: json(&view.status),
            controller_status_json: json(&view.controllers),
        }))
    }
}

/// JSON of the domain types sent back (they serialise infallibly).
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
