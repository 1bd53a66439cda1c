//! Shared set-up for the event-publisher tests: a real database, the real Pub/Sub emulator,
//! the publisher in-process (or as its binary), and a test subscriber with message ordering.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different subset"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cls_domain::event::Envelope;
use cls_storage::outbox;
use cls_test_support::emulator::PROJECT;
pub use cls_test_support::events::cluster_updated as cluster_event;
use cls_test_support::{PubSubEmulator, TestDb};
use event_publisher::{Config, Running};
use tokio::net::TcpListener;
use uuid::Uuid;

pub use cls_test_support::subscriber::{Received, Subscriber};

/// Publisher settings for tests: short intervals so recovery shows within seconds.
pub fn config(database_url: &str, pubsub_host: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url),
        ("PUBSUB_EMULATOR_HOST", pubsub_host),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("OUTBOX_POLL_INTERVAL", "500ms"),
        ("OUTBOX_REBALANCE_INTERVAL", "300ms"),
        ("PUBLISH_BACKOFF_INITIAL", "50ms"),
        ("PUBLISH_BACKOFF_MAX", "1s"),
        ("PUBLISH_TIMEOUT", "3s"),
        ("SHUTDOWN_TIMEOUT", "5s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_vars(&vars).expect("test configuration")
}

/// Starts the publisher in-process on ephemeral ports.
pub async fn start(config: &Config) -> Running {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    event_publisher::start(config, grpc, admin).await.unwrap()
}

/// A test database, a Pub/Sub emulator of its own, and an ordered subscription on each topic.
pub struct Fixture {
    pub db: TestDb,
    pub emulator: PubSubEmulator,
    pub subscriber: Subscriber,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = TestDb::new().await;
        let emulator = PubSubEmulator::start().unwrap();
        let mut subscriber = Subscriber::connect(&emulator.host()).await;
        subscriber.subscribe().await;
        Fixture {
            db,
            emulator,
            subscriber,
        }
    }

    /// The publisher's test configuration for this fixture.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        config(self.db.url(), &self.emulator.host(), extra)
    }
}

/// One series of a running publisher's `/metrics`.
pub async fn metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    sample(&admin_get(addr, "/metrics").await.1, series)
}

/// Commits events in a transaction of their own and wakes the relay, as a writer does.
pub async fn commit(db_url: &str, envelopes: &[Envelope]) {
    let mut conn = cls_storage::connect(db_url).await.unwrap();
    let written = outbox::insert(&mut conn, envelopes).await.unwrap();
    outbox::wake(&mut conn, written).await;
}

/// Per cluster, the generations in arrival order.
pub fn generations_by_cluster(received: &[Received]) -> HashMap<String, Vec<i64>> {
    let mut by_cluster: HashMap<String, Vec<i64>> = HashMap::new();
    for r in received {
        by_cluster
            .entry(r.body["cluster_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(r.body["generation"].as_i64().unwrap());
    }
    by_cluster
}

/// Checks at-least-once, in-order delivery: for every cluster, the first arrival of each
/// event is in commit order and covers 1..=n. Returns how many arrivals were repeats.
pub fn assert_complete_and_ordered(received: &[Received], clusters: &[Uuid], n: i64) -> usize {
    let by_cluster = generations_by_cluster(received);
    let mut repeats = 0;
    for cluster in clusters {
        let arrivals = by_cluster
            .get(&cluster.to_string())
            .unwrap_or_else(|| panic!("nothing arrived for cluster {cluster}"));
        let mut firsts = Vec::new();
        for g in arrivals {
            if firsts.contains(g) {
                repeats += 1;
            } else {
                firsts.push(*g);
            }
        }
        assert_eq!(
            firsts,
            (1..=n).collect::<Vec<_>>(),
            "cluster {cluster}: first arrivals out of order or missing (arrivals: {arrivals:?})"
        );
    }
    repeats
}

/// Polls `check` every 100 ms until it holds; fails the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the database `db` has no pending outbox rows.
pub async fn wait_for_empty_outbox(db: &TestDb, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut conn = db.conn().await;
    loop {
        let backlog = outbox::backlog(&mut conn).await.unwrap();
        if backlog.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outbox still has {} pending rows",
            backlog.pending
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs an admin path of a running publisher.
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// The value of one Prometheus sample line (`name{labels} value`) in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
