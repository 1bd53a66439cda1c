//! Ready-made resources for tests and benchmarks that write to the database directly.

use cls_domain::parse::parse_json;
use cls_domain::resource::{Cluster, SERVER_OWNED_FIELDS};
use cls_domain::validate::{NewCluster, ReleaseDefaults, validate_cluster_create};
use diesel_async::AsyncPgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// A minimal valid cluster named `name` (GCP), validated as the gateway validates a create.
pub fn new_cluster(name: &str) -> NewCluster {
    let body = serde_json::json!({"name": name, "spec": {"infraID": "infra-1",
        "platform": {"type": "gcp", "gcp": {"projectID": "p", "region": "r", "network": "n", "subnet": "s"}}}});
    let request = parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS)
        .unwrap_or_else(|e| panic!("the test cluster body parses: {e:?}"));
    let defaults = ReleaseDefaults {
        version: "4.16.0",
        channel_group: "stable",
    };
    validate_cluster_create(request, defaults)
        .unwrap_or_else(|e| panic!("the test cluster is valid: {e:?}"))
}

/// Stores [`new_cluster`]`(name)` for `owner` as created at `created` (with its schedule row,
/// due then), under a new id.
pub async fn create_cluster(
    conn: &mut AsyncPgConnection,
    owner: &str,
    name: &str,
    created: OffsetDateTime,
) -> Cluster {
    cls_storage::clusters::create(conn, owner, &new_cluster(name), Uuid::now_v7(), created)
        .await
        .unwrap_or_else(|e| panic!("creating test cluster {name}: {e}"))
}
