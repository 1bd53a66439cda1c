//! Reconcile triggers against a scheduler that is down and then comes back, over real TCP and
//! gRPC: while it is unreachable, requests do not each pay for a connection attempt; once it
//! answers again, triggers are delivered.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cls_domain::reconcile::ReconcileReason;
use cls_rpc::auth::SharedToken;
use cls_rpc::client::{ReconcileTriggers, UNREACHABLE_HOLD_OFF};
use common::{Scheduler, fire};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;

fn listen(addr: std::net::SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scheduler_is_not_called_per_trigger_and_is_used_again_once_back() {
    // A port where connections are accepted and dropped at once: every call fails, and every
    // connection attempt is counted.
    let down = listen("127.0.0.1:0".parse().unwrap());
    let addr = down.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counting = {
        let attempts = attempts.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = down.accept().await {
                attempts.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        })
    };
    let triggers = ReconcileTriggers::new(
        Some(&format!("http://{addr}")),
        Duration::from_secs(5),
        SharedToken::none(),
    )
    .unwrap();

    // Twenty requests' triggers over about half the hold-off.
    for _ in 0..20 {
        fire(&triggers, ReconcileReason::SpecChange);
        tokio::time::sleep(UNREACHABLE_HOLD_OFF / 40).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tried = attempts.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&tried),
        "one failed call holds the others off, not {tried} connection attempts"
    );

    // The scheduler comes back on the same address.
    counting.abort();
    let _ = counting.await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler::serve(listen(addr), move |request| {
        tx.send(request.resource_id).ok();
    })
    .await;
    tokio::time::sleep(UNREACHABLE_HOLD_OFF).await;

    // After the hold-off the next trigger tries again, is delivered, and so are the rest.
    let mut sent = Vec::new();
    for _ in 0..5 {
        sent.push(fire(&triggers, ReconcileReason::SpecChange).to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let id = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("every trigger after the hold-off arrives")
            .unwrap();
        received.push(id);
    }
    received.sort();
    sent.sort();
    assert_eq!(received, sent);

    scheduler.stop().await;
}
