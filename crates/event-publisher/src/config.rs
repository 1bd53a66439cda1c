//! Typed configuration of the event-publisher (SPEC §7), parsed once from the environment.

use std::collections::HashMap;
use std::time::Duration;

use cls_service::config::{Common, ConfigError, Vars, invalid};

/// Environment variable names.
pub mod env {
    pub const GOOGLE_CLOUD_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
    pub const PUBSUB_EMULATOR_HOST: &str = "PUBSUB_EMULATOR_HOST";
    pub const PUBSUB_CLUSTER_EVENTS_TOPIC: &str = "PUBSUB_CLUSTER_EVENTS_TOPIC";
    pub const PUBSUB_NODEPOOL_EVENTS_TOPIC: &str = "PUBSUB_NODEPOOL_EVENTS_TOPIC";
    pub const PUBLISH_TIMEOUT: &str = "PUBLISH_TIMEOUT";
    pub const PUBLISH_BACKOFF_INITIAL: &str = "PUBLISH_BACKOFF_INITIAL";
    pub const PUBLISH_BACKOFF_MAX: &str = "PUBLISH_BACKOFF_MAX";
    pub const OUTBOX_BATCH_SIZE: &str = "OUTBOX_BATCH_SIZE";
    pub const OUTBOX_POLL_INTERVAL: &str = "OUTBOX_POLL_INTERVAL";
    pub const OUTBOX_REBALANCE_INTERVAL: &str = "OUTBOX_REBALANCE_INTERVAL";
    pub const OUTBOX_RETENTION: &str = "OUTBOX_RETENTION";
    pub const OUTBOX_PRUNE_INTERVAL: &str = "OUTBOX_PRUNE_INTERVAL";
    pub const OUTBOX_PRUNE_BATCH: &str = "OUTBOX_PRUNE_BATCH";
}

/// Where Pub/Sub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubTarget {
    /// The emulator at `host:port`: plain HTTP/2, no credentials.
    Emulator(String),
    /// Google Cloud Pub/Sub with the environment's default credentials.
    Google,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Database, ports, logs and traces, shared token, shutdown timeout.
    pub common: Common,
    pub project: String,
    pub pubsub: PubSubTarget,
    pub cluster_events_topic: String,
    pub nodepool_events_topic: String,
    /// Deadline of one publish call.
    pub publish_timeout: Duration,
    /// Backoff after a failed publish: starts here, doubles, capped at `backoff_max`, jittered.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Rows read (and published) per round per shard; at most 1000 (a Pub/Sub request's limit).
    pub batch_size: i64,
    /// The safety-net poll when no notification arrives.
    pub poll_interval: Duration,
    /// How often a replica re-balances shard leases with the others.
    pub rebalance_interval: Duration,
    /// Published rows older than this are deleted.
    pub retention: Duration,
    pub prune_interval: Duration,
    pub prune_batch: i64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password and the token is a secret: neither is printed.
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("project", &self.project)
            .field("pubsub", &self.pubsub)
            .field("cluster_events_topic", &self.cluster_events_topic)
            .field("nodepool_events_topic", &self.nodepool_events_topic)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// The emulator's project when none is configured.
pub const LOCAL_PROJECT: &str = "cls-local";

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars::new(map);
        let pubsub = match vars.get(env::PUBSUB_EMULATOR_HOST) {
            Some(host) if host.contains("://") || !host.contains(':') => {
                return Err(invalid(
                    env::PUBSUB_EMULATOR_HOST,
                    format!("must be host:port (got '{host}')"),
                ));
            }
            Some(host) => PubSubTarget::Emulator(host.to_owned()),
            None => PubSubTarget::Google,
        };
        let project = match (&pubsub, vars.get(env::GOOGLE_CLOUD_PROJECT)) {
            (_, Some(project)) => project.to_owned(),
            (PubSubTarget::Emulator(_), None) => LOCAL_PROJECT.to_owned(),
            (PubSubTarget::Google, None) => {
                return Err(invalid(
                    env::GOOGLE_CLOUD_PROJECT,
                    "is required unless PUBSUB_EMULATOR_HOST is set",
                ));
            }
        };
        if !valid_resource_name(&project) {
            return Err(invalid(
                env::GOOGLE_CLOUD_PROJECT,
                format!("'{project}' is not a project id"),
            ));
        }
        let topic = |name: &'static str, default: &str| {
            let topic = vars.string(name, default);
            if valid_resource_name(&topic) && topic.len() >= 3 {
                Ok(topic)
            } else {
                Err(invalid(
                    name,
                    format!("'{topic}' is not a valid Pub/Sub topic id"),
                ))
            }
        };
        let cluster_events_topic = topic(env::PUBSUB_CLUSTER_EVENTS_TOPIC, "cluster-events")?;
        let nodepool_events_topic = topic(env::PUBSUB_NODEPOOL_EVENTS_TOPIC, "nodepool-events")?;
        if cluster_events_topic == nodepool_events_topic {
            return Err(invalid(
                env::PUBSUB_NODEPOOL_EVENTS_TOPIC,
                "must differ from PUBSUB_CLUSTER_EVENTS_TOPIC",
            ));
        }
        let backoff_initial =
            vars.positive_duration(env::PUBLISH_BACKOFF_INITIAL, Duration::from_millis(200))?;
        let backoff_max =
            vars.positive_duration(env::PUBLISH_BACKOFF_MAX, Duration::from_secs(30))?;
        if backoff_max < backoff_initial {
            return Err(invalid(
                env::PUBLISH_BACKOFF_MAX,
                "must not be shorter than PUBLISH_BACKOFF_INITIAL",
            ));
        }
        Ok(Config {
            common: vars.common(8, 50053)?,
            project,
            pubsub,
            cluster_events_topic,
            nodepool_events_topic,
            publish_timeout: vars
                .positive_duration(env::PUBLISH_TIMEOUT, Duration::from_secs(10))?,
            backoff_initial,
            backoff_max,
            batch_size: vars.number(env::OUTBOX_BATCH_SIZE, 1000, 1..=1000)?,
            poll_interval: vars
                .positive_duration(env::OUTBOX_POLL_INTERVAL, Duration::from_secs(1))?,
            rebalance_interval: vars
                .positive_duration(env::OUTBOX_REBALANCE_INTERVAL, Duration::from_secs(2))?,
            retention: vars.duration(env::OUTBOX_RETENTION, Duration::from_secs(7 * 24 * 3600))?,
            prune_interval: vars
                .positive_duration(env::OUTBOX_PRUNE_INTERVAL, Duration::from_secs(60))?,
            prune_batch: vars.number(env::OUTBOX_PRUNE_BATCH, 1000, 1..=100_000)?,
        })
    }
}

/// Pub/Sub project and topic ids: letters, digits and `-_.~+%`, starting with a letter.
fn valid_resource_name(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
        && !name.starts_with("goog")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars: HashMap<String, String> =
            HashMap::from([("DATABASE_URL".into(), "postgres://x/y".into())]);
        for (k, v) in pairs {
            vars.insert((*k).into(), (*v).into());
        }
        Config::from_vars(&vars)
    }

    #[test]
    fn defaults_with_the_emulator() {
        let c = config(&[("PUBSUB_EMULATOR_HOST", "localhost:8085")]).unwrap();
        assert_eq!(c.pubsub, PubSubTarget::Emulator("localhost:8085".into()));
        assert_eq!(c.project, LOCAL_PROJECT);
        assert_eq!(
            (
                c.cluster_events_topic.as_str(),
                c.nodepool_events_topic.as_str()
            ),
            ("cluster-events", "nodepool-events")
        );
        assert_eq!(
            (c.common.grpc_port, c.common.metrics_port, c.batch_size),
            (50053, 8081, 1000)
        );
        assert_eq!(c.retention, Duration::from_secs(604_800));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (pairs, variable) in [
            (vec![], "GOOGLE_CLOUD_PROJECT"),
            (
                vec![("PUBSUB_EMULATOR_HOST", "http://x:1")],
                "PUBSUB_EMULATOR_HOST",
            ),
            (
                vec![
                    ("GOOGLE_CLOUD_PROJECT", "p"),
                    ("PUBSUB_CLUSTER_EVENTS_TOPIC", "goog-x"),
                ],
                "PUBSUB_CLUSTER_EVENTS_TOPIC",
            ),
            (
                vec![
                    ("GOOGLE_CLOUD_PROJECT", "p"),
                    ("PUBSUB_NODEPOOL_EVENTS_TOPIC", "cluster-events"),
                ],
                "PUBSUB_NODEPOOL_EVENTS_TOPIC",
            ),
            (
                vec![("GOOGLE_CLOUD_PROJECT", "p"), ("OUTBOX_BATCH_SIZE", "5000")],
                "OUTBOX_BATCH_SIZE",
            ),
            (
                vec![("GOOGLE_CLOUD_PROJECT", "p"), ("OUTBOX_POLL_INTERVAL", "0")],
                "OUTBOX_POLL_INTERVAL",
            ),
            (
                vec![
                    ("GOOGLE_CLOUD_PROJECT", "p"),
                    ("PUBLISH_BACKOFF_INITIAL", "10s"),
                    ("PUBLISH_BACKOFF_MAX", "1s"),
                ],
                "PUBLISH_BACKOFF_MAX",
            ),
        ] {
            let err = config(&pairs).unwrap_err();
            assert_eq!(err.variable, variable, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = config(&[
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("GRPC_SHARED_TOKEN", "hunter2"),
            ("DATABASE_URL", "postgres://u:pw@h/d"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("pw@"));
    }
}
