//! Repository functions against a real Postgres database (one database per test).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use std::collections::BTreeSet;

use cls_domain::event::{LifecycleAction, LifecycleEvent, ResourceRef};
use cls_domain::identity::Caller;
use cls_domain::parse::parse_json;
use cls_domain::resource::{Cluster, NodePool, SERVER_OWNED_FIELDS};
use cls_domain::status::Phase;
use cls_domain::validate::{
    ClusterIdentity, ClusterUpdate, NewCluster, NewNodePool, NodePoolIdentity, NodePoolUpdate,
    ReleaseDefaults, validate_cluster_create, validate_cluster_update, validate_nodepool_create,
    validate_nodepool_update,
};
use cls_storage::{
    AsyncPgConnection, ListQuery, Page, StorageError, StoredCluster, StoredNodePool, clusters,
    nodepools, outbox,
};
use cls_test_support::TestDb;
use diesel_async::AsyncConnection;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

const DEFAULTS: ReleaseDefaults<'static> = ReleaseDefaults {
    version: "4.16.0",
    channel_group: "stable",
};

/// [`clusters::get`], decoded.
async fn read_cluster(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<Cluster>, StorageError> {
    clusters::get(conn, caller, id)
        .await?
        .map(StoredCluster::into_domain)
        .transpose()
}

/// [`nodepools::get`], decoded.
async fn read_nodepool(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<NodePool>, StorageError> {
    nodepools::get(conn, caller, id)
        .await?
        .map(StoredNodePool::into_domain)
        .transpose()
}

/// [`clusters::list`], decoded.
async fn list_clusters(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    query: &ListQuery,
) -> Result<Page<Cluster>, StorageError> {
    decoded(
        clusters::list(conn, caller, query).await?,
        StoredCluster::into_domain,
    )
}

/// [`nodepools::list`], decoded.
async fn list_nodepools(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    cluster_id: Option<Uuid>,
    query: &ListQuery,
) -> Result<Page<NodePool>, StorageError> {
    decoded(
        nodepools::list(conn, caller, cluster_id, query).await?,
        StoredNodePool::into_domain,
    )
}

/// `page` with every item decoded by `into_domain`.
fn decoded<S, T>(
    page: Page<S>,
    into_domain: impl Fn(S) -> Result<T, StorageError>,
) -> Result<Page<T>, StorageError> {
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(into_domain)
            .collect::<Result<_, _>>()?,
        total: page.total,
    })
}

fn alice() -> Caller {
    Caller::User("alice@example.com".into())
}
fn bob() -> Caller {
    Caller::User("bob@example.com".into())
}
fn controller() -> Caller {
    Caller::Controller("controller@system.local".into())
}

/// The body a real CLI sends: every field, optional ones null.
fn cli_cluster_body(name: &str) -> Value {
    json!({
        "name": name,
        "description": "created by the CLI",
        "target_project_id": "proj-123",
        "labels": {"team": "infra", "env": "dev"},
        "spec": {
            "infraID": "infra-1",
            "issuerURL": "https://issuer.example.com",
            "serviceAccountSigningKey": "LS0tLS1CRUdJTg==",
            "platform": {"type": "GCP", "gcp": {
                "projectID": "proj-123", "region": "us-central1", "network": "net",
                "subnet": "sub", "endpointAccess": null,
                "workloadIdentity": {"projectNumber": "123456", "poolID": "pool",
                    "providerID": "prov", "serviceAccountsRef": {
                        "nodePoolEmail": "np@x.iam", "controlPlaneEmail": "cp@x.iam",
                        "cloudControllerEmail": "cc@x.iam", "storageEmail": null,
                        "imageRegistryEmail": "ir@x.iam", "networkEmail": null}}}},
            "release": {"image": null, "version": null, "channelGroup": "fast"},
            "networking": {"clusterNetwork": [{"cidr": "10.128.0.0/14", "hostPrefix": 23}],
                "serviceNetwork": ["172.30.0.0/16"], "podCIDR": null, "serviceCIDR": "172.30.0.0/16"},
            "dns": {"baseDomain": "example.com", "publicZone": null, "privateZone": "priv"}
        }
    })
}

fn new_cluster(name: &str) -> NewCluster {
    let req = parse_json(
        cli_cluster_body(name).to_string().as_bytes(),
        &SERVER_OWNED_FIELDS,
    )
    .unwrap();
    validate_cluster_create(req, DEFAULTS).unwrap()
}

fn new_nodepool(name: &str, replicas: i64) -> NewNodePool {
    let body = json!({"name": name, "labels": {"pool": "a"}, "spec": {
        "replicas": replicas,
        "management": {"autoRepair": true, "upgradeType": "Replace",
            "replace": {"strategy": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}}},
        "platform": {"type": "gcp", "gcp": {"instanceType": "n2-standard-4",
            "rootVolume": {"size": 128, "type": "pd-ssd"}, "subnet": null,
            "labels": {"k": "v"}, "taints": [{"key": "dedicated", "value": null, "effect": "NoSchedule"}]}},
        "nodeDrainTimeout": "10m"}});
    let req = parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
    validate_nodepool_create(req, Some("4.16.0")).unwrap()
}

fn cluster_update(cluster: &Cluster, spec_patch: impl FnOnce(&mut Value)) -> ClusterUpdate {
    let mut spec = serde_json::to_value(&cluster.spec).unwrap();
    spec_patch(&mut spec);
    let body = json!({"spec": spec});
    let req = parse_json(body.to_string().as_bytes(), &[]).unwrap();
    let stored = ClusterIdentity {
        name: &cluster.name,
        target_project_id: cluster.target_project_id.as_deref(),
    };
    validate_cluster_update(req, stored, DEFAULTS).unwrap()
}

fn nodepool_update(nodepool: &NodePool, replicas: i64) -> NodePoolUpdate {
    let mut spec = serde_json::to_value(&nodepool.spec).unwrap();
    spec["replicas"] = json!(replicas);
    let req = parse_json(json!({"spec": spec}).to_string().as_bytes(), &[]).unwrap();
    let cluster_id = nodepool.cluster_id.to_string();
    let stored = NodePoolIdentity {
        name: &nodepool.name,
        cluster_id: &cluster_id,
    };
    validate_nodepool_update(req, stored, Some("4.16.0")).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn create_cluster(conn: &mut AsyncPgConnection, owner: &Caller, name: &str) -> Cluster {
    clusters::create(
        conn,
        owner.email(),
        &new_cluster(name),
        Uuid::now_v7(),
        now(),
    )
    .await
    .unwrap()
}

/// The `total` of `caller`'s cluster list for `query`.
async fn cluster_total(conn: &mut AsyncPgConnection, caller: &Caller, query: &ListQuery) -> i64 {
    list_clusters(conn, caller, query).await.unwrap().total
}

async fn create_nodepool(
    conn: &mut AsyncPgConnection,
    owner: &Caller,
    cluster: &Cluster,
    name: &str,
) -> NodePool {
    let locked = clusters::lock_live(conn, owner, cluster.id).await.unwrap();
    nodepools::create(
        conn,
        &locked,
        owner.email(),
        &new_nodepool(name, 3),
        Uuid::now_v7(),
        now(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_round_trips_every_field() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let new = new_cluster("c1");
    let id = Uuid::now_v7();
    let created = clusters::create(&mut conn, "alice@example.com", &new, id, now())
        .await
        .unwrap();

    assert_eq!(created.id, id);
    assert_eq!(created.name, "c1");
    assert_eq!(created.description.as_deref(), Some("created by the CLI"));
    assert_eq!(created.target_project_id.as_deref(), Some("proj-123"));
    assert_eq!(created.labels, new.labels);
    assert_eq!(created.created_by, "alice@example.com");
    assert_eq!(
        (created.generation, created.resource_version.as_str()),
        (1, "1")
    );
    assert_eq!(created.spec, new.spec);
    assert_eq!(created.status.phase, Phase::Pending);
    assert_eq!(created.status.reason, "NoControllers");
    assert_eq!(created.status.observed_generation, 1);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.deleted_at, None);

    let read = read_cluster(&mut conn, &alice(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, created, "what was stored is what is read back");
    // The spec keeps the CLI's fields, with defaults applied and nulls dropped.
    let spec = serde_json::to_value(&read.spec).unwrap();
    assert_eq!(
        spec["release"],
        json!({"version": "4.16.0", "channelGroup": "fast"})
    );
    assert_eq!(spec["platform"]["type"], json!("gcp"));
    assert_eq!(
        spec["platform"]["gcp"]["workloadIdentity"]["serviceAccountsRef"]["imageRegistryEmail"],
        json!("ir@x.iam")
    );
    assert!(spec["platform"]["gcp"].get("endpointAccess").is_none());
    assert_eq!(
        spec["networking"]["clusterNetwork"],
        json!([{"cidr": "10.128.0.0/14", "hostPrefix": 23}])
    );
}

/// `value` as the API writes it: serialized to JSON text, read back as a tree.
fn as_written(value: &impl serde::Serialize) -> Value {
    serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap()
}

/// Responses write what `get` and `list` read without decoding it ([`StoredCluster`]): its
/// JSON must be the domain type's, with every optional field and with none, live or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_resources_are_written_as_their_domain_types_are() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let full = create_cluster(&mut conn, &alice(), "full").await;
    let bare = parse_json(
        br#"{"name": "bare", "spec": {"infraID": "i", "platform": {"type": "gcp"}}}"#,
        &SERVER_OWNED_FIELDS,
    )
    .unwrap();
    let bare = validate_cluster_create(bare, DEFAULTS).unwrap();
    assert_eq!(
        (bare.description.as_ref(), bare.target_project_id.as_ref()),
        (None, None)
    );
    let bare = clusters::create(&mut conn, "alice@example.com", &bare, Uuid::now_v7(), now())
        .await
        .unwrap();
    let pool = create_nodepool(&mut conn, &alice(), &full, "np").await;
    clusters::mark_deleted(&mut conn, bare.id, now())
        .await
        .unwrap();

    for id in [full.id, bare.id] {
        let stored = clusters::get(&mut conn, &controller(), id)
            .await
            .unwrap()
            .unwrap();
        let written = as_written(&stored);
        let domain = stored.into_domain().unwrap();
        assert_eq!(written, as_written(&domain), "cluster {}", domain.name);
    }
    let bare = read_cluster(&mut conn, &controller(), bare.id)
        .await
        .unwrap()
        .unwrap();
    assert!(bare.deleted_at.is_some() && bare.description.is_none());
    let stored = nodepools::get(&mut conn, &alice(), pool.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(as_written(&stored), as_written(&pool));

    let query = ListQuery {
        include_deleted: true,
        ..ListQuery::default()
    };
    let page = clusters::list(&mut conn, &controller(), &query)
        .await
        .unwrap();
    let written: Vec<Value> = page.items.iter().map(as_written).collect();
    let domain: Vec<Value> = page
        .items
        .into_iter()
        .map(|c| as_written(&c.into_domain().unwrap()))
        .collect();
    assert_eq!((written.len(), written), (2, domain));
    let page = nodepools::list(&mut conn, &alice(), Some(full.id), &query)
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(as_written).collect::<Vec<_>>(),
        vec![as_written(&pool)]
    );
}

/// Rows are decoded straight from `jsonb` text into domain types (`into_domain`, as every
/// change and the aggregator read them): a stored document that does not fit its type is
/// reported as corrupt, naming the column, never half-read. (`GET` and lists write documents
/// as stored; their shape is kept by the writers, see `docs/architecture.md`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_json_does_not_fit_its_type_is_reported_corrupt() {
    use diesel_async::RunQueryDsl as _;
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    for (column, document, what) in [
        ("status", r#"{"phase": 42}"#, "cluster status"),
        ("labels", r#"["not", "a", "map"]"#, "cluster labels"),
    ] {
        let fresh = create_cluster(&mut conn, &alice(), &format!("c-{column}")).await;
        diesel::sql_query(format!(
            "UPDATE clusters SET {column} = '{document}'::jsonb WHERE id = $1"
        ))
        .bind::<diesel::sql_types::Uuid, _>(fresh.id)
        .execute(&mut conn)
        .await
        .unwrap();
        match read_cluster(&mut conn, &alice(), fresh.id).await {
            Err(StorageError::Corrupt { what: got, .. }) => assert_eq!(got, what),
            other => panic!("{column}: expected Corrupt, got {other:?}"),
        }
    }
    // Other rows still read.
    assert_eq!(
        read_cluster(&mut conn, &alice(), cluster.id).await.unwrap(),
        Some(cluster)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodepool_round_trips_every_field() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    let new = new_nodepool("np1", 3);
    let id = Uuid::now_v7();
    let created = conn
        .transaction::<_, StorageError, _>(async |conn| {
            let locked = clusters::lock_live(conn, &alice(), cluster.id).await?;
            nodepools::create(conn, &locked, "alice@example.com", &new, id, now()).await
        })
        .await
        .unwrap();
    assert_eq!(
        (created.id, created.cluster_id, created.name.as_str()),
        (id, cluster.id, "np1")
    );
    assert_eq!(created.labels, new.labels);
    assert_eq!(created.spec, new.spec);
    assert_eq!(
        created.spec.release.as_ref().unwrap().version.as_deref(),
        Some("4.16.0")
    );
    assert_eq!(
        (created.generation, created.resource_version.as_str()),
        (1, "1")
    );
    assert_eq!(created.status.phase, Phase::Pending);
    let read = read_nodepool(&mut conn, &alice(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, created);
    let spec = serde_json::to_value(&read.spec).unwrap();
    assert_eq!(
        spec["management"]["replace"]["rollingUpdate"],
        json!({"maxUnavailable": 1, "maxSurge": "25%"})
    );
    assert_eq!(
        spec["platform"]["gcp"]["taints"],
        json!([{"key": "dedicated", "effect": "NoSchedule"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_never_see_each_others_resources_and_controllers_see_all() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let a = create_cluster(&mut conn, &alice(), "shared-name").await;
    let b = create_cluster(&mut conn, &bob(), "shared-name").await;
    let a_np = create_nodepool(&mut conn, &alice(), &a, "np").await;
    let b_np = create_nodepool(&mut conn, &bob(), &b, "np").await;

    // get
    assert!(
        read_cluster(&mut conn, &bob(), a.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        read_nodepool(&mut conn, &bob(), a_np.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        read_cluster(&mut conn, &controller(), a.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert_eq!(
        read_nodepool(&mut conn, &controller(), b_np.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        b_np.id
    );

    // list and totals
    let q = ListQuery::default();
    let bobs = list_clusters(&mut conn, &bob(), &q).await.unwrap();
    assert_eq!(
        (
            bobs.total,
            bobs.items.iter().map(|c| c.id).collect::<Vec<_>>()
        ),
        (1, vec![b.id])
    );
    let bobs = list_nodepools(&mut conn, &bob(), None, &q).await.unwrap();
    assert_eq!(
        (
            bobs.total,
            bobs.items.iter().map(|n| n.id).collect::<Vec<_>>()
        ),
        (1, vec![b_np.id])
    );
    let in_alices = list_nodepools(&mut conn, &bob(), Some(a.id), &q)
        .await
        .unwrap();
    assert_eq!((in_alices.total, in_alices.items.len()), (0, 0));
    assert_eq!(
        list_clusters(&mut conn, &controller(), &q)
            .await
            .unwrap()
            .total,
        2
    );
    assert_eq!(
        list_nodepools(&mut conn, &controller(), None, &q)
            .await
            .unwrap()
            .total,
        2
    );

    // lock, update and delete paths: not found, and nothing changed
    assert!(matches!(
        clusters::lock_live(&mut conn, &bob(), a.id).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        nodepools::lock_live(&mut conn, &bob(), a_np.id).await,
        Err(StorageError::NotFound)
    ));
    let change = cluster_update(&a, |s| s["infraID"] = json!("changed"));
    assert!(matches!(
        clusters::update(&mut conn, &bob(), a.id, &change, None, now()).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        nodepools::update(
            &mut conn,
            &bob(),
            a_np.id,
            &nodepool_update(&a_np, 9),
            None,
            now()
        )
        .await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        read_cluster(&mut conn, &alice(), a.id)
            .await
            .unwrap()
            .unwrap(),
        a
    );
    assert_eq!(
        read_nodepool(&mut conn, &alice(), a_np.id)
            .await
            .unwrap()
            .unwrap(),
        a_np
    );

    // A controller may update anyone's resources.
    let updated = clusters::update(&mut conn, &controller(), a.id, &change, None, now())
        .await
        .unwrap();
    assert_eq!(updated.resource.generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_created_with_its_schedule_and_event_or_not_at_all() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let id = Uuid::now_v7();
    let event = created_event(id);
    let (created, written) = clusters::create_announced(
        &mut conn,
        "alice@example.com",
        &new_cluster("c1"),
        id,
        now(),
        std::slice::from_ref(&event),
    )
    .await
    .unwrap();
    assert_eq!(written.shards().collect::<Vec<_>>(), [event.shard]);
    assert_eq!(created.id, id);
    assert_eq!(created.generation, 1);
    assert_eq!(
        read_cluster(&mut conn, &alice(), id).await.unwrap(),
        Some(created.clone())
    );
    // Its event is pending and its first reconcile due at once.
    assert_pending_and_due(&mut conn, 1, 1).await;
    let rows = outbox::pending(&mut conn, 10).await.unwrap();
    assert_eq!(
        (
            rows[0].id,
            rows[0].cluster_id,
            rows[0].shard,
            rows[0].traceparent.as_deref()
        ),
        (event.id, id, event.shard, event.traceparent.as_deref())
    );
    assert_eq!(rows[0].body, event.body);

    // A name conflict stores nothing: no cluster, no schedule row, no event.
    let other = Uuid::now_v7();
    let err = clusters::create_announced(
        &mut conn,
        "alice@example.com",
        &new_cluster("c1"),
        other,
        now(),
        &[created_event(other)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::NameExists { .. }), "{err:?}");
    assert_eq!(
        read_cluster(&mut conn, &controller(), other).await.unwrap(),
        None
    );
    assert_pending_and_due(&mut conn, 1, 1).await;
}

// A create writes its one event with a single-row insert and any other number through
// arrays (`outbox::WithEvents`); both forms store every field of every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stores_each_of_its_events_whatever_their_number() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    for (name, count) in [("none", 0), ("one", 1), ("two", 2), ("three", 3)] {
        let id = Uuid::now_v7();
        let mut events: Vec<_> = (0..count).map(|_| created_event(id)).collect();
        // One without a trace, after the first: nulls in both forms.
        if let Some(second) = events.get_mut(1) {
            second.traceparent = None;
        }
        let (_, written) = clusters::create_announced(
            &mut conn,
            "alice@example.com",
            &new_cluster(name),
            id,
            now(),
            &events,
        )
        .await
        .unwrap();
        let mut shards: Vec<i16> = events.iter().map(|e| e.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        assert_eq!(written.shards().collect::<Vec<_>>(), shards, "{name}");
        let stored: Vec<_> = outbox::pending(&mut conn, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|row| row.cluster_id == id)
            .map(|row| {
                (
                    row.id,
                    row.shard,
                    row.ordering_key,
                    row.topic,
                    row.event_type,
                    row.body,
                    row.attributes,
                    row.traceparent,
                )
            })
            .collect();
        let expected: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.id,
                    e.shard,
                    e.ordering_key.clone(),
                    e.topic.as_str().to_owned(),
                    e.event_type.as_str().to_owned(),
                    e.body.clone(),
                    serde_json::to_value(&e.attributes).unwrap(),
                    e.traceparent.clone(),
                )
            })
            .collect();
        assert_eq!(stored, expected, "{name}");
    }
}

/// How many events are pending in the outbox and how many resources are due to reconcile.
async fn assert_pending_and_due(conn: &mut AsyncPgConnection, events: usize, due: i64) {
    assert_eq!(outbox::pending(conn, 10).await.unwrap().len(), events);
    let stats = cls_storage::schedule::stats(conn, now(), time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(stats.due, due, "{stats:?}");
}

fn nodepool_created_event(cluster_id: Uuid, nodepool_id: Uuid) -> cls_domain::event::Envelope {
    LifecycleEvent {
        id: Uuid::now_v7(),
        resource: ResourceRef::NodePool {
            cluster_id,
            nodepool_id,
        },
        action: LifecycleAction::Created,
        generation: 1,
        timestamp: now(),
        traceparent: None,
    }
    .envelope()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodepool_is_created_with_its_schedule_and_event_after_the_clusters_earlier_events() {
    use diesel_async::{AnsiTransactionManager, TransactionManager as _};
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    let first = created_event(cluster.id);
    let _ = outbox::insert(&mut conn, std::slice::from_ref(&first))
        .await
        .unwrap();

    // Another change to the cluster is in flight with its event written, not yet committed.
    let mut other = db.conn().await;
    AnsiTransactionManager::begin_transaction(&mut other)
        .await
        .unwrap();
    let concurrent = created_event(cluster.id);
    let _ = outbox::insert(&mut other, std::slice::from_ref(&concurrent))
        .await
        .unwrap();

    let id = Uuid::now_v7();
    let event = nodepool_created_event(cluster.id, id);
    let creating = {
        let (url, cluster, event) = (db.url().to_owned(), cluster.clone(), event.clone());
        tokio::spawn(async move {
            let mut conn = cls_storage::connect(&url).await.unwrap();
            conn.transaction::<_, StorageError, _>(async |conn| {
                let locked = clusters::lock_live(conn, &alice(), cluster.id).await?;
                nodepools::create_announced(
                    conn,
                    &locked,
                    "alice@example.com",
                    &new_nodepool("np", 3),
                    id,
                    now(),
                    std::slice::from_ref(&event),
                )
                .await
            })
            .await
        })
    };
    // The creation waits for the cluster's outbox lock, so its event cannot take a `seq`
    // before the event that commits first.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!creating.is_finished(), "waits for the change in flight");
    AnsiTransactionManager::commit_transaction(&mut other)
        .await
        .unwrap();
    let (nodepool, written) = creating.await.unwrap().unwrap();
    assert_eq!(written.shards().collect::<Vec<_>>(), [event.shard]);
    assert_eq!(
        (nodepool.id, nodepool.cluster_id, nodepool.generation),
        (id, cluster.id, 1)
    );
    assert_eq!(
        read_nodepool(&mut conn, &alice(), id).await.unwrap(),
        Some(nodepool)
    );
    let order: Vec<Uuid> = outbox::pending(&mut conn, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        order,
        vec![first.id, concurrent.id, event.id],
        "seq order is commit order"
    );
    // The cluster's and the nodepool's first reconciles are due.
    assert_pending_and_due(&mut conn, 3, 2).await;

    // A name conflict stores nothing: no nodepool, no schedule row, no event.
    let locked = clusters::lock_live(&mut conn, &alice(), cluster.id)
        .await
        .unwrap();
    let other_id = Uuid::now_v7();
    let err = nodepools::create_announced(
        &mut conn,
        &locked,
        "alice@example.com",
        &new_nodepool("np", 3),
        other_id,
        now(),
        &[nodepool_created_event(cluster.id, other_id)],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NameExists {
                kind: "nodepool",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        read_nodepool(&mut conn, &controller(), other_id)
            .await
            .unwrap(),
        None
    );
    assert_pending_and_due(&mut conn, 3, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_among_live_resources_and_reusable_after_delete() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let first = create_cluster(&mut conn, &alice(), "c1").await;
    let err = clusters::create(
        &mut conn,
        "alice@example.com",
        &new_cluster("c1"),
        Uuid::now_v7(),
        now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StorageError::NameExists { kind: "cluster", ref name } if name == "c1"),
        "{err:?}"
    );
    create_nodepool(&mut conn, &alice(), &first, "np").await;
    let locked = clusters::lock_live(&mut conn, &alice(), first.id)
        .await
        .unwrap();
    let err = nodepools::create(
        &mut conn,
        &locked,
        "alice@example.com",
        &new_nodepool("np", 1),
        Uuid::now_v7(),
        now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NameExists {
                kind: "nodepool",
                ..
            }
        ),
        "{err:?}"
    );

    clusters::mark_deleted(&mut conn, first.id, now())
        .await
        .unwrap();
    let second = create_cluster(&mut conn, &alice(), "c1").await;
    assert_ne!(second.id, first.id);
    // The deleted one is still there for controllers.
    let deleted = read_cluster(&mut conn, &controller(), first.id)
        .await
        .unwrap()
        .unwrap();
    assert!(deleted.deleted_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cluster_cascades_to_its_live_nodepools() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    let other = create_cluster(&mut conn, &alice(), "c2").await;
    let np1 = create_nodepool(&mut conn, &alice(), &cluster, "np1").await;
    let np2 = create_nodepool(&mut conn, &alice(), &cluster, "np2").await;
    let gone_before = create_nodepool(&mut conn, &alice(), &cluster, "np3").await;
    let untouched = create_nodepool(&mut conn, &alice(), &other, "np1").await;
    let earlier = nodepools::mark_deleted(&mut conn, gone_before.id, now())
        .await
        .unwrap();

    let deleted = clusters::mark_deleted(&mut conn, cluster.id, now())
        .await
        .unwrap();
    assert_eq!(deleted.cluster.id, cluster.id);
    assert_eq!(deleted.cluster.resource_version, "2");
    let at = deleted.cluster.deleted_at.unwrap();
    assert_eq!(
        deleted
            .nodepools
            .iter()
            .map(|n| (n.id, n.deleted_at))
            .collect::<Vec<_>>(),
        vec![(np1.id, Some(at)), (np2.id, Some(at))],
        "only the live nodepools, all with the cluster's deletion time"
    );

    // Users see none of them; controllers still can, by id and with include_deleted.
    assert!(
        read_cluster(&mut conn, &alice(), cluster.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        read_nodepool(&mut conn, &alice(), np1.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        list_nodepools(&mut conn, &alice(), None, &ListQuery::default())
            .await
            .unwrap()
            .total,
        1
    );
    let np = read_nodepool(&mut conn, &controller(), np1.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(np.deleted_at, Some(at));
    let earlier_again = read_nodepool(&mut conn, &controller(), gone_before.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        earlier_again.deleted_at, earlier.deleted_at,
        "an earlier deletion keeps its time"
    );
    let live_only = ListQuery::default();
    assert_eq!(
        list_clusters(&mut conn, &controller(), &live_only)
            .await
            .unwrap()
            .total,
        1
    );
    let with_deleted = ListQuery {
        include_deleted: true,
        ..ListQuery::default()
    };
    assert_eq!(
        cluster_total(&mut conn, &controller(), &with_deleted).await,
        2
    );
    assert_eq!(
        list_nodepools(&mut conn, &controller(), None, &with_deleted)
            .await
            .unwrap()
            .total,
        4
    );
    // include_deleted means nothing for a user.
    assert_eq!(
        list_clusters(&mut conn, &alice(), &with_deleted)
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        read_nodepool(&mut conn, &alice(), untouched.id)
            .await
            .unwrap()
            .unwrap()
            .deleted_at,
        None
    );

    // Deleting again finds nothing live.
    assert!(matches!(
        clusters::mark_deleted(&mut conn, cluster.id, now()).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        clusters::lock_live(&mut conn, &controller(), cluster.id).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_spec_updates_produce_generations_two_to_twenty_one() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = db.url().to_owned();
        let change = cluster_update(&cluster, |s| s["infraID"] = json!(format!("upd-{i}")));
        tasks.push(tokio::spawn(async move {
            let mut conn = <AsyncPgConnection as AsyncConnection>::establish(&url)
                .await
                .unwrap();
            clusters::update(&mut conn, &alice(), cluster.id, &change, None, now())
                .await
                .unwrap()
        }));
    }
    let mut generations = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for task in tasks {
        let updated = task.await.unwrap();
        assert!(updated.spec_changed);
        assert!(
            generations.insert(updated.resource.generation),
            "duplicate generation"
        );
        assert!(versions.insert(updated.resource.resource_version.parse::<i64>().unwrap()));
    }
    assert_eq!(
        generations,
        (2..=21).collect::<BTreeSet<i64>>(),
        "no gap, no duplicate"
    );
    assert_eq!(versions, (2..=21).collect::<BTreeSet<i64>>());
    let stored = read_cluster(&mut conn, &alice(), cluster.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.generation, 21);
    assert_eq!(stored.status.observed_generation, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_moves_only_with_the_spec() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;

    // Identical spec: nothing stored at all.
    let same = cluster_update(&cluster, |_| {});
    let result = clusters::update(&mut conn, &alice(), cluster.id, &same, None, now())
        .await
        .unwrap();
    assert!(!result.changed && !result.spec_changed);
    assert_eq!(result.resource, cluster);
    // The same spec with defaults left out is still the same spec.
    let defaulted = cluster_update(&cluster, |s| s["release"] = json!({"channelGroup": "fast"}));
    let result = clusters::update(&mut conn, &alice(), cluster.id, &defaulted, None, now())
        .await
        .unwrap();
    assert!(!result.changed);

    // Labels only: resource_version moves, generation does not.
    let mut labels_only = cluster_update(&cluster, |_| {});
    labels_only.labels = Some([("team".to_owned(), "platform".to_owned())].into());
    let result = clusters::update(&mut conn, &alice(), cluster.id, &labels_only, None, now())
        .await
        .unwrap();
    assert!(result.changed && !result.spec_changed);
    assert_eq!(
        (
            result.resource.generation,
            result.resource.resource_version.as_str()
        ),
        (1, "2")
    );
    assert_eq!(result.resource.labels["team"], "platform");
    assert_eq!(
        result.resource.description.as_deref(),
        Some("created by the CLI"),
        "absent keeps"
    );

    // A spec change bumps the generation and resets status to the new generation.
    let change = cluster_update(&cluster, |s| s["infraID"] = json!("infra-2"));
    let result = clusters::update(&mut conn, &alice(), cluster.id, &change, None, now())
        .await
        .unwrap();
    assert!(result.spec_changed);
    let updated = result.resource;
    assert_eq!(
        (updated.generation, updated.resource_version.as_str()),
        (2, "3")
    );
    assert_eq!(
        (updated.status.phase, updated.status.observed_generation),
        (Phase::Pending, 2)
    );
    assert_eq!(
        updated.labels["team"], "platform",
        "absent labels keep the stored ones"
    );
    // Condition transition times are kept: both stayed False.
    assert_eq!(
        updated.status.conditions[0].last_transition_time,
        cluster.status.conditions[0].last_transition_time
    );
    assert!(updated.updated_at >= cluster.updated_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_preconditions_are_checked_under_the_lock() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "c1").await;
    let change = cluster_update(&cluster, |s| s["infraID"] = json!("infra-2"));
    assert!(matches!(
        clusters::update(&mut conn, &alice(), cluster.id, &change, Some("7"), now()).await,
        Err(StorageError::PreconditionFailed)
    ));
    let stale_body = ClusterUpdate {
        resource_version: Some("7".into()),
        ..change.clone()
    };
    assert!(matches!(
        clusters::update(&mut conn, &alice(), cluster.id, &stale_body, None, now()).await,
        Err(StorageError::VersionConflict)
    ));
    assert_eq!(
        read_cluster(&mut conn, &alice(), cluster.id)
            .await
            .unwrap()
            .unwrap()
            .generation,
        1
    );
    let fresh = ClusterUpdate {
        resource_version: Some("1".into()),
        ..change
    };
    let ok = clusters::update(&mut conn, &alice(), cluster.id, &fresh, Some("1"), now())
        .await
        .unwrap();
    assert_eq!(ok.resource.generation, 2);
    // The same precondition a second time is now stale.
    assert!(matches!(
        clusters::update(&mut conn, &alice(), cluster.id, &fresh, Some("1"), now()).await,
        Err(StorageError::PreconditionFailed)
    ));

    // Nodepools follow the same rules.
    let np = create_nodepool(&mut conn, &alice(), &cluster, "np").await;
    assert!(matches!(
        nodepools::update(
            &mut conn,
            &alice(),
            np.id,
            &nodepool_update(&np, 5),
            Some("9"),
            now()
        )
        .await,
        Err(StorageError::PreconditionFailed)
    ));
    let same = nodepools::update(
        &mut conn,
        &alice(),
        np.id,
        &nodepool_update(&np, 3),
        None,
        now(),
    )
    .await
    .unwrap();
    assert!(!same.changed);
    let bumped = nodepools::update(
        &mut conn,
        &alice(),
        np.id,
        &nodepool_update(&np, 5),
        Some("1"),
        now(),
    )
    .await
    .unwrap();
    assert_eq!(
        (bumped.resource.generation, bumped.resource.spec.replicas),
        (2, Some(5))
    );
    assert_eq!(bumped.resource.status.observed_generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_page_and_order_newest_first() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let same_instant = now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut new = new_cluster(&format!("c{i}"));
        new.labels.insert(
            "parity".into(),
            if i % 2 == 0 { "even" } else { "odd" }.into(),
        );
        // All created at the same instant: the id breaks the tie.
        let c = clusters::create(
            &mut conn,
            "alice@example.com",
            &new,
            Uuid::now_v7(),
            same_instant,
        )
        .await
        .unwrap();
        ids.push(c.id);
    }
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    let all = list_clusters(&mut conn, &alice(), &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        newest_first
    );

    let page = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            limit: 2,
            offset: 2,
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            page.total,
            page.items.iter().map(|c| c.id).collect::<Vec<_>>()
        ),
        (5, newest_first[2..4].to_vec())
    );
    let past_end = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            offset: 10,
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((past_end.total, past_end.items.len()), (5, 0));

    let labels = [
        ("parity".to_owned(), "even".to_owned()),
        ("team".to_owned(), "infra".to_owned()),
    ]
    .into();
    let even = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            labels,
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(even.total, 3);
    let named = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            name: Some("c3".into()),
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        named
            .items
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["c3"]
    );
    let pending = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            phase: Some(Phase::Pending),
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(pending.total, 5);
    let ready = list_clusters(
        &mut conn,
        &alice(),
        &ListQuery {
            phase: Some(Phase::Ready),
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ready.total, 0);
}

fn created_event(cluster_id: Uuid) -> cls_domain::event::Envelope {
    LifecycleEvent {
        id: Uuid::now_v7(),
        resource: ResourceRef::Cluster { cluster_id },
        action: LifecycleAction::Created,
        generation: 1,
        timestamp: now(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
    .envelope()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_commit_with_the_change_and_vanish_with_a_rollback() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;

    // Committed: the cluster and its event.
    let id = Uuid::now_v7();
    let envelope = created_event(id);
    let written = conn
        .transaction::<_, StorageError, _>(async |conn| {
            clusters::create(conn, "alice@example.com", &new_cluster("c1"), id, now()).await?;
            outbox::insert(conn, std::slice::from_ref(&envelope)).await
        })
        .await
        .unwrap();
    assert_eq!(written.shards().collect::<Vec<_>>(), [envelope.shard]);
    let rows = outbox::pending(&mut conn, 100).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.id, row.cluster_id, row.shard),
        (envelope.id, id, envelope.shard)
    );
    assert_eq!(
        (row.topic.as_str(), row.event_type.as_str()),
        ("cluster-events", "cluster.created")
    );
    assert_eq!(row.ordering_key, id.to_string());
    assert_eq!(row.body, envelope.body);
    assert_eq!(
        row.attributes,
        serde_json::to_value(&envelope.attributes).unwrap()
    );
    assert_eq!(row.traceparent, envelope.traceparent);
    assert_eq!(
        (row.state.as_str(), row.attempts, row.published_at),
        ("pending", 0, None)
    );

    // Rolled back after the event was written: neither the cluster nor the event exists.
    let id2 = Uuid::now_v7();
    let result = conn
        .transaction::<(), StorageError, _>(async |conn| {
            clusters::create(conn, "alice@example.com", &new_cluster("c2"), id2, now()).await?;
            let _ = outbox::insert(conn, &[created_event(id2)]).await?;
            Err(StorageError::NotFound)
        })
        .await;
    assert!(result.is_err());
    assert!(
        read_cluster(&mut conn, &controller(), id2)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(outbox::pending(&mut conn, 100).await.unwrap().len(), 1);

    // A failed change (name conflict) inside the transaction leaves no event either.
    let result = conn
        .transaction::<(), StorageError, _>(async |conn| {
            let id3 = Uuid::now_v7();
            let _ = outbox::insert(conn, &[created_event(id3)]).await?;
            clusters::create(conn, "alice@example.com", &new_cluster("c1"), id3, now()).await?;
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(StorageError::NameExists { .. })));
    assert_eq!(outbox::pending(&mut conn, 100).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_order_per_cluster_is_commit_order() {
    let db = TestDb::new().await;
    // Writers for one cluster interleave; each holds its transaction open for a moment after
    // inserting. The per-cluster lock makes seq order equal commit order.
    let cluster_id = Uuid::now_v7();
    let commits = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let url = db.url().to_owned();
        let commits = commits.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = <AsyncPgConnection as AsyncConnection>::establish(&url)
                .await
                .unwrap();
            let envelope = created_event(cluster_id);
            let id = envelope.id;
            conn.transaction::<_, StorageError, _>(async |conn| {
                let _ = outbox::insert(conn, &[envelope]).await?;
                tokio::time::sleep(std::time::Duration::from_millis(5 * (8 - i))).await;
                // Recorded while still holding the lock, so the order is the commit order.
                commits.lock().await.push(id);
                Ok(())
            })
            .await
            .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = db.conn().await;
    let by_seq: Vec<Uuid> = outbox::pending(&mut conn, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(by_seq, *commits.lock().await);
}

fn valid_report(controller: &str) -> cls_domain::status::ValidReport {
    cls_domain::status::ValidReport {
        controller_name: controller.into(),
        observed_generation: 1,
        conditions: Vec::new(),
        metadata: serde_json::Map::new(),
        last_error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_report_and_its_aggregate_are_read_back_under_the_lock() {
    use cls_domain::resource::ResourceKind;
    use cls_storage::status;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "reported").await;
    let kind = ResourceKind::Cluster;
    let ready = conn
        .transaction::<_, StorageError, _>(async |conn| {
            let (target, rows) = status::lock_with_rows(conn, kind, cluster.id, None)
                .await?
                .expect("the cluster exists");
            assert_eq!((target.cluster_id, target.generation), (cluster.id, 1));
            assert!(rows.is_empty());
            let mut ready = target.status.clone();
            ready.phase = Phase::Ready;
            for controller in ["ctl-b", "ctl-a"] {
                let at = now();
                status::save_report(
                    conn,
                    kind,
                    cluster.id,
                    &valid_report(controller),
                    at,
                    at,
                    &ready,
                    None,
                )
                .await?;
            }
            Ok(ready)
        })
        .await
        .unwrap();

    // Both controller rows (by name) and the aggregate written with them.
    let (target, rows) = conn
        .transaction::<_, StorageError, _>(async |conn| {
            status::lock_with_rows(conn, kind, cluster.id, Some("ctl-b")).await
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(target.status, ready);
    let names: Vec<_> = rows.iter().map(|r| r.controller_name.as_str()).collect();
    assert_eq!(names, ["ctl-a", "ctl-b"]);
    // Only the named reporter's conditions are read.
    let with_conditions: Vec<_> = rows.iter().map(|r| r.conditions.is_some()).collect();
    assert_eq!(with_conditions, [false, true]);

    // A resource that does not exist: nothing to lock, and nothing is written for it.
    let missing = Uuid::now_v7();
    let found = conn
        .transaction::<_, StorageError, _>(async |conn| {
            status::lock_with_rows(conn, kind, missing, None).await
        })
        .await
        .unwrap();
    assert!(found.is_none());
    let at = now();
    let err = status::save_report(
        &mut conn,
        kind,
        missing,
        &valid_report("ctl-a"),
        at,
        at,
        &ready,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::NotFound), "{err}");
}

/// A report's transaction reads its resource's controller rows as summaries, readiness tested
/// by Postgres: they must be what the domain makes of the full rows, whatever the rows hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_summaries_agree_with_the_domain_on_the_full_rows() {
    use cls_domain::resource::ResourceKind;
    use cls_domain::status::{ConditionStatus, ControllerCondition, ErrorInfo};
    use cls_storage::status;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = create_cluster(&mut conn, &alice(), "summarised").await;
    let kind = ResourceKind::Cluster;
    let condition = |condition_type: &str, status| ControllerCondition {
        condition_type: condition_type.into(),
        status,
        reason: "r".into(),
        message: "m".into(),
        last_transition_time: now(),
        severity: None,
    };
    let error: ErrorInfo = serde_json::from_value(json!({"controllerName": "ctl",
        "errorType": "Transient", "errorCode": "E1", "message": "boom", "userActionable": false}))
    .unwrap();
    use ConditionStatus::{False, True, Unknown};
    let shapes = [
        (vec![], None),
        (vec![condition("Available", True)], None),
        (vec![condition("Available", False)], None),
        (vec![condition("Available", Unknown)], None),
        (vec![condition("Ready", True)], None),
        (vec![condition("available", True)], None),
        (
            vec![condition("Ready", False), condition("Available", True)],
            None,
        ),
        (vec![condition("Available", True)], Some(error.clone())),
        (vec![], Some(error)),
    ];
    let mut metadata = serde_json::Map::new();
    metadata.insert("Available".into(), json!("True"));
    for (i, (conditions, last_error)) in shapes.iter().enumerate() {
        let report = cls_domain::status::ValidReport {
            controller_name: format!("ctl-{i}"),
            observed_generation: 1,
            conditions: conditions.clone(),
            metadata: metadata.clone(),
            last_error: last_error.clone(),
        };
        let status = cls_domain::aggregate::initial_status(kind, 1, now());
        status::save_report(
            &mut conn,
            kind,
            cluster.id,
            &report,
            now(),
            now(),
            &status,
            None,
        )
        .await
        .unwrap();
    }

    let full = status::controller_rows(&mut conn, kind, cluster.id)
        .await
        .unwrap();
    assert_eq!(full.len(), shapes.len());
    let ready: Vec<_> = full.iter().map(|r| r.is_ready()).collect();
    assert_eq!(
        ready,
        [false, true, false, false, false, false, true, true, false],
        "the shapes cover both outcomes"
    );
    for reporter in [None, Some("ctl-6")] {
        let (_, summaries) = conn
            .transaction::<_, StorageError, _>(async |conn| {
                status::lock_with_rows(conn, kind, cluster.id, reporter).await
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summaries.len(), full.len());
        for (summary, row) in summaries.iter().zip(&full) {
            assert_eq!(summary.controller_name, row.controller_name);
            assert_eq!(summary.summary, row.summary(), "{}", row.controller_name);
            let own = reporter == Some(row.controller_name.as_str());
            assert_eq!(summary.conditions.as_ref(), own.then_some(&row.conditions));
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Updates {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    hot: i64,
}

impl Updates {
    /// The updates and HOT updates since `earlier`.
    fn since(&self, earlier: &Updates) -> (i64, i64) {
        (self.updated - earlier.updated, self.hot - earlier.hot)
    }
}

/// Updates of `table` this backend has not reported to the statistics yet (the current
/// transaction's among them), and how many were heap-only (HOT).
async fn updates_in_transaction(
    conn: &mut diesel_async::AsyncPgConnection,
    table: &str,
) -> Updates {
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query(
        "SELECT n_tup_upd AS updated, n_tup_hot_upd AS hot
           FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result(conn)
    .await
    .unwrap()
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// A status report changes no indexed column of its resource's row, and the resource tables
/// keep room on each page for a row's next version, so a report updates the row in place
/// (HOT): no entry in any of the table's seven indexes. With pages filled to the default
/// 100 % this failed for every full page (migration `2026-12-08-000001_room_for_status_updates`).
/// One cluster per page is reported on, so that no update needs the room an earlier one took
/// (which Postgres frees only once no snapshot in the cluster could still see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_update_rows_in_place() {
    use cls_domain::resource::ResourceKind;
    use cls_storage::status;
    use diesel_async::RunQueryDsl as _;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    // Enough clusters to fill several pages.
    for i in 0..32 {
        create_cluster(&mut conn, &alice(), &format!("hot-{i}")).await;
    }
    let first_on_each_page: Vec<Id> = diesel::sql_query(
        "SELECT DISTINCT ON ((ctid::text::point)[0]) id FROM clusters
          ORDER BY (ctid::text::point)[0], ctid",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert!(first_on_each_page.len() > 3, "several pages");
    let kind = ResourceKind::Cluster;
    let report = valid_report("ctl-a");
    let status = cls_domain::aggregate::initial_status(kind, 1, now());
    let (mut updated, mut hot) = (0, 0);
    for Id { id } in &first_on_each_page {
        let (u, h) = conn
            .transaction::<_, StorageError, _>(async |conn| {
                let before = updates_in_transaction(conn, "clusters").await;
                status::save_report(conn, kind, *id, &report, now(), now(), &status, None).await?;
                Ok(updates_in_transaction(conn, "clusters")
                    .await
                    .since(&before))
            })
            .await
            .unwrap();
        (updated, hot) = (updated + u, hot + h);
    }
    let n = i64::try_from(first_on_each_page.len()).unwrap();
    assert_eq!((updated, hot), (n, n), "every report's update is HOT");
}

/// The unfiltered total of a cluster list is read from per-owner counts a trigger keeps, a
/// filtered one is a `count(*)`. Both must agree after concurrent creates and deletions made
/// through several connections (so several count slots), and a purge of deleted clusters must
/// not count them out a second time.
#[tokio::test]
async fn unfiltered_totals_agree_with_counted_ones_after_concurrent_changes() {
    let db = TestDb::new().await;
    let created = futures_util::future::join_all((0..4).map(|worker| {
        let db = &db;
        async move {
            let mut conn = db.conn().await;
            let mut alices = Vec::new();
            for i in 0..6 {
                alices.push(create_cluster(&mut conn, &alice(), &format!("a-{worker}-{i}")).await);
            }
            for i in 0..2 {
                create_cluster(&mut conn, &bob(), &format!("b-{worker}-{i}")).await;
            }
            alices
        }
    }))
    .await;
    let alices: Vec<Cluster> = created.into_iter().flatten().collect();
    // Five of Alice's deleted at once, each through a connection of its own.
    futures_util::future::join_all(alices[..5].iter().map(|cluster| {
        let db = &db;
        async move {
            let mut conn = db.conn().await;
            clusters::mark_deleted(&mut conn, cluster.id, now())
                .await
                .unwrap();
        }
    }))
    .await;

    let mut conn = db.conn().await;
    // Every cluster carries `team=infra`, so the filter matches the same clusters.
    let counted = ListQuery {
        labels: [("team".to_owned(), "infra".to_owned())].into(),
        ..ListQuery::default()
    };
    let mut totals = Vec::new();
    for caller in [alice(), bob(), controller()] {
        totals.push((
            cluster_total(&mut conn, &caller, &ListQuery::default()).await,
            cluster_total(&mut conn, &caller, &counted).await,
        ));
    }
    assert_eq!(totals, [(19, 19), (8, 8), (27, 27)]);

    // Purging the deleted ones changes no total; a controller's list with the deleted
    // ones (counted) loses them.
    let with_deleted = ListQuery {
        include_deleted: true,
        ..ListQuery::default()
    };
    assert_eq!(
        cluster_total(&mut conn, &controller(), &with_deleted).await,
        32
    );
    let purged =
        cls_storage::schedule::purge_deleted(&mut conn, now() + time::Duration::seconds(1), 100)
            .await
            .unwrap();
    assert_eq!(purged, 5);
    let mut totals = Vec::new();
    for caller in [alice(), bob(), controller()] {
        totals.push(cluster_total(&mut conn, &caller, &ListQuery::default()).await);
    }
    assert_eq!(totals, [19, 8, 27]);
    assert_eq!(
        cluster_total(&mut conn, &controller(), &with_deleted).await,
        27
    );
}
