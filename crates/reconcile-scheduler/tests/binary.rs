//! The `reconcile-scheduler` binary as deployed: configuration errors exit 64 naming the variable; it
//! becomes ready against a real database and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_test_support::TestDb;
use cls_test_support::binary::{assert_config_error, ready_then_sigterm};

const BIN: &str = env!("CARGO_BIN_EXE_reconcile-scheduler");

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    for (variable, value) in [
        ("RECONCILE_ATTENTION_INTERVAL", "a while"),
        ("GRPC_PORT", "grpc"),
        ("RECONCILE_CLAIM_TTL", "1s"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("LOG_LEVEL", "verbose"),
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
        ready_then_sigterm(BIN, db.url(), "reconcile_scheduled_resources 0")
    });
}
