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

use anyhow::Context as _;
use cls_rpc::auth::SharedToken;
use cls_rpc::server::GrpcServer;
use cls_rpc::status::status_aggregator_server::StatusAggregatorServer;
use cls_service::admin;
use cls_storage::PgPool;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use aggregator::{Aggregator, LogPhaseChanges, PhaseChangeHook, ReconcileOnPhaseChange};
pub use config::Config;

use crate::metrics::Metrics;

/// The running service.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Running {
    /// Stops accepting calls, finishes in-flight ones and the current sweep, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(self.shutdown_timeout, all)
            .await
            .is_err()
        {
            tracing::warn!("shutdown timed out");
        }
    }

    /// Stops every task at once, as if the process died (tests).
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the gRPC server, the sweep and the admin server. Postgres need not be up.
pub async fn start(
    config: &Config,
    hook: Arc<dyn PhaseChangeHook>,
    grpc: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<Running> {
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let pool = cls_storage::pool(&config.database_url, config.database_max_connections);
    let metrics = Metrics::new();
    let aggregator = Aggregator::new(
        pool.clone(),
        config.grace,
        config.progress_window,
        metrics.clone(),
        hook,
    );
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut tasks = vec![tokio::spawn(sweep(
        aggregator.clone(),
        config.sweep_interval,
        config.sweep_batch,
        stopped.clone(),
    ))];

    let token = SharedToken::from_option(config.shared_token.clone());
    let service = StatusAggregatorServer::with_interceptor(
        grpc::StatusService { aggregator },
        move |request| token.check(request),
    );
    let server = GrpcServer::new().add(service).await;
    let grpc_stop = until_stopped(stopped.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.serve(grpc, grpc_stop).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));

    let router = admin::router(metrics.registry.clone(), readiness(pool), None);
    let admin_stop = until_stopped(stopped);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = admin::serve(admin_listener, router, admin_stop).await {
            tracing::error!(error = %e, "admin server failed");
        }
    }));
    Ok(Running {
        grpc_addr,
        admin_addr,
        metrics,
        stop,
        tasks,
        shutdown_timeout: config.shutdown_timeout,
    })
}

fn readiness(pool: PgPool) -> admin::Readiness {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(|e| format!("database: {e}"))?;
            cls_storage::ping(&mut conn)
                .await
                .map_err(|e| format!("database: {e}"))
        })
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
    let grpc = TcpListener::bind(("0.0.0.0", config.grpc_port))
        .await
        .with_context(|| format!("binding the gRPC port {}", config.grpc_port))?;
    let admin = TcpListener::bind(("0.0.0.0", config.metrics_port))
        .await
        .with_context(|| format!("binding the metrics port {}", config.metrics_port))?;
    let triggers = cls_rpc::client::ReconcileTriggers::new(
        config.reconcile_scheduler_url.as_deref(),
        config.peer_timeout,
        SharedToken::from_option(config.shared_token.clone()),
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
