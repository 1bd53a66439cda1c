//! Conversions between protobuf messages and `cls-domain` types. Decoding validates: every
//! problem is reported with the path of the field, so callers get one clear
//! `INVALID_ARGUMENT`.

use cls_domain::event::{ReconcileEvent, ResourceRef, is_valid_traceparent};
use cls_domain::reconcile::ReconcileReason;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::publisher as pb;

/// The most events one `Publish` call may carry.
pub const MAX_PUBLISH_BATCH: usize = 1000;

pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        // Always within 0..1e9.
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A field that failed validation: `events[2].cluster_id: is not a UUID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The whole list of violations as one `INVALID_ARGUMENT` status.
pub fn invalid_argument(violations: &[FieldViolation]) -> tonic::Status {
    let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
    tonic::Status::invalid_argument(text.join("; "))
}

impl From<&ReconcileEvent> for pb::ReconcileEvent {
    fn from(e: &ReconcileEvent) -> pb::ReconcileEvent {
        let kind = match e.resource {
            ResourceRef::Cluster { .. } => pb::ResourceKind::Cluster,
            ResourceRef::NodePool { .. } => pb::ResourceKind::Nodepool,
        };
        pb::ReconcileEvent {
            id: e.id.to_string(),
            kind: kind.into(),
            cluster_id: e.resource.cluster_id().to_string(),
            nodepool_id: e
                .resource
                .nodepool_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            reason: e.reason.as_str().to_owned(),
            generation: e.generation,
            timestamp: Some(timestamp(e.timestamp)),
            scheduled_by: e.scheduled_by.clone(),
            last_reconciled_at: e.last_reconciled_at.map(timestamp),
            traceparent: e.traceparent.clone().unwrap_or_default(),
        }
    }
}

/// Decodes and validates a `Publish` request; `now` stands in for absent timestamps.
pub fn reconcile_events(
    request: &pb::PublishRequest,
    now: OffsetDateTime,
) -> Result<Vec<ReconcileEvent>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if request.events.is_empty() {
        violations.push(violation("events", "must not be empty"));
    }
    if request.events.len() > MAX_PUBLISH_BATCH {
        violations.push(violation(
            "events",
            format!("at most {MAX_PUBLISH_BATCH} events per call"),
        ));
    }
    let mut events = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.iter().enumerate() {
        let mut problems = Vec::new();
        let mut report = |field: &str, message: &str| {
            problems.push(violation(format!("events[{i}].{field}"), message));
        };
        let id = uuid_field(&event.id, "id", &mut report);
        let cluster_id = uuid_field(&event.cluster_id, "cluster_id", &mut report);
        let resource = match (pb::ResourceKind::try_from(event.kind), cluster_id) {
            (Ok(pb::ResourceKind::Cluster), Some(cluster_id)) => {
                if !event.nodepool_id.is_empty() {
                    report("nodepool_id", "must be empty for a cluster event");
                }
                Some(ResourceRef::Cluster { cluster_id })
            }
            (Ok(pb::ResourceKind::Nodepool), cluster_id) => {
                let nodepool_id = uuid_field(&event.nodepool_id, "nodepool_id", &mut report);
                cluster_id
                    .zip(nodepool_id)
                    .map(|(cluster_id, nodepool_id)| ResourceRef::NodePool {
                        cluster_id,
                        nodepool_id,
                    })
            }
            (Ok(pb::ResourceKind::Cluster), None) => None,
            (Ok(pb::ResourceKind::Unspecified) | Err(_), _) => {
                report(
                    "kind",
                    "must be RESOURCE_KIND_CLUSTER or RESOURCE_KIND_NODEPOOL",
                );
                None
            }
        };
        let reason = ReconcileReason::parse(&event.reason);
        if reason.is_none() {
            report(
                "reason",
                "is not a reconcile reason (never_reconciled, generation_mismatch, …)",
            );
        }
        if event.generation < 1 {
            report("generation", "must be at least 1");
        }
        if event.scheduled_by.trim().is_empty() {
            report("scheduled_by", "must name the emitting replica");
        }
        let timestamp = match &event.timestamp {
            None => Some(now),
            Some(t) => from_timestamp(t).or_else(|| {
                report("timestamp", "is out of range");
                None
            }),
        };
        let last_reconciled_at = match &event.last_reconciled_at {
            None => Some(None),
            Some(t) => match from_timestamp(t) {
                Some(t) => Some(Some(t)),
                None => {
                    report("last_reconciled_at", "is out of range");
                    None
                }
            },
        };
        let traceparent = (!event.traceparent.is_empty()).then(|| event.traceparent.clone());
        if traceparent
            .as_deref()
            .is_some_and(|t| !is_valid_traceparent(t))
        {
            report("traceparent", "is not a W3C traceparent");
        }
        if !problems.is_empty() {
            violations.append(&mut problems);
            continue;
        }
        if let (Some(id), Some(resource), Some(reason), Some(timestamp), Some(last)) =
            (id, resource, reason, timestamp, last_reconciled_at)
        {
            events.push(ReconcileEvent {
                id,
                resource,
                reason,
                generation: event.generation,
                timestamp,
                scheduled_by: event.scheduled_by.clone(),
                last_reconciled_at: last,
                traceparent,
            });
        }
    }
    if violations.is_empty() {
        Ok(events)
    } else {
        Err(violations)
    }
}

fn violation(field: impl Into<String>, message: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        message: message.into(),
    }
}

fn uuid_field(value: &str, field: &str, report: &mut impl FnMut(&str, &str)) -> Option<Uuid> {
    match Uuid::parse_str(value) {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            report(field, "must be a UUID");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ReconcileEvent {
        ReconcileEvent {
            id: Uuid::new_v4(),
            resource: ResourceRef::NodePool {
                cluster_id: Uuid::new_v4(),
                nodepool_id: Uuid::new_v4(),
            },
            reason: ReconcileReason::SpecChange,
            generation: 3,
            timestamp: OffsetDateTime::from_unix_timestamp_nanos(1_790_000_000_123_456_789)
                .unwrap(),
            scheduled_by: "scheduler-0".into(),
            last_reconciled_at: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    #[test]
    fn events_round_trip() {
        let original = event();
        let request = pb::PublishRequest {
            events: vec![(&original).into()],
        };
        let decoded = reconcile_events(&request, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(decoded, vec![original]);
    }

    #[test]
    fn every_violation_names_its_field() {
        let mut bad: pb::ReconcileEvent = (&event()).into();
        bad.cluster_id = "nope".into();
        bad.reason = "because".into();
        bad.generation = 0;
        bad.traceparent = "00-xyz".into();
        let ok: pb::ReconcileEvent = (&event()).into();
        let request = pb::PublishRequest {
            events: vec![ok, bad],
        };
        let violations = reconcile_events(&request, OffsetDateTime::UNIX_EPOCH).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "events[1].cluster_id",
                "events[1].reason",
                "events[1].generation",
                "events[1].traceparent"
            ]
        );
        let status = invalid_argument(&violations);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("events[1].generation: must be at least 1")
        );
        assert_eq!(
            reconcile_events(&pb::PublishRequest::default(), OffsetDateTime::UNIX_EPOCH)
                .unwrap_err()[0]
                .field,
            "events"
        );
    }
}
