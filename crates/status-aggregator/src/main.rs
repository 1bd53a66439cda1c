//! `status-aggregator`: config → logs and traces → gRPC, sweep and admin servers → drain on SIGTERM.

use std::process::ExitCode;

use status_aggregator::Config;

/// The same allocator as every CLS binary (see `api-gateway`'s `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cls_service::main(
        "status-aggregator",
        env!("CARGO_PKG_VERSION"),
        Config::from_env(),
        |c| c.common.log_settings(),
        status_aggregator::run,
    )
    .await
}
