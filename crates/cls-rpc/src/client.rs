//! Clients of peer services: lazily connected channels that fail fast, and the fire-and-forget
//! reconcile trigger the api-gateway and the status-aggregator send to the reconcile-scheduler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::ResourceKind;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use crate::auth::SharedToken;
use crate::scheduler::reconcile_scheduler_client::ReconcileSchedulerClient;
use crate::scheduler::{ResourceKind as PbKind, TriggerRequest};

/// A lazily connected channel to a peer: connecting is bounded at 1 s and every call at
/// `timeout`, so a peer that is down makes calls fail fast, never hang. Start-up does not need
/// the peer.
pub fn channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(url, timeout)?.connect_lazy())
}

/// The peer's endpoint, configured as for [`channel`], for callers that open several channels
/// (`connect_lazy` on the runtime that is to drive each one).
pub fn endpoint(
    url: &str,
    timeout: Duration,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout))
}

/// A peer's `grpc.health.v1` status of one of its services, for a readiness probe that depends
/// on that peer. Connected lazily like [`channel`], so each check is bounded by the endpoint's
/// connect and call timeouts.
#[derive(Debug, Clone)]
pub struct PeerHealth {
    client: HealthClient<Channel>,
    service: &'static str,
}

impl PeerHealth {
    /// `service` is the fully qualified gRPC service name the peer reports on (the generated
    /// server module's `SERVICE_NAME`). Call inside the runtime that is to drive the channel.
    pub fn new(endpoint: &tonic::transport::Endpoint, service: &'static str) -> PeerHealth {
        PeerHealth {
            client: HealthClient::new(endpoint.connect_lazy()),
            service,
        }
    }

    /// `Ok` when the peer answers that the service is `SERVING`; otherwise why not.
    pub async fn check(&self) -> Result<(), String> {
        let request = HealthCheckRequest {
            service: self.service.to_owned(),
        };
        match self.client.clone().check(request).await {
            Ok(response) => match response.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("{} is {}", self.service, other.as_str_name())),
            },
            Err(status) => Err(format!(
                "{}: {:?} {}",
                self.service,
                status.code(),
                status.message()
            )),
        }
    }
}

/// The reconcile-scheduler's client, with the shared token attached to every call.
pub type SchedulerClient = ReconcileSchedulerClient<InterceptedService<Channel, SharedToken>>;

/// Sends reactive reconcile triggers without making the caller wait or fail: a trigger that
/// cannot be delivered (the scheduler is down) is logged and dropped, because the scheduler's
/// periodic pass reconciles the resource anyway (`generation_mismatch` or
/// `unhealthy_reconciliation`). Disabled (`None` URL): triggers are only logged at debug.
///
/// Once the scheduler is unreachable, triggers are dropped without a call for
/// [`UNREACHABLE_HOLD_OFF`] at a time, then the next one tries again: a connection attempt
/// and a warning per request cost the gateway about 30 % of its CPU per create while the
/// scheduler was down, for triggers that could not be delivered anyway.
#[derive(Debug, Clone)]
pub struct ReconcileTriggers {
    client: Option<SchedulerClient>,
    reachability: Arc<Reachability>,
}

/// How long triggers are dropped without a call after the scheduler could not be reached.
pub const UNREACHABLE_HOLD_OFF: Duration = Duration::from_secs(1);

/// When the scheduler was last found unreachable: milliseconds after `epoch` until which
/// triggers are dropped; 0 while it answers.
#[derive(Debug)]
struct Reachability {
    epoch: Instant,
    retry_at_ms: AtomicU64,
}

impl Reachability {
    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 keeps meaning "reachable".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn holding_off(&self) -> bool {
        let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
        retry_at != 0 && self.now_ms() < retry_at
    }

    /// Records a failed call; whether the scheduler was reachable until now.
    fn unreachable(&self) -> bool {
        let hold_off = u64::try_from(UNREACHABLE_HOLD_OFF.as_millis()).unwrap_or(u64::MAX);
        self.retry_at_ms
            .swap(self.now_ms().saturating_add(hold_off), Ordering::Relaxed)
            == 0
    }

    /// Records an answered call; whether the scheduler was unreachable until now.
    fn reachable(&self) -> bool {
        self.retry_at_ms.swap(0, Ordering::Relaxed) != 0
    }
}

impl ReconcileTriggers {
    pub fn new(
        url: Option<&str>,
        timeout: Duration,
        token: SharedToken,
    ) -> Result<ReconcileTriggers, tonic::transport::Error> {
        let client = match url {
            Some(url) => Some(ReconcileSchedulerClient::with_interceptor(
                channel(url, timeout)?,
                token,
            )),
            None => None,
        };
        Ok(ReconcileTriggers {
            client,
            reachability: Arc::new(Reachability {
                epoch: Instant::now(),
                retry_at_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Sends the trigger in the background (needs a Tokio runtime).
    pub fn fire(&self, kind: ResourceKind, id: Uuid, reason: ReconcileReason) {
        let Some(mut client) = self.client.clone() else {
            tracing::debug!(kind = kind.as_str(), %id, %reason, "no reconcile-scheduler configured; trigger dropped");
            return;
        };
        if self.reachability.holding_off() {
            tracing::debug!(kind = kind.as_str(), %id, %reason, "reconcile-scheduler unreachable; trigger dropped");
            return;
        }
        let reachability = self.reachability.clone();
        let request = TriggerRequest {
            kind: match kind {
                ResourceKind::Cluster => PbKind::Cluster,
                ResourceKind::NodePool => PbKind::Nodepool,
            } as i32,
            resource_id: id.to_string(),
            reason: reason.as_str().to_owned(),
        };
        // A child of the caller's span, carried into the background task with the request it
        // serves (task-locals do not cross `spawn`).
        let span = crate::trace::client_span("cls.scheduler.v1.ReconcileScheduler", "Trigger");
        let send = async move {
            match client.trigger(request).await {
                Ok(_) => {
                    if reachability.reachable() {
                        tracing::info!("reconcile-scheduler reachable again; triggers resume");
                    }
                }
                // Not an answer from the scheduler: no connection (`Unavailable`), no reply in
                // time, or a connection that broke under the call (hyper's errors come out as
                // `Unknown` or `Cancelled`).
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                    ) =>
                {
                    if reachability.unreachable() {
                        tracing::warn!(
                            kind = kind.as_str(), %id, %reason, code = ?status.code(), error = status.message(),
                            hold_off = ?UNREACHABLE_HOLD_OFF,
                            "reconcile-scheduler unreachable; triggers are dropped until it answers, and the periodic reconcile will catch up"
                        );
                    } else {
                        tracing::debug!(
                            kind = kind.as_str(), %id, %reason, code = ?status.code(), error = status.message(),
                            "reconcile trigger not delivered; scheduler still unreachable"
                        );
                    }
                }
                Err(status) => tracing::warn!(
                    kind = kind.as_str(), %id, %reason, code = ?status.code(), error = status.message(),
                    "reconcile trigger not delivered; the periodic reconcile will catch up"
                ),
            }
        };
        // The task also enters the caller's span: where the call's span is not logged (a
        // level above it), its warning still carries the request's span and ids.
        let send = tracing::Instrument::instrument(send, span);
        let send = tracing::Instrument::instrument(send, tracing::Span::current());
        match cls_telemetry::request::current() {
            Some(served) => tokio::spawn(cls_telemetry::request::scope(served, send)),
            None => tokio::spawn(send),
        };
    }
}
