//! Reading typed configuration from environment variables. An invalid value is an error naming
//! the variable, never a silent default; binaries exit with [`crate::EXIT_CONFIG`].

use std::collections::HashMap;
use std::time::Duration;

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

pub fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// Log output format (`LOG_FORMAT`).
pub use cls_telemetry::LogFormat;

/// The variables of [`Common`]: every internal service reads them.
pub mod env {
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    pub const GRPC_PORT: &str = "GRPC_PORT";
    pub const METRICS_PORT: &str = "METRICS_PORT";
    pub const LOG_LEVEL: &str = "LOG_LEVEL";
    pub const RUST_LOG: &str = "RUST_LOG";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const GRPC_SHARED_TOKEN: &str = "GRPC_SHARED_TOKEN";
    pub const SHUTDOWN_TIMEOUT: &str = "SHUTDOWN_TIMEOUT";
}

/// A set of variables (the process environment, or a map in tests). Blank values count as
/// unset.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a>(&'a HashMap<String, String>);

impl<'a> Vars<'a> {
    pub fn new(vars: &'a HashMap<String, String>) -> Vars<'a> {
        Vars(vars)
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<&'a str, ConfigError> {
        self.get(name).ok_or_else(|| invalid(name, "is required"))
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// A comma-separated list; blank items are skipped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(invalid(name, "must be true or false")),
            },
        }
    }

    pub fn number<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let out_of_range = || {
            invalid(
                name,
                format!(
                    "must be between {} and {} (got {raw})",
                    range.start(),
                    range.end()
                ),
            )
        };
        let value: T = raw.parse().map_err(|_| {
            // An integer too large (or negative) for the type is out of range, not "not a
            // number": `PORT=99999` must say which values are allowed.
            if raw.parse::<i128>().is_ok() {
                out_of_range()
            } else {
                invalid(name, format!("must be a number (got '{raw}')"))
            }
        })?;
        if !range.contains(&value) {
            return Err(out_of_range());
        }
        Ok(value)
    }

    /// A duration: humantime (`500ms`, `30s`, `5m`, `2h`) or bare seconds.
    pub fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse_duration(raw).ok_or_else(|| {
                invalid(
                    name,
                    format!("must be a duration such as 30s or 5m (got '{raw}')"),
                )
            }),
        }
    }

    /// Like [`Vars::duration`], but never zero.
    pub fn positive_duration(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.duration(name, default)?;
        if value.is_zero() {
            return Err(invalid(name, "must be greater than zero"));
        }
        Ok(value)
    }

    /// The `http(s)://host:port` URL of a peer service.
    pub fn url(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let url = self.string(name, default);
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url)
        } else {
            Err(invalid(
                name,
                format!("must be an http(s) URL, or off where allowed (got '{url}')"),
            ))
        }
    }

    /// A peer URL that may be turned `off` (then `None`).
    pub fn optional_url(
        &self,
        name: &'static str,
        default: &str,
    ) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
            _ => self.url(name, default).map(Some),
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the OTLP/gRPC collector (`http(s)://host:port`); unset:
    /// no tracing.
    pub fn otlp_endpoint(&self) -> Result<Option<String>, ConfigError> {
        match self.get(env::OTEL_EXPORTER_OTLP_ENDPOINT) {
            None => Ok(None),
            Some(_) => self.url(env::OTEL_EXPORTER_OTLP_ENDPOINT, "").map(Some),
        }
    }

    /// `LOG_LEVEL` (default `info`). `RUST_LOG` wins over it when set, so both are checked:
    /// a typo in either is an error, not a filter that silently logs something else.
    pub fn log_level(&self) -> Result<String, ConfigError> {
        if let Some(raw) = self.get(env::RUST_LOG) {
            cls_telemetry::check_filter(raw, false).map_err(|m| invalid(env::RUST_LOG, m))?;
        }
        let level = self.string(env::LOG_LEVEL, "info");
        cls_telemetry::check_filter(&level, true).map_err(|m| invalid(env::LOG_LEVEL, m))?;
        Ok(level)
    }

    pub fn log_format(&self, name: &'static str) -> Result<LogFormat, ConfigError> {
        match self.get(name).unwrap_or("json") {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(invalid(
                name,
                format!("must be json or text (got '{other}')"),
            )),
        }
    }
}

/// Durations: humantime strings (`500ms`, `30s`, `5m`, `2h`) or bare integers meaning seconds.
/// The settings every internal service (aggregator, scheduler, publisher) reads.
#[derive(Clone, PartialEq, Eq)]
pub struct Common {
    /// `DATABASE_URL` (required).
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS`: pool size.
    pub database_max_connections: u32,
    /// `GRPC_PORT`.
    pub grpc_port: u16,
    /// `METRICS_PORT`: the admin server (`/healthz`, `/readyz`, `/metrics`).
    pub metrics_port: u16,
    /// `LOG_LEVEL`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub log_level: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    /// `GRPC_SHARED_TOKEN`: required on incoming calls and sent on outgoing ones when set.
    pub shared_token: Option<String>,
    /// `SHUTDOWN_TIMEOUT`: how long in-flight work may finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for Common {
    // The database URL may hold a password and the token is a secret: neither is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("grpc_port", &self.grpc_port)
            .field("metrics_port", &self.metrics_port)
            .field("log_level", &self.log_level)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

impl Vars<'_> {
    /// The [`Common`] settings, with this service's default pool size and gRPC port.
    pub fn common(&self, default_pool: u32, default_grpc_port: u16) -> Result<Common, ConfigError> {
        Ok(Common {
            database_url: self.required(env::DATABASE_URL)?.to_owned(),
            database_max_connections: self.number(
                env::DATABASE_MAX_CONNECTIONS,
                default_pool,
                2..=1000,
            )?,
            grpc_port: self.number(env::GRPC_PORT, default_grpc_port, 0..=65535)?,
            metrics_port: self.number(env::METRICS_PORT, 8081, 0..=65535)?,
            log_level: self.log_level()?,
            log_format: self.log_format(env::LOG_FORMAT)?,
            otlp_endpoint: self.otlp_endpoint()?,
            shared_token: self.get(env::GRPC_SHARED_TOKEN).map(str::to_owned),
            shutdown_timeout: self.duration(env::SHUTDOWN_TIMEOUT, Duration::from_secs(30))?,
        })
    }
}

impl Common {
    pub fn log_settings(&self) -> crate::LogSettings {
        crate::LogSettings {
            level: self.log_level.clone(),
            format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }

    /// Binds the gRPC and admin ports on all interfaces.
    pub async fn bind(&self) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
        use anyhow::Context as _;
        let grpc = tokio::net::TcpListener::bind(("0.0.0.0", self.grpc_port))
            .await
            .with_context(|| format!("binding the gRPC port {}", self.grpc_port))?;
        let admin = tokio::net::TcpListener::bind(("0.0.0.0", self.metrics_port))
            .await
            .with_context(|| format!("binding the metrics port {}", self.metrics_port))?;
        Ok((grpc, admin))
    }
}

pub fn parse_duration(raw: &str) -> Option<Duration> {
    match raw.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(raw).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_errors_name_the_variable() {
        let map: HashMap<String, String> = [
            ("A", "12"),
            ("B", "500ms"),
            ("C", " "),
            ("D", "x, y,,z"),
            ("E", "yes"),
            ("F", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let vars = Vars::new(&map);
        assert_eq!(vars.number("A", 1u32, 1..=100), Ok(12));
        assert_eq!(vars.number("A", 1u32, 1..=10).unwrap_err().variable, "A");
        assert_eq!(
            vars.duration("B", Duration::ZERO),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            vars.duration("C", Duration::from_secs(3)),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(vars.required("C").unwrap_err().variable, "C");
        assert_eq!(vars.list("D"), ["x", "y", "z"]);
        assert_eq!(vars.boolean("E", false), Ok(true));
        assert_eq!(
            vars.positive_duration("F", Duration::from_secs(1))
                .unwrap_err()
                .variable,
            "F"
        );
        assert!(vars.duration("D", Duration::ZERO).is_err());
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    }

    #[test]
    fn integers_outside_the_type_are_out_of_range_not_malformed() {
        let map: HashMap<String, String> = [("P", "99999"), ("N", "-1"), ("X", "8o8o")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let vars = Vars::new(&map);
        let message = |name, range| vars.number(name, 1u16, range).unwrap_err().message;
        assert_eq!(
            message("P", 0..=65535),
            "must be between 0 and 65535 (got 99999)"
        );
        assert_eq!(message("N", 1..=100), "must be between 1 and 100 (got -1)");
        assert_eq!(message("X", 0..=65535), "must be a number (got '8o8o')");
    }

    #[test]
    fn log_filters_are_checked_and_rust_log_may_name_targets() {
        let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let level = |pairs: &[(&str, &str)]| Vars::new(&vars(pairs)).log_level();
        assert_eq!(level(&[]), Ok("info".to_owned()));
        assert_eq!(level(&[("LOG_LEVEL", "DEBUG")]), Ok("DEBUG".to_owned()));
        assert_eq!(
            level(&[("RUST_LOG", "cls_storage,h2=off"), ("LOG_LEVEL", "warn")]),
            Ok("warn".to_owned())
        );
        let err = level(&[("LOG_LEVEL", "verbose")]).unwrap_err();
        assert_eq!(err.variable, "LOG_LEVEL");
        assert!(err.message.contains("'verbose'"), "{err}");
        assert_eq!(
            level(&[("RUST_LOG", "info,foo=bar")]).unwrap_err().variable,
            "RUST_LOG"
        );
    }
}
