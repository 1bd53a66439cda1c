//! The relay side of the outbox on real Postgres: shard leases, per-shard order, publish,
//! failure, dead-letter, pruning and backlog.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use cls_domain::event::{Envelope, outbox_shard};
use cls_storage::outbox::{self, Backlog};
use cls_test_support::TestDb;
use cls_test_support::events::cluster_updated as event;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// Two clusters in different shards.
fn two_clusters() -> (Uuid, Uuid) {
    let a = Uuid::now_v7();
    let b = (0..1000)
        .map(|_| Uuid::now_v7())
        .find(|b| outbox_shard(*b) != outbox_shard(a))
        .unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_leases_are_exclusive_and_released_with_the_session() {
    let db = TestDb::new().await;
    let mut first = db.conn().await;
    let mut second = db.conn().await;
    assert!(outbox::try_lock_shard(&mut first, 3).await.unwrap());
    assert!(
        outbox::try_lock_shard(&mut first, 3).await.unwrap(),
        "re-entrant for the holder"
    );
    assert!(
        !outbox::try_lock_shard(&mut second, 3).await.unwrap(),
        "held elsewhere"
    );
    assert!(
        outbox::try_lock_shard(&mut second, 4).await.unwrap(),
        "other shards are free"
    );
    assert!(outbox::unlock_shard(&mut first, 3).await.unwrap());
    assert!(
        !outbox::try_lock_shard(&mut second, 3).await.unwrap(),
        "still held once (locks stack)"
    );
    drop(first); // the replica dies: its session's leases go
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !outbox::try_lock_shard(&mut second, 3).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "lease not released when the session ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_read_per_shard_in_order_and_leave_when_published() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let (a, b) = two_clusters();
    let a_events: Vec<Envelope> = (1..=5).map(|g| event(a, g)).collect();
    for (i, envelope) in a_events.iter().enumerate() {
        let _ = outbox::insert(&mut conn, &[envelope.clone(), event(b, i as i64 + 1)])
            .await
            .unwrap();
    }
    let shard = outbox_shard(a);
    let rows = outbox::pending_in_shard(&mut conn, shard, 100)
        .await
        .unwrap();
    // What the relay publishes: the stored body and attributes as JSON text, and the row's key
    // and topic.
    for (row, sent) in rows.iter().zip(&a_events) {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&row.body).unwrap(),
            sent.body
        );
        assert_eq!(
            serde_json::from_str::<std::collections::BTreeMap<String, String>>(&row.attributes)
                .unwrap(),
            sent.attributes
        );
        assert_eq!(
            (row.ordering_key.as_str(), row.topic.as_str()),
            (sent.ordering_key.as_str(), sent.topic.as_str())
        );
    }
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        a_events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let first_three = outbox::pending_in_shard(&mut conn, shard, 3).await.unwrap();
    assert_eq!(first_three.len(), 3);

    let ids: Vec<Uuid> = first_three.iter().map(|r| r.id).collect();
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        outbox::mark_published(&mut conn, &ids, now).await.unwrap(),
        3
    );
    assert_eq!(
        outbox::mark_published(&mut conn, &ids, now).await.unwrap(),
        0,
        "only pending rows move"
    );
    let rest = outbox::pending_in_shard(&mut conn, shard, 100)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.id).collect::<Vec<_>>(),
        a_events[3..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let backlog = outbox::backlog(&mut conn).await.unwrap();
    assert_eq!((backlog.pending, backlog.dead), (7, 0));
    assert!(backlog.oldest_pending.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_rows_pending_and_dead_letters_are_kept() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = Uuid::now_v7();
    let (first, second) = (event(cluster, 1), event(cluster, 2));
    let _ = outbox::insert(&mut conn, &[first.clone(), second.clone()])
        .await
        .unwrap();
    let shard = outbox_shard(cluster);

    outbox::record_failure(&mut conn, &[first.id], "UNAVAILABLE: connection refused")
        .await
        .unwrap();
    outbox::record_failure(&mut conn, &[first.id], "UNAVAILABLE: connection refused")
        .await
        .unwrap();
    let rows = outbox::pending_in_shard(&mut conn, shard, 10)
        .await
        .unwrap();
    assert_eq!(rows[0].id, first.id, "a failed row keeps its place");
    let rows = outbox::pending(&mut conn, 10).await.unwrap();
    assert_eq!(rows[0].id, first.id);
    assert_eq!(
        (rows[0].attempts, rows[0].last_error.as_deref()),
        (2, Some("UNAVAILABLE: connection refused"))
    );

    assert!(
        outbox::dead_letter(&mut conn, first.id, "INVALID_ARGUMENT: message too large")
            .await
            .unwrap()
    );
    assert!(
        !outbox::dead_letter(&mut conn, first.id, "again")
            .await
            .unwrap()
    );
    let rows = outbox::pending_in_shard(&mut conn, shard, 10)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![second.id],
        "no longer blocks the cluster"
    );
    assert_eq!(
        outbox::backlog(&mut conn).await.unwrap().dead,
        1,
        "kept, and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_only_old_published_rows_in_batches() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let cluster = Uuid::now_v7();
    let events: Vec<Envelope> = (1..=5).map(|g| event(cluster, g)).collect();
    let _ = outbox::insert(&mut conn, &events).await.unwrap();
    let long_ago = OffsetDateTime::now_utc() - Duration::days(8);
    let ids: Vec<Uuid> = events[..4].iter().map(|e| e.id).collect();
    outbox::mark_published(&mut conn, &ids[..3], long_ago)
        .await
        .unwrap();
    outbox::mark_published(&mut conn, &ids[3..], OffsetDateTime::now_utc())
        .await
        .unwrap();

    let cutoff = OffsetDateTime::now_utc() - Duration::days(7);
    assert_eq!(
        outbox::prune_published(&mut conn, cutoff, 2).await.unwrap(),
        2,
        "bounded batch"
    );
    assert_eq!(
        outbox::prune_published(&mut conn, cutoff, 2).await.unwrap(),
        1
    );
    assert_eq!(
        outbox::prune_published(&mut conn, cutoff, 2).await.unwrap(),
        0,
        "recent and pending rows stay"
    );
    let Backlog { pending, .. } = outbox::backlog(&mut conn).await.unwrap();
    assert_eq!(pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_keys_are_skipped_and_resubmitted_events_are_written_once() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let a = Uuid::now_v7();
    let b = (0..10_000)
        .map(|_| Uuid::now_v7())
        .find(|b| outbox_shard(*b) == outbox_shard(a))
        .unwrap();
    let shard = outbox_shard(a);
    let events = [event(a, 1), event(b, 1), event(a, 2)];
    let _ = outbox::insert(&mut conn, &events).await.unwrap();
    // A retried submission of the same events (same ids) adds nothing.
    let _ = outbox::insert(&mut conn, &events).await.unwrap();
    assert_eq!(
        outbox::pending_in_shard(&mut conn, shard, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let a_key = a.to_string();
    let rows = outbox::pending_in_shard_except(&mut conn, shard, &[&a_key], 10)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![events[1].id],
        "only the other cluster's row while a's key is paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_counted_per_database_and_leave_with_their_session() {
    let db = TestDb::new().await;
    let other_db = TestDb::new().await;
    let mut first = db.conn().await;
    let mut second = db.conn().await;
    let mut elsewhere = other_db.conn().await;
    outbox::join_relay(&mut first).await.unwrap();
    outbox::join_relay(&mut elsewhere).await.unwrap();
    assert_eq!(outbox::relay_replicas(&mut second).await.unwrap(), 1);
    outbox::join_relay(&mut second).await.unwrap();
    assert_eq!(outbox::relay_replicas(&mut second).await.unwrap(), 2);
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while outbox::relay_replicas(&mut second).await.unwrap() != 1 {
        assert!(std::time::Instant::now() < deadline, "replica not gone");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Writers wake the relay after their commit: the insert itself notifies nobody, `wake`
/// names the shards the insert actually wrote to, and it leaves the writer's connection
/// durable (its `synchronous_commit` off lasts only for the notification's own transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_relay_hears_the_shards_a_committed_write_put_events_in() {
    use futures_util::StreamExt as _;
    let db = TestDb::new().await;
    let mut listener = db.conn().await;
    outbox::listen(&mut listener).await.unwrap();
    let mut conn = db.conn().await;
    // (The test cluster runs with synchronous_commit off; a production writer has it on.)
    {
        use diesel_async::RunQueryDsl as _;
        diesel::sql_query("SET synchronous_commit = on")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (a, b) = two_clusters();
    let first = [event(a, 1), event(b, 1), event(a, 2)];
    let written = outbox::insert(&mut conn, &first).await.unwrap();
    let mut expected = vec![outbox_shard(a), outbox_shard(b)];
    expected.sort_unstable();
    assert_eq!(written.shards().collect::<Vec<_>>(), expected);
    let mut stream = std::pin::pin!(listener.notifications_stream());
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(early.is_err(), "the insert notified: {early:?}");

    outbox::wake(&mut conn, written).await;
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a notification within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(note.channel, outbox::NOTIFY_CHANNEL);
    assert_eq!(
        outbox::notified_shards(&note.payload).collect::<Vec<_>>(),
        expected
    );
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        synchronous_commit: String,
    }
    use diesel_async::RunQueryDsl as _;
    let setting: Setting = diesel::sql_query("SHOW synchronous_commit")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(setting.synchronous_commit, "on");

    // An insert that writes nothing (every event already there) wakes nobody: the next
    // notification is the next insert's, naming only its shard.
    let nothing = outbox::insert(&mut conn, &first).await.unwrap();
    assert!(nothing.is_empty());
    outbox::wake(&mut conn, nothing).await;
    let written = outbox::insert(&mut conn, &[event(b, 2)]).await.unwrap();
    outbox::wake(&mut conn, written).await;
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("a notification within 5 s")
        .unwrap()
        .unwrap();
    let shards: Vec<i16> = outbox::notified_shards(&note.payload).collect();
    assert_eq!(shards, vec![outbox_shard(b)]);
}

/// A `Waker` notifies, after the writers' commits, every shard they recorded (several writes'
/// shards may share one notification), nothing for a write that wrote nothing, and what was
/// recorded just before its last handle was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waker_notifies_every_shard_writers_recorded_even_as_it_is_dropped() {
    use futures_util::StreamExt as _;
    use std::collections::BTreeSet;
    let db = TestDb::new().await;
    let mut listener = db.conn().await;
    outbox::listen(&mut listener).await.unwrap();
    let mut stream = std::pin::pin!(listener.notifications_stream());
    let waker = outbox::Waker::spawn(cls_storage::pool(db.url(), 1));

    // Four clusters in four different shards, written by concurrent writers.
    let mut clusters: Vec<Uuid> = Vec::new();
    while clusters.len() < 4 {
        let id = Uuid::new_v4();
        if clusters
            .iter()
            .all(|c| outbox_shard(*c) != outbox_shard(id))
        {
            clusters.push(id);
        }
    }
    let (last, writers) = clusters.split_last().unwrap();
    let mut conn = db.conn().await;
    let mut written = Vec::new();
    for &cluster in writers {
        written.push(
            outbox::insert(&mut conn, &[event(cluster, 1)])
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = written
        .into_iter()
        .map(|w| {
            let waker = waker.clone();
            tokio::spawn(async move { waker.wake(w) })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let expected: BTreeSet<i16> = writers.iter().map(|c| outbox_shard(*c)).collect();
    let mut heard = BTreeSet::new();
    while heard != expected {
        let note = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("heard only {heard:?} of {expected:?}"))
            .unwrap()
            .unwrap();
        assert_eq!(note.channel, outbox::NOTIFY_CHANNEL);
        heard.extend(outbox::notified_shards(&note.payload));
        assert!(heard.is_subset(&expected), "{heard:?} beyond {expected:?}");
    }

    // A write that wrote nothing wakes nobody.
    waker.wake(outbox::Written::default());
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "an empty write notified: {quiet:?}");

    // Recorded, then the last handle dropped at once: still sent.
    let written = outbox::insert(&mut conn, &[event(*last, 1)]).await.unwrap();
    waker.wake(written);
    drop(waker);
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the last write's notification within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        outbox::notified_shards(&note.payload).collect::<Vec<_>>(),
        vec![outbox_shard(*last)]
    );
}
