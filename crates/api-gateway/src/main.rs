//! `api-gateway`: config → logging → state → serve → drain.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use api_gateway::{AppState, Config};

#[actix_web::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("api-gateway: {e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let telemetry = match api_gateway::init_telemetry(&config) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cls_service::EXIT_CONFIG);
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "api-gateway failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}

async fn run(config: Config) -> anyhow::Result<()> {
    let state = Arc::new(AppState::build(&config).await?);
    let api = TcpListener::bind(("0.0.0.0", config.port))?;
    let admin = TcpListener::bind(("0.0.0.0", config.metrics_port))?;
    let running = api_gateway::start(&config, state, api, admin)?;
    tracing::info!(api = %running.api_addr, admin = %running.admin_addr, "api-gateway listening");
    running.wait().await
}
