//! The Pub/Sub side: connecting (emulator or Google), topic provisioning and publishing, with
//! errors sorted into what to do about them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cls_domain::event::Topic;
use gcloud_sdk::google::pubsub::v1::publisher_client::PublisherClient;
use gcloud_sdk::google::pubsub::v1::{
    GetTopicRequest, PublishRequest, PubsubMessage, Topic as PbTopic,
};
use gcloud_sdk::{GoogleApi, GoogleAuthMiddleware};
use tokio::sync::Mutex;
use tonic::Code;

use crate::config::{Config, PubSubTarget};

type Client = GoogleApi<PublisherClient<GoogleAuthMiddleware>>;

/// Why a publish (or a topic call) failed, by what the relay does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Pub/Sub unavailable, overloaded, timing out, or refusing our credentials: retry later.
    Transient(String),
    /// The topic does not exist (e.g. the emulator restarted): provision it, then retry.
    TopicMissing(String),
    /// The request was rejected as invalid: retrying it cannot help.
    Rejected(String),
    /// Creating something that exists (a topic another replica just created).
    AlreadyExists(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Transient(e) => write!(f, "Pub/Sub unavailable: {e}"),
            PublishError::TopicMissing(e) => write!(f, "topic missing: {e}"),
            PublishError::Rejected(e) => write!(f, "rejected by Pub/Sub: {e}"),
            PublishError::AlreadyExists(e) => write!(f, "already exists: {e}"),
        }
    }
}

impl From<tonic::Status> for PublishError {
    fn from(status: tonic::Status) -> PublishError {
        let text = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::NotFound => PublishError::TopicMissing(text),
            Code::InvalidArgument => PublishError::Rejected(text),
            Code::AlreadyExists => PublishError::AlreadyExists(text),
            _ => PublishError::Transient(text),
        }
    }
}

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Pub/Sub publisher for the two configured topics. Connects lazily and reconnects as
/// needed, so the service starts while Pub/Sub is down.
pub struct PubSub {
    target: PubSubTarget,
    cluster_topic: String,
    nodepool_topic: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
    provisioned: AtomicBool,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("target", &self.target)
            .field("cluster_topic", &self.cluster_topic)
            .field("nodepool_topic", &self.nodepool_topic)
            .finish_non_exhaustive()
    }
}

impl PubSub {
    pub fn new(config: &Config) -> PubSub {
        let topic = |id: &str| format!("projects/{}/topics/{id}", config.project);
        PubSub {
            target: config.pubsub.clone(),
            cluster_topic: topic(&config.cluster_events_topic),
            nodepool_topic: topic(&config.nodepool_events_topic),
            timeout: config.publish_timeout,
            client: Mutex::new(None),
            provisioned: AtomicBool::new(false),
        }
    }

    /// The full topic name (`projects/P/topics/T`) of a logical topic.
    pub fn topic_name(&self, topic: Topic) -> &str {
        match topic {
            Topic::ClusterEvents => &self.cluster_topic,
            Topic::NodePoolEvents => &self.nodepool_topic,
        }
    }

    async fn client(&self) -> Result<PublisherClient<GoogleAuthMiddleware>, PublishError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.get());
        }
        let connect = async {
            match &self.target {
                PubSubTarget::Emulator(host) => {
                    GoogleApi::from_function_with_credentials(
                        PublisherClient::new,
                        format!("http://{host}"),
                        None,
                        gcloud_sdk::google_cloud_auth::credentials::anonymous::Builder::new()
                            .build(),
                    )
                    .await
                }
                PubSubTarget::Google => {
                    GoogleApi::from_function(
                        PublisherClient::new,
                        "https://pubsub.googleapis.com",
                        None,
                    )
                    .await
                }
            }
        };
        let client = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| PublishError::Transient("connecting timed out".into()))?
            .map_err(|e| PublishError::Transient(format!("connecting: {e}")))?;
        let handle = client.get();
        *guard = Some(client);
        Ok(handle)
    }

    /// Whether both topics were found or created since the last time one went missing.
    pub fn provisioned(&self) -> bool {
        self.provisioned.load(Ordering::Acquire)
    }

    /// Creates the topics that do not exist; existing topics are left exactly as they are.
    pub async fn ensure_topics(&self) -> Result<(), PublishError> {
        let mut client = self.client().await?;
        for name in [&self.cluster_topic, &self.nodepool_topic] {
            let found = self
                .deadline(client.get_topic(GetTopicRequest {
                    topic: name.clone(),
                }))
                .await;
            match found {
                Ok(_) => continue,
                Err(PublishError::TopicMissing(_)) => {}
                Err(e) => return Err(e),
            }
            let created = self
                .deadline(client.create_topic(PbTopic {
                    name: name.clone(),
                    ..Default::default()
                }))
                .await;
            match created {
                Ok(_) => tracing::info!(topic = %name, "created Pub/Sub topic"),
                // Another replica created it meanwhile.
                Err(PublishError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.provisioned.store(true, Ordering::Release);
        Ok(())
    }

    /// Readiness: the cluster topic answers.
    pub async fn check(&self) -> Result<(), PublishError> {
        let mut client = self.client().await?;
        self.deadline(client.get_topic(GetTopicRequest {
            topic: self.cluster_topic.clone(),
        }))
        .await
        .map(|_| ())
    }

    /// Publishes `messages` to `topic` in one request and waits for Pub/Sub's acknowledgement.
    /// Messages with one ordering key are delivered in the order given.
    pub async fn publish(
        &self,
        topic: Topic,
        messages: Vec<PubsubMessage>,
    ) -> Result<(), PublishError> {
        let mut client = self.client().await?;
        let count = messages.len();
        let response = self
            .deadline(client.publish(PublishRequest {
                topic: self.topic_name(topic).to_owned(),
                messages,
            }))
            .await;
        if let Err(PublishError::TopicMissing(_)) = &response {
            self.provisioned.store(false, Ordering::Release);
        }
        let ids = response?.into_inner().message_ids;
        if ids.len() != count {
            return Err(PublishError::Transient(format!(
                "Pub/Sub acknowledged {} of {count} messages",
                ids.len()
            )));
        }
        Ok(())
    }

    async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, PublishError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PublishError::Transient(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Pub/Sub's documented message limits. Google's service rejects violations with
/// `INVALID_ARGUMENT`; the emulator does not check them, so they are checked here too and a
/// violating row is dead-lettered before it is sent, whichever backend runs.
pub mod limits {
    pub const MAX_DATA_BYTES: usize = 10_000_000;
    pub const MAX_ATTRIBUTES: usize = 100;
    pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
    pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
    pub const MAX_ORDERING_KEY_BYTES: usize = 1024;
}

/// The Pub/Sub message of an outbox row: the stored body (JSON text, sent as it is) and
/// attributes (a JSON object of strings), the ordering key, and `traceparent` when the change
/// was traced. An error means the row can never be published (it breaks the format or
/// Pub/Sub's limits).
pub fn message(
    body: &str,
    attributes: &str,
    ordering_key: &str,
    traceparent: Option<&str>,
) -> Result<PubsubMessage, String> {
    let data = body.as_bytes().to_vec();
    let mut attributes: HashMap<String, String> = serde_json::from_str(attributes)
        .map_err(|e| format!("attributes are not a JSON object of strings: {e}"))?;
    if let Some(traceparent) = traceparent {
        attributes
            .entry("traceparent".to_owned())
            .or_insert_with(|| traceparent.to_owned());
    }
    if data.len() > limits::MAX_DATA_BYTES {
        return Err(format!(
            "body of {} bytes exceeds Pub/Sub's limit",
            data.len()
        ));
    }
    if attributes.len() > limits::MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes exceed Pub/Sub's limit",
            attributes.len()
        ));
    }
    for (key, value) in &attributes {
        if key.is_empty() || key.len() > limits::MAX_ATTRIBUTE_KEY_BYTES || key.starts_with("goog")
        {
            return Err(format!(
                "attribute key '{key:.64}' is not allowed by Pub/Sub"
            ));
        }
        if value.len() > limits::MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(format!(
                "attribute {key} has {} bytes, more than Pub/Sub allows",
                value.len()
            ));
        }
    }
    if ordering_key.len() > limits::MAX_ORDERING_KEY_BYTES {
        return Err("ordering key exceeds Pub/Sub's limit".into());
    }
    Ok(PubsubMessage {
        data,
        attributes,
        ordering_key: ordering_key.to_owned(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_to_do() {
        assert!(matches!(
            PublishError::from(tonic::Status::unavailable("down")),
            PublishError::Transient(_)
        ));
        assert!(matches!(
            PublishError::from(tonic::Status::not_found("topic")),
            PublishError::TopicMissing(_)
        ));
        assert!(matches!(
            PublishError::from(tonic::Status::invalid_argument("too big")),
            PublishError::Rejected(_)
        ));
        assert!(matches!(
            PublishError::from(tonic::Status::permission_denied("no")),
            PublishError::Transient(_)
        ));
    }

    #[test]
    fn messages_carry_the_stored_body_attributes_and_traceparent() {
        // As Postgres prints `jsonb`: the body goes out byte for byte.
        let body = r#"{"id": "x", "generation": 2}"#;
        let attributes = r#"{"event_type": "cluster.updated"}"#;
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = message(body, attributes, "key", Some(tp)).unwrap();
        assert_eq!(m.data, body.as_bytes());
        assert_eq!(m.attributes.len(), 2);
        assert_eq!(m.attributes["event_type"], "cluster.updated");
        assert_eq!(m.attributes["traceparent"], tp);
        assert_eq!(m.ordering_key, "key");
        // A stored traceparent attribute wins over the column.
        let own = r#"{"traceparent": "mine"}"#;
        assert_eq!(
            message(body, own, "k", Some(tp)).unwrap().attributes["traceparent"],
            "mine"
        );
        let not_strings = message(body, r#"{"n": 1}"#, "k", None).unwrap_err();
        assert!(not_strings.starts_with("attributes are not a JSON object of strings"));
        assert!(message(body, "[]", "k", None).is_err());
        let long = "v".repeat(limits::MAX_ATTRIBUTE_VALUE_BYTES + 1);
        let long = format!(r#"{{"a": "{long}"}}"#);
        assert!(message(body, &long, "k", None).is_err());
        assert!(message(body, r#"{"goog-x": "v"}"#, "k", None).is_err());
        let long_key = "o".repeat(limits::MAX_ORDERING_KEY_BYTES + 1);
        assert!(message(body, attributes, &long_key, None).is_err());
    }
}
