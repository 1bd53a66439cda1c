//! Fault tests: a Pub/Sub outage (the emulator process stopped and restarted on the same
//! port), two replicas with one killed mid-stream, and a Postgres restart under the running
//! publisher. In every case every committed change arrives, in commit order per cluster.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use cls_test_support::{PubSubEmulator, TcpGate, TestDb, free_port, postgres};
use common::*;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Commits one change per cluster every `period` until stopped; returns the last generation.
struct Writers {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicI64>,
    task: JoinHandle<i64>,
}

impl Writers {
    fn start(url: &str, clusters: &[Uuid], period: Duration) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(0));
        let (url, clusters) = (url.to_owned(), clusters.to_vec());
        let (flag, count) = (stop.clone(), committed.clone());
        let task = tokio::spawn(async move {
            let mut generation = 0;
            while !flag.load(Ordering::Acquire) {
                generation += 1;
                for &cluster in &clusters {
                    // Keep trying through a database outage: a change counts once committed.
                    loop {
                        let result = async {
                            let mut conn = cls_storage::connect(&url).await?;
                            let written = cls_storage::outbox::insert(
                                &mut conn,
                                &[cluster_event(cluster, generation)],
                            )
                            .await?;
                            cls_storage::outbox::wake(&mut conn, written).await;
                            Ok::<_, cls_storage::StorageError>(())
                        }
                        .await;
                        if result.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                count.store(generation, Ordering::Release);
                tokio::time::sleep(period).await;
            }
            generation
        });
        Writers {
            stop,
            committed,
            task,
        }
    }

    fn committed(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    async fn finish(self) -> i64 {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

fn unique(received: &[Received]) -> usize {
    let mut ids: Vec<String> = received.iter().map(Received::event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_outage_loses_nothing_and_keeps_per_cluster_order() {
    let db = TestDb::new().await;
    let mut emulator = PubSubEmulator::start().unwrap();
    let port = emulator.port();
    // The publisher reaches the emulator through a gate the test opens only once the
    // restarted emulator has the test's subscriptions again (the emulator keeps everything in
    // memory, so messages published before they exist would be lost to the test, not to
    // Pub/Sub semantics).
    let gate = TcpGate::start(port, true).await.unwrap();
    let mut subscriber = Subscriber::connect(&emulator.host()).await;
    subscriber.subscribe().await;
    let publisher = start(&config(db.url(), &gate.host(), &[])).await;

    let clusters: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let writers = Writers::start(db.url(), &clusters, Duration::from_millis(40));
    let mut received = Vec::new();
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(30), |r| r.len() >= 50)
            .await
    );

    // Outage: cut the publisher off, collect what was delivered before, stop the emulator.
    gate.close();
    received.extend(subscriber.drain(Duration::from_secs(1)).await);
    let before_outage = writers.committed();
    emulator.stop();
    assert!(!emulator.processes_alive(), "the emulator really is down");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Pub/Sub comes back on the same port, empty; changes were committed meanwhile.
    emulator = PubSubEmulator::start_on(port).unwrap();
    let mut subscriber = Subscriber::connect(&emulator.host()).await;
    subscriber.subscribe().await;
    assert!(
        writers.committed() > before_outage,
        "changes kept being committed during the outage"
    );
    gate.open();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = writers.finish().await;
    let total = usize::try_from(last).unwrap() * clusters.len();
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(60), |r| unique(r)
                >= total)
            .await,
        "{} of {total} events arrived",
        unique(&received)
    );
    received.extend(subscriber.drain(Duration::from_secs(1)).await);
    let repeats = assert_complete_and_ordered(&received, &clusters, last);
    eprintln!("outage: {total} events, {repeats} delivered more than once");
    wait_for_empty_outbox(&db, Duration::from_secs(10)).await;
    publisher.shutdown().await;
}

/// A publisher replica running as its own process.
struct Replica {
    child: Child,
    admin: u16,
}

impl Replica {
    fn spawn(database_url: &str, pubsub_host: &str) -> Replica {
        let admin = free_port().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_event-publisher"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("PUBSUB_EMULATOR_HOST", pubsub_host)
            .env("GOOGLE_CLOUD_PROJECT", cls_test_support::emulator::PROJECT)
            .env("GRPC_PORT", "0")
            .env("METRICS_PORT", admin.to_string())
            .env("OUTBOX_REBALANCE_INTERVAL", "300ms")
            .env("OUTBOX_POLL_INTERVAL", "500ms")
            .env("PUBLISH_BACKOFF_MAX", "1s")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Replica { child, admin }
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.admin));
        sample(&admin_get(addr, "/metrics").await.1, series)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_shards_and_one_takes_over_when_the_other_is_killed() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let mut first = Replica::spawn(db.url(), &emulator.host());
    let second = Replica::spawn(db.url(), &emulator.host());
    wait_until(
        "the replicas split the shards",
        Duration::from_secs(30),
        async || {
            first.metric("outbox_shards_held").await == Some(16.0)
                && second.metric("outbox_shards_held").await == Some(16.0)
        },
    )
    .await;

    // Steady state: each event published once, by whichever replica holds its shard.
    let clusters: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let writers = Writers::start(db.url(), &clusters, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let steady = writers.finish().await;
    let steady_total = usize::try_from(steady).unwrap() * clusters.len();
    let mut received = Vec::new();
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(30), |r| r.len()
                >= steady_total)
            .await
    );
    received.extend(subscriber.drain(Duration::from_secs(1)).await);
    assert_eq!(
        assert_complete_and_ordered(&received, &clusters, steady),
        0,
        "two live replicas publish each event once"
    );
    let by_first = first
        .metric(r#"events_published_total{topic="cluster-events"}"#)
        .await
        .unwrap();
    let by_second = second
        .metric(r#"events_published_total{topic="cluster-events"}"#)
        .await
        .unwrap();
    assert_eq!(by_first + by_second, steady_total as f64);

    // Kill one mid-stream (SIGKILL: no clean-up at all); the other takes over.
    let more: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let writers = Writers::start(db.url(), &more, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    wait_until(
        "the survivor holds every shard",
        Duration::from_secs(30),
        async || second.metric("outbox_shards_held").await == Some(32.0),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = writers.finish().await;
    let total = usize::try_from(last).unwrap() * more.len();
    let mut received = Vec::new();
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(60), |r| unique(r)
                >= total)
            .await,
        "{} of {total} arrived",
        unique(&received)
    );
    received.extend(subscriber.drain(Duration::from_secs(1)).await);
    let repeats = assert_complete_and_ordered(&received, &more, last);
    eprintln!("replica killed: {total} events, {repeats} delivered more than once");
    wait_for_empty_outbox(&db, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_recovers_from_a_postgres_restart_without_restarting() {
    let pg =
        tokio::task::block_in_place(|| postgres::OwnCluster::start("publisher-restart")).unwrap();
    let url = pg.url().to_owned();
    cls_storage::migrate::run(&url).await.unwrap();
    let emulator = PubSubEmulator::start().unwrap();
    let mut subscriber = Subscriber::connect(&emulator.host()).await;
    subscriber.subscribe().await;
    let publisher = start(&config(&url, &emulator.host(), &[])).await;

    let cluster = Uuid::new_v4();
    for generation in 1..=5 {
        commit(&url, &[cluster_event(cluster, generation)]).await;
    }
    let mut received = Vec::new();
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(30), |r| r.len() >= 5)
            .await
    );

    tokio::task::block_in_place(|| pg.restart()).unwrap();
    for generation in 6..=10 {
        commit(&url, &[cluster_event(cluster, generation)]).await;
    }
    assert!(
        subscriber
            .pull_until(&mut received, Duration::from_secs(30), |r| unique(r) >= 10)
            .await,
        "events after the restart did not arrive: {:?}",
        generations_by_cluster(&received)
    );
    assert_eq!(assert_complete_and_ordered(&received, &[cluster], 10), 0);
    wait_until("ready again", Duration::from_secs(15), async || {
        admin_get(publisher.admin_addr, "/readyz").await.0 == 200
    })
    .await;
    publisher.shutdown().await;
    drop(pg);
}
