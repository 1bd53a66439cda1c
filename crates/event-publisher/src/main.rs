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
    cls_service::logging::init(&config.log_level, config.log_format);
    match event_publisher::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "event-publisher failed");
            ExitCode::FAILURE
        }
    }
}
