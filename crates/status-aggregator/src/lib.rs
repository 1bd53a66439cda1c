//! The CLS status-aggregator (SPEC §4): stores controller status reports and keeps each
//! resource's aggregated status current — on every report, in the report's transaction, and
//! through a periodic sweep for transitions that happen with time alone. Serves
//! `cls.status.v1.StatusAggregator` to the api-gateway.

pub mod aggregator;
pub mod config;
pub mod grpc;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use cls_rpc::auth::SharedToken;
use cls_rpc::server::GrpcServer;
use cls_rpc::status::status_aggregator_server::StatusAggregatorServer;
use cls_service::admin;
use cls_storage::PgPool;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use aggregator::{Aggregator, LogPhaseChanges, PhaseChangeHook, ReconcileOnPhaseChange};
pub use config::Config;

use crate::metrics::Metrics;

/// The running service.
pub type Running = cls_service::Running<Metrics>;

/// Starts the gRPC server, the sweep and the admin server. Postgres need not be up.
pub async fn start(
    config: &Config,
    hook: Arc<dyn PhaseChangeHook>,
    grpc: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<Running> {
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let pool = cls_storage::pool(
        &config.common.database_url,
        config.common.database_max_connections,
    );
    let metrics = Metrics::new();
    let aggregator = Aggregator::new(
        pool.clone(),
        config.grace,
        config.progress_window,
        metrics.clone(),
        hook,
    );
    let mut tasks = cls_service::Tasks::new(config.common.shutdown_timeout);
    let stopped = tasks.stopped();

    tasks.spawn(sweep(
        aggregator.clone(),
        config.sweep_interval,
        config.sweep_batch,
        stopped,
    ));

    let token = SharedToken::from_option(config.common.shared_token.clone());
    let service = StatusAggregatorServer::with_interceptor(
        grpc::StatusService { aggregator },
        move |request| token.check(request),
    );
    let server = GrpcServer::new().add(service).await;
    tasks.spawn(server.run(grpc, tasks.until_stopped()));

    let router = admin::router(metrics.registry.clone(), readiness(pool), None);
    tasks.spawn(admin::run(admin_listener, router, tasks.until_stopped()));
    Ok(Running::new(grpc_addr, admin_addr, metrics, tasks))
}

fn readiness(pool: PgPool) -> admin::Readiness {
    admin::readiness(move || {
        let pool = pool.clone();
        async move { cls_storage::ready(&pool).await }
    })
}

/// Re-evaluates statuses that change with time alone, every `interval`.
async fn sweep(
    aggregator: Aggregator,
    interval: Duration,
    batch: i64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        loop {
            match aggregator
                .sweep_once(OffsetDateTime::now_utc(), batch)
                .await
            {
                // A full batch: more may be due.
                Ok(n) if n as i64 >= batch && !*stop.borrow() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "status sweep failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs the service until SIGTERM/SIGINT (the binary's body).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (grpc, admin) = config.common.bind().await?;
    let triggers = cls_rpc::client::ReconcileTriggers::new(
        config.reconcile_scheduler_url.as_deref(),
        config.peer_timeout,
        SharedToken::from_option(config.common.shared_token.clone()),
    )?;
    let running = start(
        &config,
        Arc::new(ReconcileOnPhaseChange(triggers)),
        grpc,
        admin,
    )
    .await?;
    tracing::info!(grpc = %running.grpc_addr, admin = %running.admin_addr, "status-aggregator running");
    cls_service::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
