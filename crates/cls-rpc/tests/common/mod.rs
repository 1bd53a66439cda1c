//! A reconcile-scheduler for client tests: the real generated gRPC service over real TCP,
//! whose `Trigger` handler runs the test's closure.

#![allow(
    clippy::unwrap_used,
    dead_code,
    unreachable_pub,
    reason = "test support: fails loudly, each test uses a part"
)]

use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::ResourceKind;
use cls_rpc::client::ReconcileTriggers;
use cls_rpc::scheduler::reconcile_scheduler_server::{
    ReconcileScheduler, ReconcileSchedulerServer,
};
use cls_rpc::scheduler::{StatsRequest, StatsResponse, TriggerRequest, TriggerResponse};
use cls_rpc::server::GrpcServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Response, Status};

/// A scheduler whose `Trigger` calls `on_trigger` (in the handler, so inside the served
/// call) and answers OK.
pub struct Recorder<F>(pub F);

#[tonic::async_trait]
impl<F> ReconcileScheduler for Recorder<F>
where
    F: Fn(TriggerRequest) + Send + Sync + 'static,
{
    async fn trigger(
        &self,
        request: tonic::Request<TriggerRequest>,
    ) -> Result<Response<TriggerResponse>, Status> {
        (self.0)(request.into_inner());
        Ok(Response::new(TriggerResponse { due_at: None }))
    }

    async fn stats(
        &self,
        _: tonic::Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A running test scheduler; [`Scheduler::stop`] shuts it down and checks it served cleanly.
pub struct Scheduler {
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Scheduler {
    /// Serves `on_trigger` on `listener`, with health and reflection as every CLS server.
    pub async fn serve<F>(listener: TcpListener, on_trigger: F) -> Scheduler
    where
        F: Fn(TriggerRequest) + Send + Sync + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let server = GrpcServer::new()
            .add(ReconcileSchedulerServer::new(Recorder(on_trigger)))
            .await;
        let serving = tokio::spawn(server.serve(listener, async {
            stopped.await.ok();
        }));
        Scheduler { stop, serving }
    }

    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.serving.await.unwrap().unwrap();
    }
}

/// Fires a `reason` trigger for a new cluster id, and returns the id.
pub fn fire(triggers: &ReconcileTriggers, reason: ReconcileReason) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    triggers.fire(ResourceKind::Cluster, id, reason);
    id
}
