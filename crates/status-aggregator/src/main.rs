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
    cls_service::logging::init(&config.log_level, config.log_format);
    match status_aggregator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "status-aggregator failed");
            ExitCode::FAILURE
        }
    }
}
