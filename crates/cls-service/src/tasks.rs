//! The background tasks of a running service and how they stop: gracefully (a stop signal, then
//! at most a timeout for in-flight work) or at once (tests that simulate a crash).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A service's tasks, sharing one stop signal.
#[derive(Debug)]
pub struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Tasks {
    pub fn new(shutdown_timeout: Duration) -> Tasks {
        Tasks {
            stop: watch::channel(false).0,
            handles: Vec::new(),
            shutdown_timeout,
        }
    }

    /// A receiver that sees `true` once shutdown begins (for loops that check between rounds).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A future that completes once shutdown begins (for servers' graceful shutdown).
    pub fn until_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(task));
    }

    /// Signals shutdown and waits for every task, at most the shutdown timeout.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.handles);
        if tokio::time::timeout(self.shutdown_timeout, all)
            .await
            .is_err()
        {
            tracing::warn!("shutdown timed out; exiting with work in flight (it will be redone)");
        }
    }

    /// Stops every task at once, as if the process died (tests).
    pub fn abort(self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// A started internal service: where it listens, its metrics and its tasks.
#[derive(Debug)]
pub struct Running<M> {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: M,
    tasks: Tasks,
}

impl<M> Running<M> {
    pub fn new(grpc_addr: SocketAddr, admin_addr: SocketAddr, metrics: M, tasks: Tasks) -> Self {
        Running {
            grpc_addr,
            admin_addr,
            metrics,
            tasks,
        }
    }

    /// Stops accepting calls, lets in-flight calls and the current round of each loop finish
    /// (releasing what they hold), and returns after at most the shutdown timeout.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }

    /// Stops every task at once, as if the process died (tests): what a task held (claims,
    /// leases) stays until it expires.
    pub fn abort(self) {
        self.tasks.abort();
    }
}
