//! A call served by a CLS gRPC server runs as part of the caller's request, over real gRPC, so
//! the calls it makes in turn carry the same request id and trace context (gateway →
//! status-aggregator → reconcile-scheduler is one `request_id` in all three services' logs).

mod common;

use std::time::Duration;

use cls_domain::reconcile::ReconcileReason;
use cls_rpc::auth::SharedToken;
use cls_rpc::client::ReconcileTriggers;
use cls_telemetry::request::{self, Request as Served};
use common::{Scheduler, fire};
use tokio::sync::mpsc;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_served_call_runs_for_the_callers_request_and_passes_it_on() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // For every trigger: the request its handler runs for, and the metadata an onward call
    // made from the handler would carry.
    let scheduler = Scheduler::serve(listener, move |_| {
        let mut onward = tonic::Request::new(());
        cls_rpc::trace::inject(&mut onward);
        tx.send((request::current(), onward.metadata().clone()))
            .ok();
    })
    .await;
    let triggers =
        ReconcileTriggers::new(Some(&url), Duration::from_secs(5), SharedToken::none()).unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the trigger arrives")
            .unwrap()
    };

    let served = Served {
        id: "req-from-the-gateway".to_owned(),
        traceparent: Some(TRACEPARENT.to_owned()),
    };
    request::scope(served.clone(), async {
        fire(&triggers, ReconcileReason::StatusChange);
    })
    .await;
    let (seen, onward) = next().await;
    assert_eq!(seen, Some(served));
    assert_eq!(onward.get("x-request-id").unwrap(), "req-from-the-gateway");
    assert_eq!(onward.get("traceparent").unwrap(), TRACEPARENT);

    // A call made for no request (a scheduler round) serves none and passes none on.
    fire(&triggers, ReconcileReason::StatusChange);
    let (seen, onward) = next().await;
    assert_eq!(seen, None);
    assert!(onward.get("x-request-id").is_none());

    // An id unsafe for log lines is not adopted.
    let unsafe_id = Served {
        id: "two words".to_owned(),
        traceparent: None,
    };
    request::scope(unsafe_id, async {
        fire(&triggers, ReconcileReason::StatusChange);
    })
    .await;
    let (seen, _) = next().await;
    assert_eq!(seen, None);

    scheduler.stop().await;
}
