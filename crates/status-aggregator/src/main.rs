//! `status-aggregator`: config → logging → gRPC, sweep and admin servers → drain on SIGTERM.

use std::process::ExitCode;

use status_aggregator::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("status-aggregator: {e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let telemetry = match cls_service::logging::init(
        "status-aggregator",
        env!("CARGO_PKG_VERSION"),
        &config.log_level,
        config.log_format,
        config.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let code = match status_aggregator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "status-aggregator failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
