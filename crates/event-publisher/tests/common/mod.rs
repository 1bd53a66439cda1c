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
use gcloud_sdk::google::pubsub::v1::publisher_client::PublisherClient;
use gcloud_sdk::google::pubsub::v1::subscriber_client::SubscriberClient;
use gcloud_sdk::google::pubsub::v1::{AcknowledgeRequest, PullRequest, Subscription, Topic};
use gcloud_sdk::{GoogleApi, GoogleAuthMiddleware};
use tokio::net::TcpListener;
use uuid::Uuid;

pub const TOPICS: [&str; 2] = ["cluster-events", "nodepool-events"];

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

/// A message as a subscriber sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: &'static str,
    pub body: serde_json::Value,
    pub attributes: HashMap<String, String>,
    pub ordering_key: String,
}

impl Received {
    pub fn event_id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// The test's own Pub/Sub client: creates the topics and an ordered subscription on each,
/// then pulls and acknowledges.
pub struct Subscriber {
    publisher: GoogleApi<PublisherClient<GoogleAuthMiddleware>>,
    subscriber: GoogleApi<SubscriberClient<GoogleAuthMiddleware>>,
    /// (topic, subscription name)
    subscriptions: Vec<(&'static str, String)>,
}

impl Subscriber {
    pub async fn connect(host: &str) -> Subscriber {
        let anonymous =
            || gcloud_sdk::google_cloud_auth::credentials::anonymous::Builder::new().build();
        let url = format!("http://{host}");
        Subscriber {
            publisher: GoogleApi::from_function_with_credentials(
                PublisherClient::new,
                &url,
                None,
                anonymous(),
            )
            .await
            .unwrap(),
            subscriber: GoogleApi::from_function_with_credentials(
                SubscriberClient::new,
                &url,
                None,
                anonymous(),
            )
            .await
            .unwrap(),
            subscriptions: Vec::new(),
        }
    }

    /// Creates both topics (if missing) and a fresh ordered subscription on each.
    pub async fn subscribe(&mut self) {
        self.subscriptions.clear();
        for topic in TOPICS {
            let name = format!("projects/{PROJECT}/topics/{topic}");
            let _ = self
                .publisher
                .get()
                .create_topic(Topic {
                    name: name.clone(),
                    ..Default::default()
                })
                .await;
            let subscription = format!(
                "projects/{PROJECT}/subscriptions/{topic}-{}",
                Uuid::new_v4()
            );
            self.subscriber
                .get()
                .create_subscription(Subscription {
                    name: subscription.clone(),
                    topic: name,
                    ack_deadline_seconds: 60,
                    enable_message_ordering: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            self.subscriptions.push((topic, subscription));
        }
    }

    /// One pull round over every subscription; acknowledges what it got.
    pub async fn pull(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for (topic, subscription) in &self.subscriptions {
            // Without `return_immediately` an empty pull waits for messages, and a pull cut
            // short by a client timeout would leave its messages outstanding (redelivered
            // later, as if duplicated).
            #[allow(deprecated, reason = "the emulator honours it; tests need it")]
            let request = PullRequest {
                subscription: subscription.clone(),
                max_messages: 1000,
                return_immediately: true,
            };
            let response = self
                .subscriber
                .get()
                .pull(request)
                .await
                .unwrap()
                .into_inner();
            let mut ack_ids = Vec::new();
            for m in response.received_messages {
                ack_ids.push(m.ack_id);
                let message = m.message.unwrap();
                out.push(Received {
                    topic,
                    body: serde_json::from_slice(&message.data).unwrap(),
                    attributes: message.attributes,
                    ordering_key: message.ordering_key,
                });
            }
            if !ack_ids.is_empty() {
                self.subscriber
                    .get()
                    .acknowledge(AcknowledgeRequest {
                        subscription: subscription.clone(),
                        ack_ids,
                    })
                    .await
                    .unwrap();
            }
        }
        out
    }

    /// Pulls until `done` holds for everything received so far, or `timeout` passes.
    pub async fn pull_until(
        &self,
        received: &mut Vec<Received>,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(received) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            let batch = self.pull().await;
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            received.extend(batch);
        }
    }

    /// Pulls until at least `n` messages arrived (failing the test after `timeout`), then for
    /// another quiet second, so anything extra shows; returns everything received.
    pub async fn expect(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut received = Vec::new();
        assert!(
            self.pull_until(&mut received, timeout, |r| r.len() >= n)
                .await,
            "{} of {n} messages arrived: {received:?}",
            received.len()
        );
        received.extend(self.drain(Duration::from_secs(1)).await);
        received
    }

    /// Pulls for `quiet` more and returns what came (to show nothing else arrives).
    pub async fn drain(&self, quiet: Duration) -> Vec<Received> {
        let mut extra = Vec::new();
        let _ = self.pull_until(&mut extra, quiet, |_| false).await;
        extra
    }
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

/// Commits one event in its own transaction.
pub async fn commit(db_url: &str, envelopes: &[Envelope]) {
    let mut conn = cls_storage::connect(db_url).await.unwrap();
    outbox::insert(&mut conn, envelopes).await.unwrap();
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
