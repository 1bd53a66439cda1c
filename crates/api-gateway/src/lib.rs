//! The CLS public REST API (SPEC §2, §3): identity, access control, validation, optimistic
//! concurrency, idempotency, and transactional events (every lifecycle change writes its
//! outbox row in the same transaction).
//!
//! `main.rs` only loads [`Config`], builds [`AppState`] and calls [`start`]; tests start the
//! same server in-process on ephemeral ports.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pools;
pub mod rate_limit;
pub mod request_id;
mod routes;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware::from_fn, web};
use anyhow::Context as _;
use cls_storage::PgPool;

pub use crate::pools::{PerWorker, WorkerPools};

pub use config::Config;

use crate::auth::Authenticator;
use crate::metrics::Metrics;

/// Everything a request handler needs, shared by all workers.
#[derive(Debug)]
pub struct AppState {
    /// Postgres connections: one pool per HTTP worker, one shared by other threads
    /// ([`AppState::pool`]).
    pub pools: WorkerPools,
    pub auth: Authenticator,
    /// Each user's request quota (`RATE_LIMIT_PER_CALLER`), checked as it authenticates.
    pub rate_limit: rate_limit::RateLimiter,
    pub metrics: Metrics,
    pub default_cluster_version: String,
    pub default_channel_group: String,
    pub request_timeout: Duration,
    pub idempotency_ttl: time::Duration,
    /// The status-aggregator (connected lazily: the gateway starts without it), a channel per
    /// HTTP worker ([`AppState::status`]).
    pub status: PerWorker<StatusClient>,
    /// Whether the status-aggregator is serving, for `/readyz`.
    pub status_health: cls_rpc::client::PeerHealth,
    /// Reactive reconcile triggers to the reconcile-scheduler (fire-and-forget).
    pub reconcile: cls_rpc::client::ReconcileTriggers,
    /// Wakes the event-publisher's relay after a change that wrote events has committed, off
    /// the request's path, on a connection of the shared pool.
    pub waker: cls_storage::outbox::Waker,
}

/// The gRPC client of the status-aggregator.
pub type StatusClient = cls_rpc::status::status_aggregator_client::StatusAggregatorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        cls_rpc::auth::SharedToken,
    >,
>;

impl AppState {
    /// Builds the state: the pools (lazy: start-up does not need Postgres up) and the
    /// authenticator (in jwt mode the JWKS must load). Call inside the Tokio runtime that is to
    /// run the relay's waker.
    pub async fn build(config: &Config) -> anyhow::Result<AppState> {
        let pools = WorkerPools::new(
            &config.database_url,
            config.database_max_connections,
            config.http_workers,
        );
        let auth = Authenticator::new(&config.auth, config.controller_identities.clone()).await?;
        let token = cls_rpc::auth::SharedToken::from_option(config.grpc_shared_token.clone());
        let endpoint =
            cls_rpc::client::endpoint(&config.status_aggregator_url, config.peer_timeout)?;
        let status_health = cls_rpc::client::PeerHealth::new(
            &endpoint,
            cls_rpc::status::status_aggregator_server::SERVICE_NAME,
        );
        let status_token = token.clone();
        let status_client = move || {
            cls_rpc::status::status_aggregator_client::StatusAggregatorClient::with_interceptor(
                endpoint.connect_lazy(),
                status_token.clone(),
            )
        };
        let status = PerWorker::new(status_client(), status_client);
        let reconcile = cls_rpc::client::ReconcileTriggers::new(
            config.reconcile_scheduler_url.as_deref(),
            config.peer_timeout,
            token,
        )?;
        // On this thread `get` is the shared pool.
        let waker = cls_storage::outbox::Waker::spawn(pools.get().clone());
        Ok(AppState {
            pools,
            auth,
            rate_limit: rate_limit::RateLimiter::new(config.rate_limit),
            metrics: Metrics::new(),
            default_cluster_version: config.default_cluster_version.clone(),
            default_channel_group: config.default_channel_group.clone(),
            request_timeout: config.request_timeout,
            idempotency_ttl: time::Duration::try_from(config.idempotency_ttl)
                .unwrap_or(time::Duration::DAY),
            status,
            status_health,
            reconcile,
            waker,
        })
    }

    /// A client of the status-aggregator on the calling thread's channel: its HTTP worker's,
    /// else the shared one.
    pub fn status(&self) -> StatusClient {
        self.status.get().clone()
    }

    /// The calling thread's connection pool: its HTTP worker's, else the shared one.
    pub fn pool(&self) -> &PgPool {
        self.pools.get()
    }

    pub(crate) fn release_defaults(&self) -> cls_domain::validate::ReleaseDefaults<'_> {
        cls_domain::validate::ReleaseDefaults {
            version: &self.default_cluster_version,
            channel_group: &self.default_channel_group,
        }
    }
}

/// The running API and admin servers, and the gateway's clean-up of expired idempotency
/// records.
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    api: Server,
    admin: Server,
    tasks: cls_service::Tasks,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("api_addr", &self.api_addr)
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

impl Running {
    pub fn handles(&self) -> (ServerHandle, ServerHandle) {
        (self.api.handle(), self.admin.handle())
    }

    /// Serves until both servers stop (SIGTERM/SIGINT drain in-flight requests first).
    pub async fn wait(self) -> anyhow::Result<()> {
        let (api, admin) = tokio::join!(self.api, self.admin);
        self.tasks.shutdown().await;
        api.context("API server")?;
        admin.context("admin server")?;
        Ok(())
    }
}

/// Starts the API server on `api` and the admin server (`/metrics`, `/healthz`, `/readyz`)
/// on `admin`.
pub fn start(
    config: &Config,
    state: Arc<AppState>,
    api: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<Running> {
    let api_addr = api.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let data = web::Data::from(state);
    let cors_origins = config.cors_allowed_origins.clone();

    let mut tasks = cls_service::Tasks::new(config.shutdown_timeout);
    tasks.spawn(prune_idempotency_keys(
        data.clone().into_inner(),
        config.idempotency_prune_interval,
        config.idempotency_prune_batch,
        tasks.stopped(),
    ));
    if config.rate_limit.is_some() {
        tasks.spawn(forget_idle_callers(
            data.clone().into_inner(),
            tasks.stopped(),
        ));
    }

    let api_data = data.clone();
    let api_server = HttpServer::new(move || {
        // Called on each worker's thread as it starts: the worker's own connection pool and
        // status-aggregator channel.
        api_data.pools.register_worker();
        api_data.status.register_worker();
        App::new()
            .app_data(api_data.clone())
            .app_data(routes::json_payload_config())
            .wrap(routes::cors(&cors_origins))
            .wrap(from_fn(middleware::edge))
            .configure(routes::configure)
    })
    .workers(config.http_workers)
    // A response is never held back waiting for the client's delayed ACK (Nagle).
    .tcp_nodelay(true)
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .listen(api)?
    .run();

    let admin_server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::configure_admin)
    })
    .workers(1)
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .listen(admin)?
    .run();

    Ok(Running {
        api_addr,
        admin_addr,
        api: api_server,
        admin: admin_server,
        tasks,
    })
}

/// Deletes idempotency records past `IDEMPOTENCY_TTL` (they no longer answer a retry), in
/// batches, every `interval`; replicas share the work.
async fn prune_idempotency_keys(
    state: Arc<AppState>,
    interval: Duration,
    batch: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let job = cls_service::cleanup::Cleanup {
        name: "idempotency key prune",
        interval,
        batch,
        removed: state.metrics.idempotency_pruned.clone(),
    };
    cls_service::cleanup::run(job, stop, |limit| {
        let state = state.clone();
        async move {
            let now = time::OffsetDateTime::now_utc();
            let mut conn = state.pool().get().await?;
            Ok(cls_storage::idempotency::prune_expired(&mut conn, now, limit).await?)
        }
    })
    .await;
}

/// Drops the rate-limit state of callers idle long enough to have their whole burst back, once
/// a minute, so memory follows the number of recently active users, not of all users ever.
async fn forget_idle_callers(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => state.rate_limit.forget_idle(),
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
