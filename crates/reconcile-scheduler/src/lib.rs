//! The CLS reconcile-scheduler (SPEC §6): keeps every live cluster and nodepool on a due-time
//! schedule and emits `cluster.reconcile` / `nodepool.reconcile` events through the
//! event-publisher — periodically by policy, and reactively (debounced) after spec and status
//! changes. Any number of replicas; each due item is emitted by one.

pub mod config;
pub mod grpc;
pub mod metrics;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use cls_rpc::auth::SharedToken;
use cls_rpc::publisher::event_publisher_client::EventPublisherClient;
use cls_rpc::scheduler::reconcile_scheduler_server::ReconcileSchedulerServer;
use cls_rpc::server::GrpcServer;
use cls_service::admin;
use cls_storage::{PgPool, schedule};
use tokio::net::TcpListener;

pub use config::Config;
pub use scheduler::Scheduler;

use crate::metrics::Metrics;

/// The running service, and the replica id it stamps on its claims and events.
#[derive(Debug)]
pub struct Running {
    pub service: cls_service::Running<Metrics>,
    pub replica_id: String,
}

impl Running {
    /// Stops accepting calls, finishes the current round and in-flight calls, and returns.
    pub async fn shutdown(self) {
        self.service.shutdown().await;
    }

    /// Stops every task at once, as if the process died (tests): claims stay until they
    /// expire.
    pub fn abort(self) {
        self.service.abort();
    }
}

fn duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Starts the claim loop, the purge job, the gRPC server and the admin server. Neither
/// Postgres nor the event-publisher need be up.
pub async fn start(
    config: &Config,
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
    let token = SharedToken::from_option(config.common.shared_token.clone());
    let publisher = EventPublisherClient::with_interceptor(
        cls_rpc::client::channel(&config.publisher_url, config.peer_timeout)?,
        token.clone(),
    );
    let mut tasks = cls_service::Tasks::new(config.common.shutdown_timeout);
    let stopped = tasks.stopped();

    let scheduler = Scheduler {
        pool: pool.clone(),
        publisher,
        metrics: metrics.clone(),
        policy: config.policy,
        replica: config.replica_id.clone(),
        claim_ttl: duration(config.claim_ttl),
        batch_size: config.batch_size,
        retry_backoff: duration(config.retry_backoff),
        publish_slots: Arc::new(tokio::sync::Semaphore::new(config.workers)),
    };
    // Two claim loops per worker, `workers` publish slots: while one round publishes, the
    // next is already claimed and its events built, so the publisher is kept busy without
    // more calls in flight than workers. Claims keep the loops apart as they keep replicas
    // apart.
    for _ in 0..config::CLAIM_LOOPS_PER_WORKER * config.workers {
        tasks.spawn(scheduler::claim_loop(
            scheduler.clone(),
            config.poll_interval,
            config.retry_backoff,
            stopped.clone(),
        ));
    }
    tasks.spawn(scheduler::purge_loop(
        pool.clone(),
        metrics.clone(),
        duration(config.deleted_retention),
        config.purge_interval,
        config.purge_batch,
        stopped,
    ));

    let service = ReconcileSchedulerServer::with_interceptor(
        grpc::SchedulerService {
            pool: pool.clone(),
            metrics: metrics.clone(),
            debounce: duration(config.debounce),
            debounce_max_wait: duration(config.debounce_max_wait),
            overdue_after: config.policy.attention_interval,
            replica: config.replica_id.clone(),
        },
        move |request| token.check(request),
    );
    let server = GrpcServer::new().add(service).await;
    tasks.spawn(server.run(grpc, tasks.until_stopped()));

    let router = admin::router(
        metrics.registry.clone(),
        readiness(pool.clone()),
        Some(before_scrape(
            pool,
            metrics.clone(),
            config.policy.attention_interval,
        )),
    );
    tasks.spawn(admin::run(admin_listener, router, tasks.until_stopped()));
    Ok(Running {
        service: cls_service::Running::new(grpc_addr, admin_addr, metrics, tasks),
        replica_id: config.replica_id.clone(),
    })
}

/// Ready when the schedule database answers. The event-publisher is not part of it: while it
/// is down the claim loop retries and nothing is lost, and restarting the scheduler would not
/// help.
fn readiness(pool: PgPool) -> admin::Readiness {
    admin::readiness(move || {
        let pool = pool.clone();
        async move { cls_storage::ready(&pool).await }
    })
}

/// Refreshes the schedule gauges before each scrape.
fn before_scrape(
    pool: PgPool,
    metrics: Metrics,
    overdue_after: time::Duration,
) -> admin::BeforeScrape {
    Arc::new(move || {
        let pool = pool.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let Ok(mut conn) = pool.get().await else {
                return;
            };
            let now = time::OffsetDateTime::now_utc();
            if let Ok(stats) = schedule::stats(&mut conn, now, overdue_after).await {
                metrics.scheduled.set(stats.scheduled);
                metrics.due.set(stats.due);
                metrics.overdue.set(stats.overdue);
                metrics.oldest_due.set(stats.oldest_due_seconds);
            }
        })
    })
}

/// Runs the service until SIGTERM/SIGINT (the binary's body).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (grpc, admin) = config.common.bind().await?;
    let running = start(&config, grpc, admin).await?;
    tracing::info!(grpc = %running.service.grpc_addr, admin = %running.service.admin_addr, replica = %running.replica_id, "reconcile-scheduler running");
    cls_service::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
