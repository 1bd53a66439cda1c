//! `reconcile-scheduler`: config → logging → claim loop, purge job, gRPC and admin servers →
//! drain on SIGTERM.

use std::process::ExitCode;

use reconcile_scheduler::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("reconcile-scheduler: {e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let telemetry = match cls_service::logging::init(
        "reconcile-scheduler",
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
    let code = match reconcile_scheduler::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reconcile-scheduler failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
