//! Typed configuration of the reconcile-scheduler (SPEC §6, §7).

use std::collections::HashMap;
use std::time::Duration;

use cls_domain::reconcile::ReconcilePolicy;
use cls_service::config::{Common, ConfigError, Vars, invalid};

pub mod env {
    pub const EVENT_PUBLISHER_URL: &str = "EVENT_PUBLISHER_URL";
    pub const PEER_TIMEOUT: &str = "PEER_TIMEOUT";
    pub const RECONCILE_ATTENTION_INTERVAL: &str = "RECONCILE_ATTENTION_INTERVAL";
    pub const RECONCILE_STABLE_INTERVAL: &str = "RECONCILE_STABLE_INTERVAL";
    pub const RECONCILE_YOUNG_AGE: &str = "RECONCILE_YOUNG_AGE";
    pub const RECONCILE_DEBOUNCE: &str = "RECONCILE_DEBOUNCE";
    pub const RECONCILE_DEBOUNCE_MAX_WAIT: &str = "RECONCILE_DEBOUNCE_MAX_WAIT";
    pub const RECONCILE_CLAIM_TTL: &str = "RECONCILE_CLAIM_TTL";
    pub const RECONCILE_BATCH_SIZE: &str = "RECONCILE_BATCH_SIZE";
    pub const RECONCILE_WORKERS: &str = "RECONCILE_WORKERS";
    pub const RECONCILE_POLL_INTERVAL: &str = "RECONCILE_POLL_INTERVAL";
    pub const RECONCILE_RETRY_BACKOFF: &str = "RECONCILE_RETRY_BACKOFF";
    pub const RECONCILE_REPLICA_ID: &str = "RECONCILE_REPLICA_ID";
    pub const DELETED_RETENTION: &str = "DELETED_RETENTION";
    pub const PURGE_INTERVAL: &str = "PURGE_INTERVAL";
    pub const PURGE_BATCH: &str = "PURGE_BATCH";
}

/// Claim loops per `RECONCILE_WORKERS` worker: one claims and builds its next round while the
/// other holds the worker's publish slot.
pub const CLAIM_LOOPS_PER_WORKER: usize = 2;

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Database, ports, logs and traces, shared token, shutdown timeout.
    pub common: Common,
    /// `http://host:port` of the event-publisher's gRPC server.
    pub publisher_url: String,
    /// Deadline of one `Publish` call.
    pub peer_timeout: Duration,
    pub policy: ReconcilePolicy,
    pub debounce: Duration,
    pub debounce_max_wait: Duration,
    /// How long a round may wait with its rows locked before Postgres ends it (a hung replica).
    pub claim_ttl: Duration,
    pub batch_size: i64,
    /// Rounds that may publish at once in this replica; each has two claim loops, so one
    /// claims its next batch while the other publishes.
    pub workers: usize,
    pub poll_interval: Duration,
    /// How long claimed items wait after a failed publish before they are due again.
    pub retry_backoff: Duration,
    /// This replica's id (`metadata.scheduled_by`).
    pub replica_id: String,
    pub deleted_retention: Duration,
    pub purge_interval: Duration,
    pub purge_batch: i64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("publisher_url", &self.publisher_url)
            .field("policy", &self.policy)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

fn span(name: &'static str, d: Duration) -> Result<time::Duration, ConfigError> {
    time::Duration::try_from(d).map_err(|_| invalid(name, "is too long"))
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars::new(map);
        let attention =
            vars.positive_duration(env::RECONCILE_ATTENTION_INTERVAL, Duration::from_secs(30))?;
        let stable =
            vars.positive_duration(env::RECONCILE_STABLE_INTERVAL, Duration::from_secs(300))?;
        let young = vars.duration(env::RECONCILE_YOUNG_AGE, Duration::from_secs(2 * 3600))?;
        let debounce = vars.duration(env::RECONCILE_DEBOUNCE, Duration::from_secs(2))?;
        let debounce_max_wait = vars.duration(
            env::RECONCILE_DEBOUNCE_MAX_WAIT,
            (debounce * 10).max(debounce),
        )?;
        if debounce_max_wait < debounce {
            return Err(invalid(
                env::RECONCILE_DEBOUNCE_MAX_WAIT,
                "must be at least RECONCILE_DEBOUNCE",
            ));
        }
        let peer_timeout = vars.positive_duration(env::PEER_TIMEOUT, Duration::from_secs(5))?;
        let claim_ttl =
            vars.positive_duration(env::RECONCILE_CLAIM_TTL, Duration::from_secs(30))?;
        if claim_ttl <= peer_timeout {
            return Err(invalid(
                env::RECONCILE_CLAIM_TTL,
                "must be longer than PEER_TIMEOUT (a round keeps its rows through its publish call)",
            ));
        }
        let replica_id = match vars.get(env::RECONCILE_REPLICA_ID) {
            Some(id) => id.to_owned(),
            // Pod name (Kubernetes sets HOSTNAME) plus a per-process suffix: unique even when
            // a pod restarts while its old claims are still held.
            None => format!(
                "{}-{}",
                vars.get("HOSTNAME").unwrap_or("reconcile-scheduler"),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        };
        let common = vars.common(8, 50052)?;
        let workers: usize = vars.number(env::RECONCILE_WORKERS, 2, 1..=16)?;
        // Each worker's two claim loops hold a connection each for their rounds; triggers,
        // stats and the purge need at least one more.
        if CLAIM_LOOPS_PER_WORKER * workers
            >= usize::try_from(common.database_max_connections).unwrap_or(usize::MAX)
        {
            return Err(invalid(
                env::RECONCILE_WORKERS,
                "must be less than half of DATABASE_MAX_CONNECTIONS (each worker's two claim loops hold a connection each for their rounds; triggers need one too)",
            ));
        }
        Ok(Config {
            common,
            publisher_url: vars.url(env::EVENT_PUBLISHER_URL, "http://127.0.0.1:50053")?,
            peer_timeout,
            policy: ReconcilePolicy {
                attention_interval: span(env::RECONCILE_ATTENTION_INTERVAL, attention)?,
                stable_interval: span(env::RECONCILE_STABLE_INTERVAL, stable)?,
                young_age: span(env::RECONCILE_YOUNG_AGE, young)?,
            },
            debounce,
            debounce_max_wait,
            claim_ttl,
            batch_size: vars.number(env::RECONCILE_BATCH_SIZE, 500, 1..=1000)?,
            workers,
            poll_interval: vars
                .positive_duration(env::RECONCILE_POLL_INTERVAL, Duration::from_secs(1))?,
            retry_backoff: vars
                .positive_duration(env::RECONCILE_RETRY_BACKOFF, Duration::from_secs(2))?,
            replica_id,
            deleted_retention: vars
                .positive_duration(env::DELETED_RETENTION, Duration::from_secs(7 * 24 * 3600))?,
            purge_interval: vars.positive_duration(env::PURGE_INTERVAL, Duration::from_secs(60))?,
            purge_batch: vars.number(env::PURGE_BATCH, 500, 1..=10_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map = HashMap::from([("DATABASE_URL".to_owned(), "postgres://x/y".to_owned())]);
        for (k, v) in extra {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_vars(&vars(&[("HOSTNAME", "sched-0")])).unwrap();
        assert_eq!(c.policy, ReconcilePolicy::default());
        assert_eq!(
            (c.common.grpc_port, c.debounce, c.debounce_max_wait),
            (50052, Duration::from_secs(2), Duration::from_secs(20))
        );
        assert!(c.replica_id.starts_with("sched-0-"), "{}", c.replica_id);
        assert_eq!(
            c.deleted_retention,
            Duration::from_secs(7 * 24 * 3600),
            "DELETED_RETENTION"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("RECONCILE_ATTENTION_INTERVAL", "soon"),
            ("RECONCILE_STABLE_INTERVAL", "0"),
            ("RECONCILE_BATCH_SIZE", "5000"),
            ("EVENT_PUBLISHER_URL", "127.0.0.1:50053"),
            ("RECONCILE_CLAIM_TTL", "3s"),
            ("RECONCILE_DEBOUNCE_MAX_WAIT", "1s"),
            // The default pool has 8 connections: two loops of four workers need them all.
            ("RECONCILE_WORKERS", "4"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
        let fits = vars(&[
            ("RECONCILE_WORKERS", "4"),
            ("DATABASE_MAX_CONNECTIONS", "9"),
        ]);
        assert_eq!(Config::from_vars(&fits).unwrap().workers, 4);
    }
}
