//! `cls.publisher.v1.EventPublisher`: durable event submission for the reconcile-scheduler.

use cls_domain::event::Envelope;
use cls_rpc::convert;
use cls_rpc::publisher::event_publisher_server::EventPublisher;
use cls_rpc::publisher::{PublishRequest, PublishResponse};
use cls_storage::{PgPool, outbox};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct PublishService {
    pub(crate) pool: PgPool,
    /// Wakes the relays (this replica's and the others') after each accepted batch commits.
    pub(crate) waker: outbox::Waker,
    pub(crate) metrics: Metrics,
}

#[tonic::async_trait]
impl EventPublisher for PublishService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let result = |r: &str| self.metrics.grpc_publish.with_label_values(&[r]).inc();
        let events = convert::reconcile_events(request.get_ref(), OffsetDateTime::now_utc())
            .map_err(|violations| {
                result("invalid");
                convert::invalid_argument(&violations)
            })?;
        let envelopes: Vec<Envelope> = events.iter().map(|e| e.envelope()).collect();
        let written = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let written = outbox::insert(&mut conn, &envelopes)
                .await
                .map_err(|e| e.to_string())?;
            self.waker.wake(written);
            Ok::<_, String>(())
        }
        .await;
        if let Err(error) = written {
            result("unavailable");
            tracing::warn!(%error, "cannot write events to the outbox");
            return Err(Status::unavailable(
                "the outbox database is unavailable; retry with the same event ids",
            ));
        }
        result("ok");
        Ok(Response::new(PublishResponse {
            ids: envelopes.iter().map(|e| e.id.to_string()).collect(),
        }))
    }
}
