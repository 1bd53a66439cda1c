//! A gRPC server with `grpc.health.v1` and server reflection next to the CLS services.

use std::convert::Infallible;
use std::future::Future;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;

/// The server-side deadline of a call that brings none.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Routes for one server: add services, then [`GrpcServer::serve`].
#[derive(Debug)]
pub struct GrpcServer {
    routes: Routes,
    health: HealthReporter,
}

impl GrpcServer {
    /// Health (every added service reported `SERVING`) and reflection of the CLS protos.
    pub fn new() -> GrpcServer {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .unwrap_or_else(|e| unreachable!("the embedded descriptors are valid: {e}"));
        let routes = Routes::new(health_service).add_service(reflection);
        GrpcServer { routes, health }
    }

    /// Adds a service and reports it `SERVING` under its own name.
    pub async fn add<S>(mut self, service: S) -> GrpcServer
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.health.set_serving::<S>().await;
        self.routes = self.routes.add_service(service);
        self
    }

    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then drains in-flight calls. A call
    /// without a (shorter) `grpc-timeout` of its own is cancelled after [`CALL_TIMEOUT`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .timeout(CALL_TIMEOUT)
            .trace_fn(crate::trace::server_span)
            .layer(crate::trace::RequestScopeLayer)
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a response's frames (headers, data, trailers) wait on
                // Nagle for the peer's delayed ACK: a 40 ms tail on calls.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }
}

impl GrpcServer {
    /// [`GrpcServer::serve`] as a background task: a failure to serve is logged.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        if let Err(e) = self.serve(listener, shutdown).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }
}

impl Default for GrpcServer {
    fn default() -> GrpcServer {
        GrpcServer::new()
    }
}
