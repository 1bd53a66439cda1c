//! The reconcile schedule against a real database, with explicit clocks: claims, leases,
//! completion, triggers during claims, and purging.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::{ResourceKind, SERVER_OWNED_FIELDS};
use cls_domain::validate::{ReleaseDefaults, validate_cluster_create};
use cls_storage::schedule::{self, Claim, Completion};
use cls_storage::{AsyncPgConnection, clusters, nodepools};
use cls_test_support::TestDb;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = time::macros::datetime!(2026-11-25 12:00:00 UTC);

fn s(secs: i64) -> Duration {
    Duration::seconds(secs)
}

async fn cluster(conn: &mut AsyncPgConnection, name: &str, created: OffsetDateTime) -> Uuid {
    let body = serde_json::json!({"name": name, "spec": {"infraID": "i", "platform": {"type": "GCP",
        "gcp": {"projectID": "p", "region": "r", "network": "n", "subnet": "s"}}}});
    let request =
        cls_domain::parse::parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
    let defaults = ReleaseDefaults {
        version: "4.16.0",
        channel_group: "stable",
    };
    let new = validate_cluster_create(request, defaults).unwrap();
    let id = Uuid::now_v7();
    clusters::create(conn, "alice@example.com", &new, id, created)
        .await
        .unwrap();
    id
}

async fn nodepool(conn: &mut AsyncPgConnection, cluster_id: Uuid, name: &str) -> Uuid {
    let body = serde_json::json!({"name": name, "spec": {"replicas": 1,
        "platform": {"type": "gcp", "gcp": {"instanceType": "n2-standard-4"}}}});
    let request =
        cls_domain::parse::parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
    let new = cls_domain::validate::validate_nodepool_create(request, Some("4.16.0")).unwrap();
    let owner = cls_domain::identity::Caller::User("alice@example.com".into());
    let locked = clusters::lock_live(conn, &owner, cluster_id).await.unwrap();
    let id = Uuid::now_v7();
    nodepools::create(conn, &locked, "alice@example.com", &new, id, T0)
        .await
        .unwrap();
    id
}

async fn scheduled(conn: &mut AsyncPgConnection) -> i64 {
    schedule::stats(conn, T0, s(60)).await.unwrap().scheduled
}

fn claim(replica: &str, until: OffsetDateTime) -> Claim {
    Claim {
        replica: replica.into(),
        until,
    }
}

#[tokio::test]
async fn a_claim_hides_rows_until_it_expires_and_a_reclaim_serves_the_same_due_item() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let a = cluster(&mut conn, "a", T0).await;
    let b = cluster(&mut conn, "b", T0 + s(1)).await;

    // Nothing is due before its creation time.
    assert!(
        schedule::claim_due(&mut conn, &claim("r1", T0), T0 - s(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let first = claim("r1", T0 + s(32));
    let items = schedule::claim_due(&mut conn, &first, T0 + s(2), 1)
        .await
        .unwrap();
    assert_eq!(items.len(), 1, "the batch limit holds");
    assert_eq!(items[0].resource.id(), a, "oldest due first");
    assert_eq!(items[0].due_at, T0);
    let facts = items[0].facts.unwrap();
    assert_eq!(facts.last_reconciled_at, None);
    assert_eq!(facts.generation, 1);
    assert_eq!(facts.min_observed_generation, None);

    // Another replica gets only the other row while the claim holds …
    let second = claim("r2", T0 + s(33));
    let others = schedule::claim_due(&mut conn, &second, T0 + s(3), 10)
        .await
        .unwrap();
    assert_eq!(
        others.iter().map(|i| i.resource.id()).collect::<Vec<_>>(),
        [b]
    );
    // … and the claimed row again once it expired, for the same due time (the same event id).
    let late = claim("r2", T0 + s(70));
    let retaken = schedule::claim_due(&mut conn, &late, T0 + s(40), 10)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 2);
    let a_again = retaken.iter().find(|i| i.resource.id() == a).unwrap();
    assert_eq!(a_again.due_at, T0);

    // The expired claim's completion changes nothing; the live one's does.
    let done = |id| Completion {
        resource_id: id,
        next_due_at: T0 + s(100),
    };
    assert_eq!(
        schedule::complete(&mut conn, &first, T0 + s(41), &[done(a)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        schedule::complete(&mut conn, &late, T0 + s(42), &[done(a), done(b)])
            .await
            .unwrap(),
        2
    );
    let next = schedule::claim_due(&mut conn, &claim("r3", T0 + s(200)), T0 + s(100), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|i| i.due_at == T0 + s(100)));
    assert!(
        next.iter()
            .all(|i| i.last_reconciled_at() == Some(T0 + s(42)))
    );
}

#[tokio::test]
async fn triggers_debounce_on_the_trailing_edge_and_survive_a_claim_in_flight() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let id = cluster(&mut conn, "t", T0).await;
    // Each trigger pushes the due time out, but never past the first + the maximum wait.
    for (at, due) in [(0, 2), (1, 3), (9, 10)] {
        let got = schedule::trigger(
            &mut conn,
            ResourceKind::Cluster,
            id,
            ReconcileReason::SpecChange,
            T0 + s(at),
            s(2),
            s(10),
        )
        .await
        .unwrap();
        assert_eq!(got, Some(T0 + s(due)), "trigger at +{at}s");
    }

    // Claimed and, while its event is in flight, triggered again.
    let c = claim("r1", T0 + s(40));
    let items = schedule::claim_due(&mut conn, &c, T0 + s(10), 10)
        .await
        .unwrap();
    assert_eq!(
        items[0].facts.unwrap().pending_reason,
        Some(ReconcileReason::SpecChange)
    );
    let again = schedule::trigger(
        &mut conn,
        ResourceKind::Cluster,
        id,
        ReconcileReason::StatusChange,
        T0 + s(11),
        s(2),
        s(10),
    )
    .await
    .unwrap();
    assert_eq!(again, Some(T0 + s(13)));
    // The completion records the reconcile but keeps the newer trigger and its due time.
    assert_eq!(
        schedule::complete(
            &mut conn,
            &c,
            T0 + s(12),
            &[Completion {
                resource_id: id,
                next_due_at: T0 + s(300)
            }]
        )
        .await
        .unwrap(),
        1
    );
    let items = schedule::claim_due(&mut conn, &claim("r1", T0 + s(50)), T0 + s(13), 10)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].due_at, T0 + s(13), "a new due item");
    let facts = items[0].facts.unwrap();
    assert_eq!(facts.pending_reason, Some(ReconcileReason::StatusChange));
    assert_eq!(facts.last_reconciled_at, Some(T0 + s(12)));

    // A creation trigger adds nothing to a resource's first reconcile …
    let fresh = cluster(&mut conn, "fresh", T0).await;
    let created = schedule::trigger(
        &mut conn,
        ResourceKind::Cluster,
        fresh,
        ReconcileReason::ClusterCreated,
        T0 + s(1),
        s(2),
        s(10),
    )
    .await
    .unwrap();
    assert_eq!(created, Some(T0), "still due at creation");
    let first = schedule::claim_due(&mut conn, &claim("r1", T0 + s(60)), T0 + s(1), 10)
        .await
        .unwrap();
    let first = first.iter().find(|i| i.resource.id() == fresh).unwrap();
    assert_eq!(first.facts.unwrap().pending_reason, None);

    // Unknown or wrong-kind resources have no schedule.
    for (kind, target) in [
        (ResourceKind::Cluster, Uuid::now_v7()),
        (ResourceKind::NodePool, id),
    ] {
        let none = schedule::trigger(
            &mut conn,
            kind,
            target,
            ReconcileReason::ManualTrigger,
            T0,
            s(2),
            s(10),
        )
        .await
        .unwrap();
        assert_eq!(none, None);
    }
}

#[tokio::test]
async fn a_released_claim_is_due_again_for_the_same_item_and_stats_count_it() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let id = cluster(&mut conn, "r", T0).await;
    let c = claim("r1", T0 + s(30));
    schedule::claim_due(&mut conn, &c, T0 + s(1), 10)
        .await
        .unwrap();
    let stats = schedule::stats(&mut conn, T0 + s(2), s(30)).await.unwrap();
    assert_eq!(
        (stats.scheduled, stats.due, stats.claimed, stats.overdue),
        (1, 0, 1, 0)
    );
    assert_eq!(
        schedule::release(&mut conn, &c, &[id], T0 + s(5))
            .await
            .unwrap(),
        1
    );
    let stats = schedule::stats(&mut conn, T0 + s(40), s(30)).await.unwrap();
    assert_eq!((stats.due, stats.claimed, stats.overdue), (1, 0, 1));
    assert_eq!(stats.oldest_due_seconds, 35.0);
    let items = schedule::claim_due(&mut conn, &claim("r2", T0 + s(70)), T0 + s(40), 10)
        .await
        .unwrap();
    assert_eq!(items[0].due_at, T0, "still the original due item");
}

#[tokio::test]
async fn purge_removes_only_resources_deleted_before_the_cutoff() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let old = cluster(&mut conn, "old", T0).await;
    let recent = cluster(&mut conn, "recent", T0).await;
    let live = cluster(&mut conn, "live", T0).await;
    clusters::mark_deleted(&mut conn, old, T0 + s(10))
        .await
        .unwrap();
    clusters::mark_deleted(&mut conn, recent, T0 + s(100))
        .await
        .unwrap();
    assert_eq!(
        schedule::purge_deleted(&mut conn, T0 + s(50), 100)
            .await
            .unwrap(),
        1
    );
    let controller = cls_domain::identity::Caller::Controller("c@system.local".into());
    assert!(
        clusters::get(&mut conn, &controller, old)
            .await
            .unwrap()
            .is_none()
    );
    for id in [recent, live] {
        assert!(
            clusters::get(&mut conn, &controller, id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn deletion_takes_the_schedule_rows_and_a_row_left_without_its_resource_is_claimed_as_gone() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let doomed = cluster(&mut conn, "doomed", T0).await;
    nodepool(&mut conn, doomed, "first").await;
    let second = nodepool(&mut conn, doomed, "second").await;
    let kept = cluster(&mut conn, "kept", T0).await;
    let kept_pool = nodepool(&mut conn, kept, "pool").await;
    assert_eq!(scheduled(&mut conn).await, 5);

    // A nodepool deleted on its own, then its cluster with the remaining one.
    nodepools::mark_deleted(&mut conn, second, T0 + s(1))
        .await
        .unwrap();
    assert_eq!(scheduled(&mut conn).await, 4);
    clusters::mark_deleted(&mut conn, doomed, T0 + s(2))
        .await
        .unwrap();
    assert_eq!(
        scheduled(&mut conn).await,
        2,
        "only the live cluster and its nodepool"
    );
    let due = schedule::claim_due(&mut conn, &claim("r1", T0 + s(40)), T0 + s(10), 10)
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = due.iter().map(|i| i.resource.id()).collect();
    ids.sort();
    let mut live = vec![kept, kept_pool];
    live.sort();
    assert_eq!(ids, live);
    assert!(due.iter().all(|i| i.facts.is_some()));

    // The schedule has no foreign keys: a row whose resource is not stored at all (it cannot
    // happen through the repository) is claimed as gone, so the scheduler forgets it, and
    // purging the deleted cluster does not depend on it.
    let orphan = Uuid::now_v7();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO reconcile_schedule (resource_id, resource_kind, cluster_id, next_due_at)
             VALUES ($1, 'cluster', $1, $2)",
        )
        .bind::<diesel::sql_types::Uuid, _>(orphan)
        .bind::<diesel::sql_types::Timestamptz, _>(T0),
        &mut conn,
    )
    .await
    .unwrap();
    let due = schedule::claim_due(&mut conn, &claim("r1", T0 + s(41)), T0 + s(11), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].resource.id(), orphan);
    assert_eq!(due[0].facts, None);
    assert_eq!(
        schedule::purge_deleted(&mut conn, T0 + s(100), 100)
            .await
            .unwrap(),
        3,
        "the deleted cluster and its two nodepools"
    );
}
