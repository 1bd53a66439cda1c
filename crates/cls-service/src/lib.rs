//! What every CLS binary shares and nothing else: typed configuration from the environment
//! (SPEC §7), logging, the admin HTTP server (`/healthz`, `/readyz`, `/metrics`, SPEC §8) and
//! the shutdown signal. No domain logic and no SQL.

pub mod admin;
pub mod cleanup;
pub mod config;
pub mod logging;
pub mod tasks;

use std::future::Future;
use std::process::ExitCode;

pub use tasks::{Running, Tasks};

/// How a binary logs and traces (from its configuration).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: config::LogFormat,
    pub otlp_endpoint: Option<String>,
}

/// The body of every service binary: a configuration error exits 64 naming the variable;
/// then logs and traces are set up, `run` serves until it returns (SIGTERM), and exported
/// spans are flushed.
pub async fn main<C, F>(
    service: &'static str,
    version: &'static str,
    config: Result<C, config::ConfigError>,
    log: impl FnOnce(&C) -> LogSettings,
    run: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{service}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = log(&config);
    let telemetry = match logging::init(
        service,
        version,
        &settings.level,
        settings.format,
        settings.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{service} failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Exit code for a configuration error (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
