//! Event envelopes (SPEC §5.1): the thin JSON body, the message attributes controllers filter
//! on (including the CloudEvents Pub/Sub binding), the ordering key and the outbox shard.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::reconcile::ReconcileReason;
use crate::resource::ResourceKind;
use crate::timefmt::rfc3339_nanos;

/// The `source` of every event.
pub const EVENT_SOURCE: &str = "cls-backend";

/// The number of outbox shards. Fixed: rows carry their shard, so changing it needs a
/// migration that recomputes them.
pub const OUTBOX_SHARDS: i16 = 32;

/// The logical topic an event goes to; the publisher maps it to a configured topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    ClusterEvents,
    NodePoolEvents,
}

impl Topic {
    /// The default topic name (and the value stored in the outbox).
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::ClusterEvents => "cluster-events",
            Topic::NodePoolEvents => "nodepool-events",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        [Topic::ClusterEvents, Topic::NodePoolEvents]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    Created,
    Updated,
    Deleted,
}

/// Every event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Lifecycle(ResourceKind, LifecycleAction),
    Reconcile(ResourceKind),
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Lifecycle(ResourceKind::Cluster, LifecycleAction::Created),
        EventType::Lifecycle(ResourceKind::Cluster, LifecycleAction::Updated),
        EventType::Lifecycle(ResourceKind::Cluster, LifecycleAction::Deleted),
        EventType::Reconcile(ResourceKind::Cluster),
        EventType::Lifecycle(ResourceKind::NodePool, LifecycleAction::Created),
        EventType::Lifecycle(ResourceKind::NodePool, LifecycleAction::Updated),
        EventType::Lifecycle(ResourceKind::NodePool, LifecycleAction::Deleted),
        EventType::Reconcile(ResourceKind::NodePool),
    ];

    pub fn as_str(self) -> &'static str {
        use LifecycleAction::*;
        use ResourceKind::*;
        match self {
            EventType::Lifecycle(Cluster, Created) => "cluster.created",
            EventType::Lifecycle(Cluster, Updated) => "cluster.updated",
            EventType::Lifecycle(Cluster, Deleted) => "cluster.deleted",
            EventType::Reconcile(Cluster) => "cluster.reconcile",
            EventType::Lifecycle(NodePool, Created) => "nodepool.created",
            EventType::Lifecycle(NodePool, Updated) => "nodepool.updated",
            EventType::Lifecycle(NodePool, Deleted) => "nodepool.deleted",
            EventType::Reconcile(NodePool) => "nodepool.reconcile",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn kind(self) -> ResourceKind {
        match self {
            EventType::Lifecycle(kind, _) | EventType::Reconcile(kind) => kind,
        }
    }

    pub fn topic(self) -> Topic {
        match self.kind() {
            ResourceKind::Cluster => Topic::ClusterEvents,
            ResourceKind::NodePool => Topic::NodePoolEvents,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resource an event is about. A nodepool always belongs to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceRef {
    Cluster { cluster_id: Uuid },
    NodePool { cluster_id: Uuid, nodepool_id: Uuid },
}

impl ResourceRef {
    pub fn kind(self) -> ResourceKind {
        match self {
            ResourceRef::Cluster { .. } => ResourceKind::Cluster,
            ResourceRef::NodePool { .. } => ResourceKind::NodePool,
        }
    }

    pub fn cluster_id(self) -> Uuid {
        match self {
            ResourceRef::Cluster { cluster_id } | ResourceRef::NodePool { cluster_id, .. } => {
                cluster_id
            }
        }
    }

    pub fn nodepool_id(self) -> Option<Uuid> {
        match self {
            ResourceRef::Cluster { .. } => None,
            ResourceRef::NodePool { nodepool_id, .. } => Some(nodepool_id),
        }
    }

    /// The id of the resource itself.
    pub fn id(self) -> Uuid {
        self.nodepool_id().unwrap_or(self.cluster_id())
    }
}

/// A lifecycle change (`cluster.created`, `nodepool.deleted`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub id: Uuid,
    pub resource: ResourceRef,
    pub action: LifecycleAction,
    pub generation: i64,
    pub timestamp: OffsetDateTime,
    /// W3C `traceparent` of the request that made the change, if traced.
    pub traceparent: Option<String>,
}

/// A reconcile request (`cluster.reconcile`, `nodepool.reconcile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileEvent {
    pub id: Uuid,
    pub resource: ResourceRef,
    pub reason: ReconcileReason,
    pub generation: i64,
    pub timestamp: OffsetDateTime,
    /// Which scheduler replica emitted it.
    pub scheduled_by: String,
    pub last_reconciled_at: Option<OffsetDateTime>,
    pub traceparent: Option<String>,
}

/// A message ready for the outbox and for Pub/Sub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: Uuid,
    pub event_type: EventType,
    pub resource: ResourceRef,
    pub generation: i64,
    pub topic: Topic,
    pub body: serde_json::Value,
    pub attributes: BTreeMap<String, String>,
    /// The Pub/Sub ordering key: the cluster id, so one cluster's events stay in order.
    pub ordering_key: String,
    pub shard: i16,
    pub traceparent: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'static str,
    cluster_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodepool_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    generation: i64,
    timestamp: &'a str,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
}

impl LifecycleEvent {
    pub fn envelope(&self) -> Envelope {
        let event_type = EventType::Lifecycle(self.resource.kind(), self.action);
        build(
            self.id,
            event_type,
            self.resource,
            self.generation,
            self.timestamp,
            None,
            None,
            self.traceparent.as_deref(),
        )
    }
}

impl ReconcileEvent {
    pub fn envelope(&self) -> Envelope {
        let generation_key = match self.resource.kind() {
            ResourceKind::Cluster => "cluster_generation",
            ResourceKind::NodePool => "nodepool_generation",
        };
        let metadata = serde_json::json!({
            "scheduled_by": self.scheduled_by,
            "last_reconciled_at": self.last_reconciled_at.map(rfc3339_nanos),
            generation_key: self.generation,
        });
        build(
            self.id,
            EventType::Reconcile(self.resource.kind()),
            self.resource,
            self.generation,
            self.timestamp,
            Some(self.reason),
            Some(metadata),
            self.traceparent.as_deref(),
        )
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "private constructor shared by both event kinds"
)]
fn build(
    id: Uuid,
    event_type: EventType,
    resource: ResourceRef,
    generation: i64,
    timestamp: OffsetDateTime,
    reason: Option<ReconcileReason>,
    metadata: Option<serde_json::Value>,
    traceparent: Option<&str>,
) -> Envelope {
    let timestamp = rfc3339_nanos(timestamp);
    let cluster_id = resource.cluster_id();
    let body = Body {
        id,
        event_type: event_type.as_str(),
        cluster_id,
        nodepool_id: resource.nodepool_id(),
        reason: reason.map(ReconcileReason::as_str),
        generation,
        timestamp: &timestamp,
        source: EVENT_SOURCE,
        metadata,
    };
    // Serialising a struct of strings, numbers and JSON values cannot fail.
    let body = serde_json::to_value(&body).unwrap_or_default();

    let traceparent = traceparent
        .filter(|t| is_valid_traceparent(t))
        .map(str::to_owned);
    let mut attributes = BTreeMap::new();
    let mut put = |k: &str, v: String| attributes.insert(k.to_owned(), v);
    put("event_type", event_type.as_str().to_owned());
    put("cluster_id", cluster_id.to_string());
    if let Some(nodepool_id) = resource.nodepool_id() {
        put("nodepool_id", nodepool_id.to_string());
    }
    put("generation", generation.to_string());
    put("source", EVENT_SOURCE.to_owned());
    put("timestamp", timestamp.clone());
    if let Some(reason) = reason {
        put("reason", reason.as_str().to_owned());
    }
    put("ce-specversion", "1.0".to_owned());
    put("ce-id", id.to_string());
    put("ce-type", event_type.as_str().to_owned());
    put("ce-source", EVENT_SOURCE.to_owned());
    put("ce-time", timestamp);
    if let Some(traceparent) = &traceparent {
        put("traceparent", traceparent.clone());
    }
    Envelope {
        id,
        event_type,
        resource,
        generation,
        topic: event_type.topic(),
        body,
        attributes,
        ordering_key: cluster_id.to_string(),
        shard: outbox_shard(cluster_id),
        traceparent,
    }
}

/// The outbox shard of a cluster's events: FNV-1a of the id's bytes, modulo [`OUTBOX_SHARDS`].
/// Stable across releases and platforms (unlike `std`'s hasher).
pub fn outbox_shard(cluster_id: Uuid) -> i16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in cluster_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below OUTBOX_SHARDS, so it fits.
    (hash % OUTBOX_SHARDS as u64) as i16
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids not all zero.
pub fn is_valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, len: usize| {
        p.len() == len
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [version, trace, span, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const T: OffsetDateTime = datetime!(2026-11-24 08:15:30.123456789 UTC);
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn ids() -> (Uuid, Uuid, Uuid) {
        (
            Uuid::parse_str("0196a0f0-0000-7000-8000-000000000001").unwrap(),
            Uuid::parse_str("11111111-1111-4111-8111-111111111111").unwrap(),
            Uuid::parse_str("22222222-2222-4222-8222-222222222222").unwrap(),
        )
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cluster_lifecycle_envelopes() {
        let (id, cluster_id, _) = ids();
        for (action, name) in [
            (LifecycleAction::Created, "cluster.created"),
            (LifecycleAction::Updated, "cluster.updated"),
            (LifecycleAction::Deleted, "cluster.deleted"),
        ] {
            let envelope = LifecycleEvent {
                id,
                resource: ResourceRef::Cluster { cluster_id },
                action,
                generation: 3,
                timestamp: T,
                traceparent: None,
            }
            .envelope();
            assert_eq!(envelope.topic, Topic::ClusterEvents);
            assert_eq!(envelope.ordering_key, cluster_id.to_string());
            assert_eq!(
                envelope.body.to_string(),
                format!(
                    r#"{{"cluster_id":"{cluster_id}","generation":3,"id":"{id}","source":"cls-backend","timestamp":"2026-11-24T08:15:30.123456789Z","type":"{name}"}}"#
                )
            );
            assert_eq!(
                envelope.attributes,
                attrs(&[
                    ("event_type", name),
                    ("cluster_id", "11111111-1111-4111-8111-111111111111"),
                    ("generation", "3"),
                    ("source", "cls-backend"),
                    ("timestamp", "2026-11-24T08:15:30.123456789Z"),
                    ("ce-specversion", "1.0"),
                    ("ce-id", "0196a0f0-0000-7000-8000-000000000001"),
                    ("ce-type", name),
                    ("ce-source", "cls-backend"),
                    ("ce-time", "2026-11-24T08:15:30.123456789Z"),
                ])
            );
        }
    }

    #[test]
    fn nodepool_lifecycle_envelope_carries_the_nodepool_and_traceparent() {
        let (id, cluster_id, nodepool_id) = ids();
        let envelope = LifecycleEvent {
            id,
            resource: ResourceRef::NodePool {
                cluster_id,
                nodepool_id,
            },
            action: LifecycleAction::Deleted,
            generation: 1,
            timestamp: T,
            traceparent: Some(TRACEPARENT.to_owned()),
        }
        .envelope();
        assert_eq!(envelope.topic, Topic::NodePoolEvents);
        assert_eq!(
            envelope.ordering_key,
            cluster_id.to_string(),
            "ordered by cluster"
        );
        assert_eq!(
            envelope.body,
            json!({"id": id, "type": "nodepool.deleted", "cluster_id": cluster_id,
                   "nodepool_id": nodepool_id, "generation": 1,
                   "timestamp": "2026-11-24T08:15:30.123456789Z", "source": "cls-backend"})
        );
        assert_eq!(envelope.attributes["nodepool_id"], nodepool_id.to_string());
        assert_eq!(envelope.attributes["traceparent"], TRACEPARENT);
        assert_eq!(envelope.attributes["ce-type"], "nodepool.deleted");
        assert_eq!(envelope.attributes.len(), 12);
        assert_eq!(envelope.shard, outbox_shard(cluster_id));
    }

    #[test]
    fn reconcile_envelopes() {
        let (id, cluster_id, nodepool_id) = ids();
        let cluster = ReconcileEvent {
            id,
            resource: ResourceRef::Cluster { cluster_id },
            reason: ReconcileReason::GenerationMismatch,
            generation: 4,
            timestamp: T,
            scheduled_by: "reconcile-scheduler-0".into(),
            last_reconciled_at: Some(datetime!(2026-11-24 08:15:00 UTC)),
            traceparent: None,
        }
        .envelope();
        assert_eq!(
            cluster.body,
            json!({"id": id, "type": "cluster.reconcile", "cluster_id": cluster_id,
                   "reason": "generation_mismatch", "generation": 4,
                   "timestamp": "2026-11-24T08:15:30.123456789Z", "source": "cls-backend",
                   "metadata": {"scheduled_by": "reconcile-scheduler-0",
                                "last_reconciled_at": "2026-11-24T08:15:00.000000000Z",
                                "cluster_generation": 4}})
        );
        assert_eq!(cluster.attributes["reason"], "generation_mismatch");
        assert_eq!(cluster.attributes["event_type"], "cluster.reconcile");
        assert_eq!(cluster.attributes.len(), 11);

        let nodepool = ReconcileEvent {
            id,
            resource: ResourceRef::NodePool {
                cluster_id,
                nodepool_id,
            },
            reason: ReconcileReason::NeverReconciled,
            generation: 1,
            timestamp: T,
            scheduled_by: "s".into(),
            last_reconciled_at: None,
            traceparent: Some("not-a-traceparent".into()),
        }
        .envelope();
        assert_eq!(nodepool.topic, Topic::NodePoolEvents);
        assert_eq!(
            nodepool.body["metadata"],
            json!({"scheduled_by": "s", "last_reconciled_at": null, "nodepool_generation": 1})
        );
        assert_eq!(nodepool.body["nodepool_id"], json!(nodepool_id));
        assert!(
            !nodepool.attributes.contains_key("traceparent"),
            "invalid traceparent dropped"
        );
        assert_eq!(nodepool.traceparent, None);
    }

    #[test]
    fn event_types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert!(t.as_str().starts_with(t.kind().as_str()));
            assert_eq!(Topic::parse(t.topic().as_str()), Some(t.topic()));
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let (_, cluster_id, _) = ids();
        assert_eq!(outbox_shard(cluster_id), outbox_shard(cluster_id));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u128 {
            let shard = outbox_shard(Uuid::from_u128(i * 0x9e37_79b9_7f4a_7c15));
            assert!((0..OUTBOX_SHARDS).contains(&shard));
            seen.insert(shard);
        }
        assert_eq!(seen.len(), OUTBOX_SHARDS as usize);
    }

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(TRACEPARENT));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
    }
}
