//! Typed configuration of the status-aggregator (SPEC §7).

use std::collections::HashMap;
use std::time::Duration;

use cls_service::config::{Common, ConfigError, Vars};

pub mod env {
    pub const STATUS_GRACE_PERIOD: &str = "STATUS_GRACE_PERIOD";
    pub const STATUS_PROGRESS_WINDOW: &str = "STATUS_PROGRESS_WINDOW";
    pub const STATUS_SWEEP_INTERVAL: &str = "STATUS_SWEEP_INTERVAL";
    pub const STATUS_SWEEP_BATCH: &str = "STATUS_SWEEP_BATCH";
    pub const RECONCILE_SCHEDULER_URL: &str = "RECONCILE_SCHEDULER_URL";
    pub const PEER_TIMEOUT: &str = "PEER_TIMEOUT";
}

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Database, ports, logs and traces, shared token, shutdown timeout.
    pub common: Common,
    /// How long controllers may work on a generation before silence means failure.
    pub grace: Duration,
    /// Past the grace period, a report this recent still counts as progress.
    pub progress_window: Duration,
    /// How often the sweep looks for statuses that change with time alone.
    pub sweep_interval: Duration,
    pub sweep_batch: i64,
    /// Where phase changes send `status_change` reconcile triggers; `off`: nowhere.
    pub reconcile_scheduler_url: Option<String>,
    /// Deadline of one trigger call.
    pub peer_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("grace", &self.grace)
            .field("sweep_interval", &self.sweep_interval)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars::new(map);
        Ok(Config {
            common: vars.common(16, 50051)?,
            grace: vars
                .positive_duration(env::STATUS_GRACE_PERIOD, Duration::from_secs(30 * 60))?,
            progress_window: vars
                .positive_duration(env::STATUS_PROGRESS_WINDOW, Duration::from_secs(5 * 60))?,
            sweep_interval: vars
                .positive_duration(env::STATUS_SWEEP_INTERVAL, Duration::from_secs(10))?,
            sweep_batch: vars.number(env::STATUS_SWEEP_BATCH, 200, 1..=10_000)?,
            reconcile_scheduler_url: vars
                .optional_url(env::RECONCILE_SCHEDULER_URL, "http://127.0.0.1:50052")?,
            peer_timeout: vars.positive_duration(env::PEER_TIMEOUT, Duration::from_secs(5))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let mut vars = HashMap::from([("DATABASE_URL".to_owned(), "postgres://x/y".to_owned())]);
        let c = Config::from_vars(&vars).unwrap();
        assert_eq!(
            (c.common.grpc_port, c.grace),
            (50051, Duration::from_secs(1800))
        );
        vars.insert("STATUS_GRACE_PERIOD".into(), "soon".into());
        assert_eq!(
            Config::from_vars(&vars).unwrap_err().variable,
            "STATUS_GRACE_PERIOD"
        );
    }
}
