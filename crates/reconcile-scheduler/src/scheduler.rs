//! The claim loop (SPEC §6): claim due items, decide with the pure policy, hand the events to
//! the event-publisher (durable in the outbox), and only then record the new due times.
//!
//! Exactly once per due item across replicas: a claim is a lease on the rows (`SKIP LOCKED`,
//! then the rows are not due again until the lease expires); the event id is derived from the
//! resource and the due time it serves, so a re-emission after a lost acknowledgement or an
//! expired claim carries the same id and the publisher writes it once.

use std::time::{Duration, Instant};

use cls_domain::event::ReconcileEvent;
use cls_domain::reconcile::{ReconcilePolicy, reconcile_event_id};
use cls_rpc::publisher::PublishRequest;
use cls_rpc::publisher::event_publisher_client::EventPublisherClient;
use cls_storage::schedule::{self, Claim, Completion, DueItem};
use cls_storage::{PgPool, StorageError};
use time::OffsetDateTime;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::metrics::Metrics;

/// The event-publisher's client, with the shared token on every call.
pub type PublisherClient =
    EventPublisherClient<InterceptedService<Channel, cls_rpc::auth::SharedToken>>;

/// The most events in one `Publish` call (the publisher's limit).
const PUBLISH_CHUNK: usize = 1000;

#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(crate) pool: PgPool,
    pub(crate) publisher: PublisherClient,
    pub(crate) metrics: Metrics,
    pub(crate) policy: ReconcilePolicy,
    pub(crate) replica: String,
    pub(crate) claim_ttl: time::Duration,
    pub(crate) batch_size: i64,
    pub(crate) retry_backoff: time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("database: {0}")]
    Storage(#[from] StorageError),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("event-publisher: {0}")]
    Publish(tonic::Status),
}

impl Scheduler {
    /// One round: claims up to a batch of due items, emits their events and completes them.
    /// Returns how many items were claimed.
    pub async fn run_once(&self, now: OffsetDateTime) -> Result<usize, RoundError> {
        let started = Instant::now();
        let claim = Claim {
            replica: self.replica.clone(),
            until: now + self.claim_ttl,
        };
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RoundError::Pool(e.to_string()))?;
        let items = schedule::claim_due(&mut conn, &claim, now, self.batch_size).await?;
        if items.is_empty() {
            return Ok(0);
        }
        let claimed = items.len();
        // A trace per round that emits anything: the Publish call and the events carry it.
        let round = tracing::info_span!(
            "reconcile round",
            otel.kind = "internal",
            replica = %self.replica,
            claimed,
        );
        let traceparent = cls_telemetry::traceparent(&round);
        for item in &items {
            self.metrics
                .claim_lag
                .observe((now - item.due_at).as_seconds_f64().max(0.0));
        }
        let (live, gone): (Vec<DueItem>, Vec<DueItem>) =
            items.into_iter().partition(|i| i.facts.is_some());
        if !gone.is_empty() {
            let ids: Vec<Uuid> = gone.iter().map(|i| i.resource.id()).collect();
            schedule::forget(&mut conn, &ids).await?;
        }
        // Release the connection while the publisher works.
        drop(conn);

        let mut events = Vec::with_capacity(live.len());
        let mut completions = Vec::with_capacity(live.len());
        for item in &live {
            let Some(facts) = item.facts else { continue };
            let decision = self.policy.decide(&facts, now);
            events.push(ReconcileEvent {
                id: reconcile_event_id(item.resource.id(), item.due_at),
                resource: item.resource,
                reason: decision.reason,
                generation: facts.generation,
                timestamp: now,
                scheduled_by: self.replica.clone(),
                last_reconciled_at: facts.last_reconciled_at,
                traceparent: traceparent.clone(),
            });
            completions.push(Completion {
                resource_id: item.resource.id(),
                next_due_at: decision.next_due_at,
            });
        }

        for chunk in events.chunks(PUBLISH_CHUNK) {
            let request = PublishRequest {
                events: chunk.iter().map(Into::into).collect(),
            };
            let call_span = round.in_scope(|| {
                cls_rpc::trace::client_span("cls.publisher.v1.EventPublisher", "Publish")
            });
            let mut publisher = self.publisher.clone();
            if let Err(status) = publisher.publish(request).instrument(call_span).await {
                self.metrics.publish_failures.inc();
                // Give the rest back (an accepted chunk is re-sent with the same ids, so it is
                // written once); they are due again after the backoff.
                let ids: Vec<Uuid> = live.iter().map(|i| i.resource.id()).collect();
                if let Ok(mut conn) = self.pool.get().await {
                    let retry_at = OffsetDateTime::now_utc() + self.retry_backoff;
                    if let Err(e) = schedule::release(&mut conn, &claim, &ids, retry_at).await {
                        tracing::warn!(error = %e, "cannot release claims; they expire by themselves");
                    }
                }
                return Err(RoundError::Publish(status));
            }
        }

        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RoundError::Pool(e.to_string()))?;
        let completed = schedule::complete(&mut conn, &claim, now, &completions).await?;
        if completed < completions.len() {
            tracing::debug!(
                claimed = completions.len(),
                completed,
                "some claims were taken over or re-triggered meanwhile"
            );
        }
        for event in &events {
            self.metrics
                .emitted
                .with_label_values(&[event.resource.kind().as_str(), event.reason.as_str()])
                .inc();
        }
        self.metrics.round.observe(started.elapsed().as_secs_f64());
        Ok(claimed)
    }
}

/// Runs rounds until stopped: back to back while full batches come back, else every
/// `poll_interval`; after a failure, waits `retry_backoff`. Never exits on an error.
pub async fn claim_loop(
    scheduler: Scheduler,
    poll_interval: Duration,
    retry_backoff: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let batch = usize::try_from(scheduler.batch_size).unwrap_or(usize::MAX);
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match scheduler.run_once(OffsetDateTime::now_utc()).await {
            Ok(n) if n >= batch => continue,
            Ok(_) => poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile round failed; retrying");
                retry_backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Purges soft-deleted resources older than `retention`, in batches, every `interval`.
pub async fn purge_loop(
    pool: PgPool,
    metrics: Metrics,
    retention: time::Duration,
    interval: Duration,
    batch: i64,
    stop: watch::Receiver<bool>,
) {
    let job = cls_service::cleanup::Cleanup {
        name: "purge of deleted resources",
        interval,
        batch,
    };
    cls_service::cleanup::run(job, stop, |limit| {
        let (pool, metrics) = (pool.clone(), metrics.clone());
        async move {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            let cutoff = OffsetDateTime::now_utc() - retention;
            let purged = schedule::purge_deleted(&mut conn, cutoff, limit)
                .await
                .map_err(|e| e.to_string())?;
            metrics.purged.inc_by(purged as u64);
            if purged > 0 {
                tracing::info!(purged, "purged deleted resources");
            }
            Ok(purged)
        }
    })
    .await;
}
