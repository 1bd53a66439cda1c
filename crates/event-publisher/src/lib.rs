//! The CLS event-publisher (SPEC §5): relays the transactional outbox to Google Cloud Pub/Sub
//! — at least once, in commit order per cluster, with any number of replicas — provisions
//! the topics, prunes published rows, and serves `EventPublisher.Publish` over gRPC.
//!
//! `main.rs` loads [`Config`] and calls [`start`]; tests start the same service in-process.

pub mod config;
pub mod grpc;
pub mod metrics;
pub mod pubsub;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use cls_rpc::auth::SharedToken;
use cls_rpc::publisher::event_publisher_server::EventPublisherServer;
use cls_rpc::server::GrpcServer;
use cls_service::admin;
use cls_storage::{PgPool, outbox};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

use crate::metrics::Metrics;
use crate::pubsub::PubSub;
use crate::relay::{Backoff, RelaySettings, Shared};

/// The running service.
pub type Running = cls_service::Running<Metrics>;

/// Starts the relay, topic provisioning, pruning, the gRPC server on `grpc` and the admin
/// server on `admin`. Neither Postgres nor Pub/Sub need to be up: the service retries and
/// reports not-ready meanwhile.
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
    let pubsub = Arc::new(PubSub::new(config));
    let backoff = Backoff {
        initial: config.backoff_initial,
        max: config.backoff_max,
    };
    let shared = Arc::new(Shared::new(
        pool.clone(),
        config.common.database_url.clone(),
        pubsub.clone(),
        metrics.clone(),
        RelaySettings {
            batch_size: config.batch_size,
            poll_interval: config.poll_interval,
            rebalance_interval: config.rebalance_interval,
            backoff,
        },
    ));
    let mut tasks = cls_service::Tasks::new(config.common.shutdown_timeout);
    let stopped = tasks.stopped();

    tasks.spawn(relay::listen(shared.clone(), stopped.clone()));
    tasks.spawn(relay::lease(shared.clone(), stopped.clone()));
    tasks.spawn(provision(pubsub.clone(), backoff, stopped.clone()));
    tasks.spawn(prune(
        pool.clone(),
        metrics.clone(),
        config.retention,
        config.prune_interval,
        config.prune_batch,
        stopped,
    ));

    let token = SharedToken::from_option(config.common.shared_token.clone());
    let service = EventPublisherServer::with_interceptor(
        grpc::PublishService {
            pool: pool.clone(),
            waker: cls_storage::outbox::Waker::spawn(pool.clone()),
            metrics: metrics.clone(),
        },
        move |request| token.check(request),
    );
    let server = GrpcServer::new().add(service).await;
    tasks.spawn(server.run(grpc, tasks.until_stopped()));

    let router = admin::router(
        metrics.registry.clone(),
        readiness(pool.clone(), pubsub.clone()),
        Some(before_scrape(pool.clone(), metrics.clone())),
    );
    tasks.spawn(admin::run(admin_listener, router, tasks.until_stopped()));

    Ok(Running::new(grpc_addr, admin_addr, metrics, tasks))
}

/// Ready when Postgres answers and the Pub/Sub topic can be reached (re-provisioned if it
/// went missing, e.g. after an emulator restart).
fn readiness(pool: PgPool, pubsub: Arc<PubSub>) -> admin::Readiness {
    admin::readiness(move || {
        let pool = pool.clone();
        let pubsub = pubsub.clone();
        async move {
            cls_storage::ready(&pool).await?;
            match pubsub.check().await {
                Ok(()) => Ok(()),
                Err(pubsub::PublishError::TopicMissing(_)) => pubsub
                    .ensure_topics()
                    .await
                    .map_err(|e| format!("pubsub: {e}")),
                Err(e) => Err(format!("pubsub: {e}")),
            }
        }
    })
}

/// Samples the outbox backlog and the pool for `/metrics`.
fn before_scrape(pool: PgPool, metrics: Metrics) -> admin::BeforeScrape {
    Arc::new(move || {
        let pool = pool.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            metrics
                .db_connections
                .set(i64::from(pool.state().connections));
            let Ok(mut conn) = pool.get().await else {
                return;
            };
            if let Ok(backlog) = outbox::backlog(&mut conn).await {
                metrics.pending.set(backlog.pending);
                metrics.dead.set(backlog.dead);
                let age = backlog.oldest_pending.map_or(0.0, |t| {
                    (OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0)
                });
                metrics.oldest_pending_age.set(age);
            }
        })
    })
}

/// Creates missing topics at start-up, retrying while Pub/Sub is unreachable.
async fn provision(pubsub: Arc<PubSub>, backoff: Backoff, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0;
    loop {
        match pubsub.ensure_topics().await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cannot provision Pub/Sub topics yet"),
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(backoff.delay(attempt)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deletes published rows older than the retention, in small batches.
async fn prune(
    pool: PgPool,
    metrics: Metrics,
    retention: Duration,
    interval: Duration,
    batch: i64,
    stop: watch::Receiver<bool>,
) {
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::WEEK);
    let job = cls_service::cleanup::Cleanup {
        name: "outbox prune",
        interval,
        batch,
        removed: metrics.pruned.clone(),
    };
    cls_service::cleanup::run(job, stop, |limit| {
        let pool = pool.clone();
        async move {
            let before = OffsetDateTime::now_utc() - retention;
            let mut conn = pool.get().await?;
            Ok(outbox::prune_published(&mut conn, before, limit).await?)
        }
    })
    .await;
}

/// Runs the service until SIGTERM/SIGINT (the binary's body).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (grpc, admin) = config.common.bind().await?;
    let running = start(&config, grpc, admin).await?;
    tracing::info!(grpc = %running.grpc_addr, admin = %running.admin_addr, project = %config.project, "event-publisher running");
    cls_service::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
