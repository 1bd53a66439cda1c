//! `reconcile-scheduler`: config → logs and traces → claim loops, purge job, gRPC and admin servers → drain on SIGTERM.

use std::process::ExitCode;

use reconcile_scheduler::Config;

/// The same allocator as every CLS binary (see `api-gateway`'s `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cls_service::main(
        "reconcile-scheduler",
        env!("CARGO_PKG_VERSION"),
        Config::from_env(),
        |c| c.common.log_settings(),
        reconcile_scheduler::run,
    )
    .await
}
