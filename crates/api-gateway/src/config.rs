//! Typed configuration (SPEC §7), parsed once from the environment before anything binds.
//! An invalid value is an error naming the variable; `main` exits with code 64.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use cls_domain::identity::{DEFAULT_CONTROLLER_IDENTITY, parse_controller_identities};
pub use cls_service::config::{ConfigError, LogFormat, parse_duration};
use cls_service::config::{Vars, invalid};

use crate::rate_limit::RateLimitSettings;

/// Environment variable names, in one place.
pub mod env {
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    pub const PORT: &str = "PORT";
    pub const METRICS_PORT: &str = "METRICS_PORT";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const AUTH_MODE: &str = "AUTH_MODE";
    pub const DISABLE_AUTH: &str = "DISABLE_AUTH";
    pub const CONTROLLER_IDENTITIES: &str = "CONTROLLER_IDENTITIES";
    pub const JWT_JWKS_FILE: &str = "JWT_JWKS_FILE";
    pub const JWT_JWKS_URL: &str = "JWT_JWKS_URL";
    pub const JWT_ISSUERS: &str = "JWT_ISSUERS";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    pub const JWT_LEEWAY: &str = "JWT_LEEWAY";
    pub const CORS_ALLOWED_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
    pub const DEFAULT_CLUSTER_VERSION: &str = "DEFAULT_CLUSTER_VERSION";
    pub const DEFAULT_CHANNEL_GROUP: &str = "DEFAULT_CHANNEL_GROUP";
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    pub const SHUTDOWN_TIMEOUT: &str = "SHUTDOWN_TIMEOUT";
    pub const IDEMPOTENCY_TTL: &str = "IDEMPOTENCY_TTL";
    pub const IDEMPOTENCY_PRUNE_INTERVAL: &str = "IDEMPOTENCY_PRUNE_INTERVAL";
    pub const IDEMPOTENCY_PRUNE_BATCH: &str = "IDEMPOTENCY_PRUNE_BATCH";
    pub const HTTP_WORKERS: &str = "HTTP_WORKERS";
    pub const STATUS_AGGREGATOR_URL: &str = "STATUS_AGGREGATOR_URL";
    pub const RECONCILE_SCHEDULER_URL: &str = "RECONCILE_SCHEDULER_URL";
    pub const PEER_TIMEOUT: &str = "PEER_TIMEOUT";
    pub const GRPC_SHARED_TOKEN: &str = "GRPC_SHARED_TOKEN";
    pub const RATE_LIMIT_PER_CALLER: &str = "RATE_LIMIT_PER_CALLER";
    pub const RATE_LIMIT_BURST: &str = "RATE_LIMIT_BURST";
}

/// How the gateway learns who is calling (SPEC §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `X-User-Email`, set by a trusted gateway in front of us.
    Header,
    /// A JWT bearer token verified against a JWKS.
    Jwt(JwtConfig),
    /// Every request acts as the first controller identity (local development only).
    Disabled,
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub jwks: JwksSource,
    pub issuers: Vec<String>,
    pub audience: String,
    pub leeway: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub port: u16,
    pub metrics_port: u16,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `None`: no tracing.
    pub otlp_endpoint: Option<String>,
    pub auth: AuthMode,
    /// Normalised, in configured order; the first is the identity of `AUTH_MODE=disabled`.
    pub controller_identities: Vec<String>,
    /// Empty: CORS off. `["*"]`: any origin, without credentials.
    pub cors_allowed_origins: Vec<String>,
    pub default_cluster_version: String,
    pub default_channel_group: String,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub idempotency_ttl: Duration,
    /// How often expired idempotency records are deleted, and how many per statement.
    pub idempotency_prune_interval: Duration,
    pub idempotency_prune_batch: i64,
    pub http_workers: usize,
    /// `http://host:port` of the status-aggregator's gRPC server.
    pub status_aggregator_url: String,
    /// `http://host:port` of the reconcile-scheduler (spec-change triggers); `off`: none.
    pub reconcile_scheduler_url: Option<String>,
    /// Deadline of one call to a peer service (connecting is bounded at 1 s).
    pub peer_timeout: Duration,
    /// Sent on every internal gRPC call when set.
    pub grpc_shared_token: Option<String>,
    /// Each user's request quota; `None`: no limit.
    pub rate_limit: Option<RateLimitSettings>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    /// Reads the given variables (tests pass a map instead of mutating the environment).
    pub fn from_vars(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars::new(map);
        let get = |name: &str| vars.get(name);
        let database_url = vars.required(env::DATABASE_URL)?.to_owned();
        let controller_identities = match get(env::CONTROLLER_IDENTITIES) {
            None => vec![DEFAULT_CONTROLLER_IDENTITY.to_owned()],
            Some(raw) => parse_controller_identities(raw)
                .map_err(|message| invalid(env::CONTROLLER_IDENTITIES, message))?,
        };
        let disable_auth = vars.boolean(env::DISABLE_AUTH, false)?;
        let auth = match (get(env::AUTH_MODE), disable_auth) {
            (None | Some("disabled"), true) | (Some("disabled"), false) => AuthMode::Disabled,
            (None | Some("header"), false) => AuthMode::Header,
            (Some("jwt"), false) => AuthMode::Jwt(jwt_config(&vars)?),
            (Some(mode @ ("header" | "jwt")), true) => {
                return Err(invalid(
                    env::DISABLE_AUTH,
                    format!("DISABLE_AUTH=true contradicts AUTH_MODE={mode}"),
                ));
            }
            (Some(other), _) => {
                return Err(invalid(
                    env::AUTH_MODE,
                    format!("must be header, jwt or disabled (got '{other}')"),
                ));
            }
        };
        let cors_allowed_origins = vars.list(env::CORS_ALLOWED_ORIGINS);
        if cors_allowed_origins.len() > 1 && cors_allowed_origins.iter().any(|o| o == "*") {
            return Err(invalid(
                env::CORS_ALLOWED_ORIGINS,
                "'*' cannot be combined with explicit origins",
            ));
        }
        for origin in &cors_allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    env::CORS_ALLOWED_ORIGINS,
                    format!("'{origin}' is not an http(s) origin"),
                ));
            }
        }
        let default_channel_group = get(env::DEFAULT_CHANNEL_GROUP)
            .unwrap_or("stable")
            .to_owned();
        if !cls_domain::resource::CHANNEL_GROUPS.contains(&default_channel_group.as_str()) {
            return Err(invalid(
                env::DEFAULT_CHANNEL_GROUP,
                format!(
                    "must be one of {}",
                    cls_domain::resource::CHANNEL_GROUPS.join(", ")
                ),
            ));
        }
        let log_format = vars.log_format(env::LOG_FORMAT)?;
        Ok(Config {
            database_url,
            database_max_connections: vars.number(env::DATABASE_MAX_CONNECTIONS, 16, 1..=1000)?,
            port: vars.number(env::PORT, 8080, 0..=65535)?,
            metrics_port: vars.number(env::METRICS_PORT, 8081, 0..=65535)?,
            log_level: vars.log_level()?,
            log_format,
            otlp_endpoint: vars.otlp_endpoint()?,
            auth,
            controller_identities,
            cors_allowed_origins,
            default_cluster_version: get(env::DEFAULT_CLUSTER_VERSION)
                .unwrap_or("4.16.0")
                .to_owned(),
            default_channel_group,
            request_timeout: vars.duration(env::REQUEST_TIMEOUT, Duration::from_secs(30))?,
            shutdown_timeout: vars.duration(env::SHUTDOWN_TIMEOUT, Duration::from_secs(30))?,
            idempotency_ttl: vars.duration(env::IDEMPOTENCY_TTL, Duration::from_secs(24 * 3600))?,
            idempotency_prune_interval: vars
                .positive_duration(env::IDEMPOTENCY_PRUNE_INTERVAL, Duration::from_secs(300))?,
            idempotency_prune_batch: vars.number(
                env::IDEMPOTENCY_PRUNE_BATCH,
                1000,
                1..=100_000,
            )?,
            http_workers: vars.number(env::HTTP_WORKERS, default_workers(), 1..=256)?,
            status_aggregator_url: vars
                .url(env::STATUS_AGGREGATOR_URL, "http://127.0.0.1:50051")?,
            reconcile_scheduler_url: vars
                .optional_url(env::RECONCILE_SCHEDULER_URL, "http://127.0.0.1:50052")?,
            peer_timeout: vars.positive_duration(env::PEER_TIMEOUT, Duration::from_secs(5))?,
            grpc_shared_token: vars.get(env::GRPC_SHARED_TOKEN).map(str::to_owned),
            rate_limit: rate_limit(&vars)?,
        })
    }
}

/// `RATE_LIMIT_PER_CALLER` (requests per second; unset, `0` or `off`: no limit) and
/// `RATE_LIMIT_BURST` (default: two seconds' worth).
fn rate_limit(vars: &Vars<'_>) -> Result<Option<RateLimitSettings>, ConfigError> {
    let per_second = match vars.get(env::RATE_LIMIT_PER_CALLER) {
        Some(raw) if raw.eq_ignore_ascii_case("off") => 0,
        _ => vars.number(env::RATE_LIMIT_PER_CALLER, 0u32, 0..=1_000_000)?,
    };
    let Some(per_second) = NonZeroU32::new(per_second) else {
        if vars.get(env::RATE_LIMIT_BURST).is_some() {
            return Err(invalid(
                env::RATE_LIMIT_BURST,
                "has no effect without RATE_LIMIT_PER_CALLER",
            ));
        }
        return Ok(None);
    };
    const MAX_BURST: NonZeroU32 = NonZeroU32::new(10_000_000).expect("not zero");
    let two_seconds = per_second.saturating_add(per_second.get());
    let burst = vars.number(
        env::RATE_LIMIT_BURST,
        two_seconds,
        NonZeroU32::MIN..=MAX_BURST,
    )?;
    Ok(Some(RateLimitSettings { per_second, burst }))
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn jwt_config(vars: &Vars<'_>) -> Result<JwtConfig, ConfigError> {
    let get = |name: &str| vars.get(name);
    let jwks = match (get(env::JWT_JWKS_FILE), get(env::JWT_JWKS_URL)) {
        (Some(file), None) => JwksSource::File(PathBuf::from(file)),
        (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
            JwksSource::Url(url.to_owned())
        }
        (None, Some(_)) => return Err(invalid(env::JWT_JWKS_URL, "must be an http(s) URL")),
        (Some(_), Some(_)) => {
            return Err(invalid(
                env::JWT_JWKS_URL,
                "set JWT_JWKS_FILE or JWT_JWKS_URL, not both",
            ));
        }
        (None, None) => {
            return Err(invalid(
                env::JWT_JWKS_FILE,
                "AUTH_MODE=jwt needs JWT_JWKS_FILE or JWT_JWKS_URL",
            ));
        }
    };
    let issuers = vars.list(env::JWT_ISSUERS);
    if issuers.is_empty() {
        return Err(invalid(
            env::JWT_ISSUERS,
            "AUTH_MODE=jwt needs at least one issuer",
        ));
    }
    let audience = get(env::JWT_AUDIENCE)
        .ok_or_else(|| invalid(env::JWT_AUDIENCE, "AUTH_MODE=jwt needs an audience"))?;
    Ok(JwtConfig {
        jwks,
        issuers,
        audience: audience.to_owned(),
        leeway: vars.duration(env::JWT_LEEWAY, Duration::from_secs(30))?,
    })
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
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.port, c.metrics_port, c.database_max_connections),
            (8080, 8081, 16)
        );
        assert_eq!(c.auth, AuthMode::Header);
        assert_eq!(c.controller_identities, vec!["controller@system.local"]);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.idempotency_ttl, Duration::from_secs(86400));
        assert!(c.cors_allowed_origins.is_empty());
        assert_eq!(c.default_channel_group, "stable");
        assert_eq!(c.rate_limit, None);
    }

    #[test]
    fn rate_limits() {
        let quota = |pairs: &[(&str, &str)]| {
            config(pairs)
                .unwrap()
                .rate_limit
                .map(|q| (q.per_second.get(), q.burst.get()))
        };
        assert_eq!(quota(&[("RATE_LIMIT_PER_CALLER", "off")]), None);
        assert_eq!(quota(&[("RATE_LIMIT_PER_CALLER", "0")]), None);
        assert_eq!(quota(&[("RATE_LIMIT_PER_CALLER", "20")]), Some((20, 40)));
        assert_eq!(
            quota(&[("RATE_LIMIT_PER_CALLER", "20"), ("RATE_LIMIT_BURST", "5")]),
            Some((20, 5))
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (pairs, variable) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PORT", "70000")], "PORT"),
            (vec![("AUTH_MODE", "magic")], "AUTH_MODE"),
            (vec![("DISABLE_AUTH", "maybe")], "DISABLE_AUTH"),
            (
                vec![("AUTH_MODE", "jwt"), ("DISABLE_AUTH", "true")],
                "DISABLE_AUTH",
            ),
            (vec![("AUTH_MODE", "jwt")], "JWT_JWKS_FILE"),
            (
                vec![("AUTH_MODE", "jwt"), ("JWT_JWKS_FILE", "/k")],
                "JWT_ISSUERS",
            ),
            (
                vec![
                    ("AUTH_MODE", "jwt"),
                    ("JWT_JWKS_FILE", "/k"),
                    ("JWT_ISSUERS", "i"),
                ],
                "JWT_AUDIENCE",
            ),
            (vec![("REQUEST_TIMEOUT", "soon")], "REQUEST_TIMEOUT"),
            (
                vec![("CONTROLLER_IDENTITIES", "not-an-email")],
                "CONTROLLER_IDENTITIES",
            ),
            (
                vec![("CORS_ALLOWED_ORIGINS", "*,https://a.io")],
                "CORS_ALLOWED_ORIGINS",
            ),
            (
                vec![("DEFAULT_CHANNEL_GROUP", "nightly")],
                "DEFAULT_CHANNEL_GROUP",
            ),
            (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (vec![("LOG_LEVEL", "verbose")], "LOG_LEVEL"),
            (vec![("LOG_LEVEL", "info,cls_storage=loud")], "LOG_LEVEL"),
            (vec![("RUST_LOG", "info,foo=bar")], "RUST_LOG"),
            (
                vec![("RATE_LIMIT_PER_CALLER", "lots")],
                "RATE_LIMIT_PER_CALLER",
            ),
            (vec![("RATE_LIMIT_BURST", "10")], "RATE_LIMIT_BURST"),
            (
                vec![("RATE_LIMIT_PER_CALLER", "5"), ("RATE_LIMIT_BURST", "0")],
                "RATE_LIMIT_BURST",
            ),
        ] {
            let err = config(&pairs).unwrap_err();
            assert_eq!(err.variable, variable, "{pairs:?}: {err}");
            assert!(err.to_string().contains(variable));
        }
        assert_eq!(
            Config::from_vars(&HashMap::new()).unwrap_err().variable,
            "DATABASE_URL"
        );
        assert_eq!(
            config(&[("PORT", "70000")]).unwrap_err().message,
            "must be between 0 and 65535 (got 70000)"
        );
        let quiet = config(&[("LOG_LEVEL", "warn,cls_storage=debug")]).unwrap();
        assert_eq!(quiet.log_level, "warn,cls_storage=debug");
    }

    #[test]
    fn auth_modes_and_durations() {
        assert_eq!(
            config(&[("DISABLE_AUTH", "true")]).unwrap().auth,
            AuthMode::Disabled
        );
        assert_eq!(
            config(&[("AUTH_MODE", "disabled")]).unwrap().auth,
            AuthMode::Disabled
        );
        let jwt = config(&[
            ("AUTH_MODE", "jwt"),
            ("JWT_JWKS_URL", "https://idp.example.com/jwks.json"),
            ("JWT_ISSUERS", "https://idp.example.com, https://other"),
            ("JWT_AUDIENCE", "cls"),
            ("JWT_LEEWAY", "5"),
        ])
        .unwrap();
        let AuthMode::Jwt(jwt) = jwt.auth else {
            panic!("jwt mode")
        };
        assert_eq!(jwt.issuers.len(), 2);
        assert_eq!(jwt.leeway, Duration::from_secs(5));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    }
}
