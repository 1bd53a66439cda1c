//! The reconcile schedule against a real database, with explicit clocks: rounds and their
//! row locks, completion, release, triggers during rounds, and purging.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::{ResourceKind, SERVER_OWNED_FIELDS};
use cls_storage::schedule::{self, Completion, LockedDue};
use cls_storage::{AsyncPgConnection, clusters, nodepools};
use cls_test_support::TestDb;
use cls_test_support::resources::create_cluster;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const T0: OffsetDateTime = time::macros::datetime!(2026-11-25 12:00:00 UTC);

fn s(secs: i64) -> Duration {
    Duration::seconds(secs)
}

async fn cluster(conn: &mut AsyncPgConnection, name: &str, created: OffsetDateTime) -> Uuid {
    create_cluster(conn, "alice@example.com", name, created)
        .await
        .id
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

const HOLD: Duration = Duration::seconds(30);

/// The resources of a round's items.
fn ids(locked: &Option<LockedDue<'_>>) -> Vec<Uuid> {
    locked
        .iter()
        .flat_map(|l| &l.items)
        .map(|i| i.resource.id())
        .collect()
}

fn done(id: Uuid, next: OffsetDateTime) -> Completion {
    Completion {
        resource_id: id,
        next_due_at: next,
    }
}

#[tokio::test]
async fn a_round_locks_its_rows_from_other_replicas_until_it_ends() {
    let db = TestDb::new().await;
    let (mut r1, mut r2, mut r3) = (db.conn().await, db.conn().await, db.conn().await);
    let a = cluster(&mut r1, "a", T0).await;
    let b = cluster(&mut r1, "b", T0 + s(1)).await;

    // Nothing is due before its creation time.
    assert!(
        schedule::lock_due(&mut r1, T0 - s(1), 10, HOLD)
            .await
            .unwrap()
            .is_none()
    );
    let first = schedule::lock_due(&mut r1, T0 + s(2), 1, HOLD)
        .await
        .unwrap();
    assert_eq!(ids(&first), [a], "the batch limit holds; oldest due first");
    let item = &first.as_ref().unwrap().items[0];
    assert_eq!(item.due_at, T0);
    let facts = item.facts.unwrap();
    assert_eq!(facts.last_reconciled_at, None);
    assert_eq!(facts.generation, 1);
    assert_eq!(facts.min_observed_generation, None);

    // Another replica gets only the other row while the first round runs …
    let second = schedule::lock_due(&mut r2, T0 + s(3), 10, HOLD)
        .await
        .unwrap();
    assert_eq!(ids(&second), [b]);
    let completed = second
        .unwrap()
        .complete(T0 + s(3), &[done(b, T0 + s(100))])
        .await
        .unwrap();
    assert_eq!(completed, 1);
    assert!(
        schedule::lock_due(&mut r3, T0 + s(4), 10, HOLD)
            .await
            .unwrap()
            .is_none(),
        "a is in a round, b is done"
    );

    // … and the first round's row once that replica is gone (its connection closed), for the
    // same due time (the same event id).
    drop(first);
    drop(r1);
    let retaken = loop {
        // Postgres ends the dead session's transaction as soon as it notices the close.
        if let Some(retaken) = schedule::lock_due(&mut r3, T0 + s(5), 10, HOLD)
            .await
            .unwrap()
        {
            break retaken;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(retaken.items.len(), 1);
    assert_eq!(retaken.items[0].resource.id(), a);
    assert_eq!(retaken.items[0].due_at, T0);
    retaken
        .complete(T0 + s(6), &[done(a, T0 + s(100))])
        .await
        .unwrap();

    let next = schedule::lock_due(&mut r2, T0 + s(100), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    let mut got: Vec<(Uuid, OffsetDateTime, Option<OffsetDateTime>)> = next
        .items
        .iter()
        .map(|i| (i.resource.id(), i.due_at, i.last_reconciled_at()))
        .collect();
    got.sort();
    let mut want = vec![
        (a, T0 + s(100), Some(T0 + s(6))),
        (b, T0 + s(100), Some(T0 + s(3))),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_hung_replica_loses_its_rows_after_the_hold_time() {
    let db = TestDb::new().await;
    let (mut hung, mut live) = (db.conn().await, db.conn().await);
    let a = cluster(&mut hung, "a", T0).await;
    let round = schedule::lock_due(&mut hung, T0 + s(1), 10, Duration::milliseconds(300))
        .await
        .unwrap()
        .unwrap();
    assert!(
        schedule::lock_due(&mut live, T0 + s(1), 10, HOLD)
            .await
            .unwrap()
            .is_none()
    );
    // The hung replica's session is ended by Postgres once idle in its round for too long.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let taken = schedule::lock_due(&mut live, T0 + s(2), 10, HOLD)
        .await
        .unwrap();
    assert_eq!(ids(&taken), [a]);
    assert!(
        round
            .complete(T0 + s(3), &[done(a, T0 + s(100))])
            .await
            .is_err(),
        "the hung round can no longer complete"
    );
}

#[tokio::test]
async fn triggers_debounce_on_the_trailing_edge_and_wait_for_a_round_in_flight() {
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

    // In a round and, while its event is in flight, triggered again: the trigger waits for
    // the round and then applies to the completed row.
    let mut other = db.conn().await;
    let round = schedule::lock_due(&mut conn, T0 + s(10), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        round.items[0].facts.unwrap().pending_reason,
        Some(ReconcileReason::SpecChange)
    );
    let mut again = Box::pin(schedule::trigger(
        &mut other,
        ResourceKind::Cluster,
        id,
        ReconcileReason::StatusChange,
        T0 + s(11),
        s(2),
        s(10),
    ));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut again)
            .await
            .is_err(),
        "the trigger waits for the round"
    );
    round
        .complete(T0 + s(12), &[done(id, T0 + s(300))])
        .await
        .unwrap();
    assert_eq!(again.await.unwrap(), Some(T0 + s(13)));
    let next = schedule::lock_due(&mut conn, T0 + s(13), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert_eq!(next.items[0].due_at, T0 + s(13), "a new due item");
    let facts = next.items[0].facts.unwrap();
    assert_eq!(facts.pending_reason, Some(ReconcileReason::StatusChange));
    assert_eq!(facts.last_reconciled_at, Some(T0 + s(12)));
    next.complete(T0 + s(13), &[done(id, T0 + s(300))])
        .await
        .unwrap();

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
    let first = schedule::lock_due(&mut conn, T0 + s(1), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    let item = first
        .items
        .iter()
        .find(|i| i.resource.id() == fresh)
        .unwrap();
    assert_eq!(item.facts.unwrap().pending_reason, None);
    first.complete(T0 + s(1), &[]).await.unwrap();

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
async fn a_released_round_is_due_again_for_the_same_item_and_stats_count_it() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let mut observer = db.conn().await;
    let id = cluster(&mut conn, "r", T0).await;
    let round = schedule::lock_due(&mut conn, T0 + s(1), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    let stats = schedule::stats(&mut observer, T0 + s(2), s(30))
        .await
        .unwrap();
    assert_eq!((stats.scheduled, stats.due, stats.overdue), (1, 1, 0));
    assert_eq!(round.release(&[id], T0 + s(5)).await.unwrap(), 1);
    let stats = schedule::stats(&mut observer, T0 + s(4), s(30))
        .await
        .unwrap();
    assert_eq!(stats.due, 0, "not due before the retry time");
    let stats = schedule::stats(&mut observer, T0 + s(40), s(30))
        .await
        .unwrap();
    assert_eq!((stats.due, stats.overdue), (1, 1));
    assert_eq!(stats.oldest_due_seconds, 35.0);
    let again = schedule::lock_due(&mut conn, T0 + s(40), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.items[0].due_at, T0, "still the original due item");
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
    let round = schedule::lock_due(&mut conn, T0 + s(10), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    let mut due: Vec<Uuid> = round.items.iter().map(|i| i.resource.id()).collect();
    due.sort();
    let mut live = vec![kept, kept_pool];
    live.sort();
    assert_eq!(due, live);
    assert!(round.items.iter().all(|i| i.facts.is_some()));
    round
        .complete(
            T0 + s(10),
            &[done(kept, T0 + s(500)), done(kept_pool, T0 + s(500))],
        )
        .await
        .unwrap();

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
    let round = schedule::lock_due(&mut conn, T0 + s(11), 10, HOLD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(round.items.len(), 1);
    assert_eq!(round.items[0].resource.id(), orphan);
    assert_eq!(round.items[0].facts, None);
    round.complete(T0 + s(11), &[]).await.unwrap();
    assert_eq!(scheduled(&mut conn).await, 2, "the orphan row is forgotten");
    assert_eq!(
        schedule::purge_deleted(&mut conn, T0 + s(100), 100)
            .await
            .unwrap(),
        3,
        "the deleted cluster and its two nodepools"
    );
}
