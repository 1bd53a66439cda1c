//! `event-publisher`: config → logging → relay, gRPC and admin servers → drain on SIGTERM.

use std::process::ExitCode;

use event_publisher::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("event-publisher: {e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let telemetry = match cls_service::logging::init(
        "event-publisher",
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
    let code = match event_publisher::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "event-publisher failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
