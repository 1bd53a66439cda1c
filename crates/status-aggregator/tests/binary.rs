//! The `status-aggregator` binary as deployed: configuration errors exit 64 naming the variable; it
//! becomes ready against a real database and stops cleanly on SIGTERM; its log lines for a call
//! name the caller's request.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_rpc::status::status_aggregator_client::StatusAggregatorClient;
use cls_rpc::status::{ReportStatusRequest, ResourceKind, report_status_response};
use cls_test_support::binary::{
    assert_config_error, ready_then_sigterm, sigterm, start_ready_logged,
};
use cls_test_support::resources::create_cluster;
use cls_test_support::{TestDb, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_status-aggregator");

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    for (variable, value) in [
        ("STATUS_GRACE_PERIOD", "a while"),
        ("GRPC_PORT", "grpc"),
        ("STATUS_SWEEP_INTERVAL", "0"),
    ] {
        assert_config_error(
            BIN,
            &[
                ("DATABASE_URL", "postgres://127.0.0.1:1/x"),
                (variable, value),
            ],
            variable,
        );
    }
    assert_config_error(BIN, &[], "DATABASE_URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becomes_ready_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    tokio::task::block_in_place(|| {
        ready_then_sigterm(BIN, db.url(), "status_reports_total{result=\"accepted\"} 0")
    });
}

/// A call from the gateway carries the request's id and trace context: at `LOG_LEVEL=warn`, a
/// warning the aggregator logs while handling it (here: the phase change's reconcile trigger
/// cannot reach the scheduler) names that request and trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_while_serving_a_call_name_the_callers_request() {
    let db = TestDb::new().await;
    let cluster = create_cluster(
        &mut db.conn().await,
        "alice@example.com",
        "logged",
        time::OffsetDateTime::now_utc(),
    )
    .await;

    let (grpc, admin, nobody) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let (grpc_port, admin_port) = (grpc.to_string(), admin.to_string());
    let scheduler = format!("http://127.0.0.1:{nobody}");
    let mut child = tokio::task::block_in_place(|| {
        start_ready_logged(
            BIN,
            &[
                ("DATABASE_URL", db.url()),
                ("GRPC_PORT", &grpc_port),
                ("METRICS_PORT", &admin_port),
                ("LOG_LEVEL", "warn"),
                ("RECONCILE_SCHEDULER_URL", &scheduler),
            ],
            admin,
        )
    });

    let mut client = StatusAggregatorClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let report = serde_json::json!({"controller_name": "ctl-a", "observed_generation": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": "ok"}]});
    let mut request = tonic::Request::new(ReportStatusRequest {
        kind: ResourceKind::Cluster.into(),
        resource_id: cluster.id.to_string(),
        report_json: report.to_string().into_bytes(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-77".parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let response = client.report_status(request).await.unwrap().into_inner();
    assert!(
        matches!(
            response.outcome,
            Some(report_status_response::Outcome::Accepted(_))
        ),
        "{response:?}"
    );
    // The trigger is sent in the background; give it time to fail.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let status = tokio::task::block_in_place(|| sigterm(&mut child));
    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let warning: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reconcile-scheduler unreachable"))
        })
        .unwrap_or_else(|| panic!("the failed trigger is logged: {stdout}"));
    assert_eq!(warning["span"]["request_id"], "req-77", "{warning}");
    assert_eq!(
        warning["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{warning}"
    );
}
