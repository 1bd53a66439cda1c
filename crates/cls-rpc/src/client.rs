//! Clients of peer services: lazily connected channels that fail fast, and the fire-and-forget
//! reconcile trigger the api-gateway and the status-aggregator send to the reconcile-scheduler.

use std::time::Duration;

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::ResourceKind;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::auth::SharedToken;
use crate::scheduler::reconcile_scheduler_client::ReconcileSchedulerClient;
use crate::scheduler::{ResourceKind as PbKind, TriggerRequest};

/// A lazily connected channel to a peer: connecting is bounded at 1 s and every call at
/// `timeout`, so a peer that is down makes calls fail fast, never hang. Start-up does not need
/// the peer.
pub fn channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .connect_lazy())
}

/// The reconcile-scheduler's client, with the shared token attached to every call.
pub type SchedulerClient = ReconcileSchedulerClient<InterceptedService<Channel, SharedToken>>;

/// Sends reactive reconcile triggers without making the caller wait or fail: a trigger that
/// cannot be delivered (the scheduler is down) is logged and dropped, because the scheduler's
/// periodic pass reconciles the resource anyway (`generation_mismatch` or
/// `unhealthy_reconciliation`). Disabled (`None` URL): triggers are only logged at debug.
#[derive(Debug, Clone)]
pub struct ReconcileTriggers {
    client: Option<SchedulerClient>,
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
        Ok(ReconcileTriggers { client })
    }

    /// Sends the trigger in the background (needs a Tokio runtime).
    pub fn fire(&self, kind: ResourceKind, id: Uuid, reason: ReconcileReason) {
        let Some(mut client) = self.client.clone() else {
            tracing::debug!(kind = kind.as_str(), %id, %reason, "no reconcile-scheduler configured; trigger dropped");
            return;
        };
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
            if let Err(status) = client.trigger(request).await {
                tracing::warn!(
                    kind = kind.as_str(), %id, %reason, code = ?status.code(), error = status.message(),
                    "reconcile trigger not delivered; the periodic reconcile will catch up"
                );
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
