//! The `reconcile-scheduler` binary as deployed: configuration errors exit 64 naming the
//! variable; it becomes ready against a real database and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cls_test_support::{TestDb, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_reconcile-scheduler");

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    for (variable, value) in [
        ("RECONCILE_ATTENTION_INTERVAL", "a while"),
        ("GRPC_PORT", "grpc"),
        ("RECONCILE_CLAIM_TTL", "1s"),
    ] {
        let output = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{variable}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(variable));
    }
    let output = Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becomes_ready_and_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let admin = free_port().unwrap();
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", db.url())
        .env("GRPC_PORT", "0")
        .env("METRICS_PORT", admin.to_string())
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scrape = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains(r#"reconcile_scheduled_resources 0"#),
        "{scrape}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
