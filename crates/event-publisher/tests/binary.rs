//! The `event-publisher` binary as deployed: configuration errors exit 64 naming the
//! variable; SIGTERM drains and hands the shard leases back at once, so another replica takes
//! them over without waiting for the connection to time out.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cls_test_support::free_port;
use common::*;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_event-publisher");

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    for (variable, value) in [
        ("OUTBOX_BATCH_SIZE", "many"),
        ("PUBSUB_EMULATOR_HOST", "http://nope"),
        ("OUTBOX_RETENTION", "forever"),
    ] {
        let output = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
            .env("GOOGLE_CLOUD_PROJECT", "p")
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    let output = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GOOGLE_CLOUD_PROJECT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_hands_the_shards_back() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let admin = free_port().unwrap();
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", db.url())
        .env("PUBSUB_EMULATOR_HOST", emulator.host())
        .env("GOOGLE_CLOUD_PROJECT", cls_test_support::emulator::PROJECT)
        .env("GRPC_PORT", "0")
        .env("METRICS_PORT", admin.to_string())
        .env("OUTBOX_REBALANCE_INTERVAL", "300ms")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, "outbox_shards_held").await != Some(32.0) {
        assert!(
            Instant::now() < deadline,
            "the binary never leased the shards"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster = Uuid::new_v4();
    commit(db.url(), &[cluster_event(cluster, 1)]).await;
    let received = subscriber.expect(1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1);

    // A second replica in-process, with a long rebalance interval: it can only get shards
    // quickly if the binary gives them back on SIGTERM.
    let survivor = start(&config(
        db.url(),
        &emulator.host(),
        &[("OUTBOX_REBALANCE_INTERVAL", "300ms")],
    ))
    .await;
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drained within the shutdown timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while survivor.metrics.shards_held.get() != 32 {
        assert!(Instant::now() < deadline, "the shards were not handed over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    commit(db.url(), &[cluster_event(cluster, 2)]).await;
    let received = subscriber.expect(1, Duration::from_secs(30)).await;
    assert_eq!(received[0].body["generation"], 2);
    survivor.shutdown().await;
}
