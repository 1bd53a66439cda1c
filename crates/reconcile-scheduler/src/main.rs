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
    cls_service::logging::init(&config.log_level, config.log_format);
    match reconcile_scheduler::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reconcile-scheduler failed");
            ExitCode::FAILURE
        }
    }
}
