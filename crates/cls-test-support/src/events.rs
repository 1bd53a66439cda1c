//! Ready-made events for outbox and publisher tests.

use cls_domain::event::{Envelope, LifecycleAction, LifecycleEvent, ResourceRef};
use time::OffsetDateTime;
use uuid::Uuid;

/// A `cluster.updated` event for `cluster_id` at `generation`, with a fresh time-ordered id.
pub fn cluster_updated(cluster_id: Uuid, generation: i64) -> Envelope {
    LifecycleEvent {
        id: Uuid::now_v7(),
        resource: ResourceRef::Cluster { cluster_id },
        action: LifecycleAction::Updated,
        generation,
        timestamp: OffsetDateTime::now_utc(),
        traceparent: None,
    }
    .envelope()
}
