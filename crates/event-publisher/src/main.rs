//! `event-publisher`: config → logs and traces → relay, gRPC and admin servers → drain on SIGTERM.

use std::process::ExitCode;

use event_publisher::Config;

/// The same allocator as every CLS binary (see `api-gateway`'s `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cls_service::main(
        "event-publisher",
        env!("CARGO_PKG_VERSION"),
        Config::from_env(),
        |c| c.common.log_settings(),
        event_publisher::run,
    )
    .await
}
