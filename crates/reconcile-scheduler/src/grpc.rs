//! `cls.scheduler.v1.ReconcileScheduler`: reactive triggers and operator counters.

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::ResourceKind;
use cls_rpc::convert::{self, FieldViolation};
use cls_rpc::scheduler::reconcile_scheduler_server::ReconcileScheduler;
use cls_rpc::scheduler::{
    ResourceKind as PbKind, StatsRequest, StatsResponse, TriggerRequest, TriggerResponse,
};
use cls_storage::{PgPool, schedule};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct SchedulerService {
    pub(crate) pool: PgPool,
    pub(crate) metrics: Metrics,
    pub(crate) debounce: time::Duration,
    pub(crate) debounce_max_wait: time::Duration,
    pub(crate) overdue_after: time::Duration,
    pub(crate) replica: String,
}

fn violation(field: &str, message: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// Validates a trigger, naming every bad field.
fn parse_trigger(
    request: &TriggerRequest,
) -> Result<(ResourceKind, Uuid, ReconcileReason), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let kind = match PbKind::try_from(request.kind) {
        Ok(PbKind::Cluster) => Some(ResourceKind::Cluster),
        Ok(PbKind::Nodepool) => Some(ResourceKind::NodePool),
        _ => {
            violations.push(violation("kind", "must be CLUSTER or NODEPOOL"));
            None
        }
    };
    let id = Uuid::parse_str(&request.resource_id).ok();
    if id.is_none() {
        violations.push(violation("resource_id", "must be a UUID"));
    }
    let reason = ReconcileReason::parse(&request.reason).filter(|r| r.is_reactive());
    if reason.is_none() {
        violations.push(violation(
            "reason",
            "must be one of cluster_created, spec_change, status_change, manual_trigger",
        ));
    }
    match (kind, id, reason) {
        (Some(kind), Some(id), Some(reason)) => Ok((kind, id, reason)),
        _ => Err(violations),
    }
}

#[tonic::async_trait]
impl ReconcileScheduler for SchedulerService {
    async fn trigger(
        &self,
        request: Request<TriggerRequest>,
    ) -> Result<Response<TriggerResponse>, Status> {
        let request = request.into_inner();
        let count = |result: &str| {
            let reason = ReconcileReason::parse(&request.reason)
                .filter(|r| r.is_reactive())
                .map_or("invalid", ReconcileReason::as_str);
            self.metrics
                .triggers
                .with_label_values(&[reason, result])
                .inc();
        };
        let (kind, id, reason) = parse_trigger(&request).map_err(|violations| {
            count("invalid");
            convert::invalid_argument(&violations)
        })?;
        let stored = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            schedule::trigger(
                &mut conn,
                kind,
                id,
                reason,
                OffsetDateTime::now_utc(),
                self.debounce,
                self.debounce_max_wait,
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        match stored {
            Ok(Some(due_at)) => {
                count("accepted");
                Ok(Response::new(TriggerResponse {
                    due_at: Some(convert::timestamp(due_at)),
                }))
            }
            Ok(None) => {
                count("not_found");
                Err(Status::not_found(format!(
                    "{} {id} has no reconcile schedule (it does not exist or is deleted)",
                    kind.as_str()
                )))
            }
            Err(error) => {
                count("unavailable");
                tracing::warn!(%error, "cannot store a reconcile trigger");
                Err(Status::unavailable("the schedule database is unavailable"))
            }
        }
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let stats = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            schedule::stats(&mut conn, OffsetDateTime::now_utc(), self.overdue_after)
                .await
                .map_err(|e| e.to_string())
        }
        .await
        .map_err(|error| {
            tracing::warn!(%error, "cannot read schedule stats");
            Status::unavailable("the schedule database is unavailable")
        })?;
        let mut emitted_by_reason = std::collections::HashMap::new();
        for reason in ReconcileReason::ALL {
            let total: u64 = ["cluster", "nodepool"]
                .iter()
                .map(|kind| {
                    self.metrics
                        .emitted
                        .with_label_values(&[kind, reason.as_str()])
                        .get()
                })
                .sum();
            emitted_by_reason.insert(reason.as_str().to_owned(), total);
        }
        Ok(Response::new(StatsResponse {
            scheduled: stats.scheduled,
            due_now: stats.due,
            overdue: stats.overdue,
            claimed: self.metrics.claimed.get(),
            oldest_due_seconds: stats.oldest_due_seconds,
            emitted_by_reason,
            replica: self.replica.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_validated_field_by_field() {
        let ok = TriggerRequest {
            kind: PbKind::Nodepool as i32,
            resource_id: Uuid::nil().to_string(),
            reason: "spec_change".into(),
        };
        assert_eq!(
            parse_trigger(&ok).unwrap(),
            (
                ResourceKind::NodePool,
                Uuid::nil(),
                ReconcileReason::SpecChange
            )
        );
        let bad = TriggerRequest {
            kind: 0,
            resource_id: "x".into(),
            // A periodic reason is not a trigger.
            reason: "healthy_reconciliation".into(),
        };
        let fields: Vec<String> = parse_trigger(&bad)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["kind", "resource_id", "reason"]);
    }
}
