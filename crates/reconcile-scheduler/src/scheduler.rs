//! The claim loop (SPEC §6): claim due items, decide with the pure policy, hand the events to
//! the event-publisher (durable in the outbox), and only then record the new due times.
//!
//! Exactly once per due item across replicas: a round holds its rows locked (`SKIP LOCKED`)
//! from before its events are built until their next due times are stored, in one
//! transaction; the event id is derived from the resource and the due time it serves, so a
//! re-emission after a lost acknowledgement, a failed round or a replica that died mid-round
//! carries the same id and the publisher writes it once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cls_domain::event::ReconcileEvent;
use cls_domain::reconcile::{ReconcilePolicy, reconcile_event_id};
use cls_rpc::publisher::PublishRequest;
use cls_rpc::publisher::event_publisher_client::EventPublisherClient;
use cls_storage::schedule::{self, Completion};
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
    /// Rounds that may publish at once (`RECONCILE_WORKERS`); a round holds a slot from its
    /// first `Publish` call to its last.
    pub(crate) publish_slots: Arc<tokio::sync::Semaphore>,
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
    /// One round: locks up to a batch of due items, emits their events and completes them.
    /// Returns how many items were locked.
    pub async fn run_once(&self, now: OffsetDateTime) -> Result<usize, RoundError> {
        let started = Instant::now();
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| RoundError::Pool(e.to_string()))?;
        let Some(locked) =
            schedule::lock_due(&mut conn, now, self.batch_size, self.claim_ttl).await?
        else {
            return Ok(0);
        };
        let claimed = locked.items.len();
        let _in_flight = InFlight::add(&self.metrics.claimed, claimed);
        // A trace per round that emits anything: the Publish call and the events carry it.
        let round = tracing::info_span!(
            "reconcile round",
            otel.kind = "internal",
            replica = %self.replica,
            claimed,
        );
        let traceparent = cls_telemetry::traceparent(&round);
        let mut events = Vec::with_capacity(claimed);
        let mut completions = Vec::with_capacity(claimed);
        for item in &locked.items {
            self.metrics
                .claim_lag
                .observe((now - item.due_at).as_seconds_f64().max(0.0));
            // Gone resources: their rows went with the lock.
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

        // The rows stay locked while the publisher works: no other replica emits them. The
        // slot is never closed, so acquiring it does not fail.
        let slot = self.publish_slots.acquire().await.ok();
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
                // Give them all back (an accepted chunk is re-sent with the same ids, so it is
                // written once); they are due again after the backoff.
                let ids: Vec<Uuid> = completions.iter().map(|c| c.resource_id).collect();
                let retry_at = OffsetDateTime::now_utc() + self.retry_backoff;
                if let Err(e) = locked.release(&ids, retry_at).await {
                    tracing::warn!(error = %e, "cannot release the round's items; they are due again at once");
                }
                return Err(RoundError::Publish(status));
            }
        }
        drop(slot);

        locked.complete(now, &completions).await?;
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

/// Counts a round's items in the in-flight gauge while the round runs.
struct InFlight<'a> {
    gauge: &'a prometheus::IntGauge,
    items: i64,
}

impl<'a> InFlight<'a> {
    fn add(gauge: &'a prometheus::IntGauge, items: usize) -> InFlight<'a> {
        let items = i64::try_from(items).unwrap_or(i64::MAX);
        gauge.add(items);
        InFlight { gauge, items }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.sub(self.items);
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
        removed: metrics.purged.clone(),
    };
    cls_service::cleanup::run(job, stop, |limit| {
        let pool = pool.clone();
        async move {
            let cutoff = OffsetDateTime::now_utc() - retention;
            let mut conn = pool.get().await?;
            Ok(schedule::purge_deleted(&mut conn, cutoff, limit).await?)
        }
    })
    .await;
}
