//! The `healthcheck` binary (container health checks) against the real admin server.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cls_service::admin;

const BIN: &str = env!("CARGO_BIN_EXE_healthcheck");

async fn probe(url: String) -> Option<i32> {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg(url)
            .output()
            .unwrap()
            .status
            .code()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_follows_readiness() {
    let ready = Arc::new(AtomicBool::new(true));
    let flag = ready.clone();
    let readiness: admin::Readiness = Arc::new(move || {
        let ok = flag.load(Ordering::SeqCst);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("database: down".into())
            }
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = admin::router(prometheus::Registry::new(), readiness, None);
    tokio::spawn(admin::serve(listener, router, std::future::pending()));

    assert_eq!(probe(format!("http://{addr}/readyz")).await, Some(0));
    assert_eq!(probe(format!("http://{addr}/healthz")).await, Some(0));
    ready.store(false, Ordering::SeqCst);
    assert_eq!(probe(format!("http://{addr}/readyz")).await, Some(1));
    assert_eq!(probe(format!("http://{addr}/no-such-path")).await, Some(1));
    // Nothing listening, or not a URL it understands.
    let free = cls_test_support::free_port().unwrap();
    assert_eq!(
        probe(format!("http://127.0.0.1:{free}/readyz")).await,
        Some(1)
    );
    assert_eq!(probe("https://127.0.0.1/readyz".into()).await, Some(1));
}
