//! A test's own Pub/Sub client on the emulator: creates the topics and an ordered
//! subscription on each, then pulls and acknowledges, so tests see exactly what controllers
//! would receive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gcloud_sdk::google::pubsub::v1::publisher_client::PublisherClient;
use gcloud_sdk::google::pubsub::v1::subscriber_client::SubscriberClient;
use gcloud_sdk::google::pubsub::v1::{AcknowledgeRequest, PullRequest, Subscription, Topic};
use gcloud_sdk::{GoogleApi, GoogleAuthMiddleware};
use uuid::Uuid;

use crate::emulator::PROJECT;

pub const TOPICS: [&str; 2] = ["cluster-events", "nodepool-events"];

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

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
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
            .expect("Pub/Sub emulator call"),
            subscriber: GoogleApi::from_function_with_credentials(
                SubscriberClient::new,
                &url,
                None,
                anonymous(),
            )
            .await
            .expect("Pub/Sub emulator call"),
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
                .expect("Pub/Sub emulator call");
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
                .expect("Pub/Sub emulator call")
                .into_inner();
            let mut ack_ids = Vec::new();
            for m in response.received_messages {
                ack_ids.push(m.ack_id);
                let message = m.message.expect("Pub/Sub emulator call");
                out.push(Received {
                    topic,
                    body: serde_json::from_slice(&message.data).expect("Pub/Sub emulator call"),
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
                    .expect("Pub/Sub emulator call");
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
