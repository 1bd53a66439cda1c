//! The `api-gateway` binary as deployed: configuration errors exit 64 naming the variable;
//! SIGTERM stops it cleanly after draining.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cls_test_support::{TestDb, free_port, port_open};

const BIN: &str = env!("CARGO_BIN_EXE_api-gateway");

#[test]
fn invalid_configuration_exits_64_naming_the_variable() {
    for (variable, value) in [
        ("PORT", "eighty"),
        ("AUTH_MODE", "sometimes"),
        ("REQUEST_TIMEOUT", "later"),
        ("LOG_LEVEL", "verbose"),
    ] {
        let output = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/x")
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
    let output = Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

/// The binary on free ports against `db`, with `extra` environment, stdout captured.
struct Gateway {
    child: std::process::Child,
    port: u16,
    admin: u16,
}

impl Gateway {
    async fn start(db: &TestDb, extra: &[(&str, &str)]) -> Gateway {
        let (port, admin) = (free_port().unwrap(), free_port().unwrap());
        let child = Command::new(BIN)
            .env("DATABASE_URL", db.url())
            .env("PORT", port.to_string())
            .env("METRICS_PORT", admin.to_string())
            .env("SHUTDOWN_TIMEOUT", "5s")
            // No scheduler here (the default port may be `cargo xtask dev`'s).
            .env("RECONCILE_SCHEDULER_URL", "http://127.0.0.1:1")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let gateway = Gateway { child, port, admin };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Serving (not `/readyz`: no status-aggregator runs here, so it stays 503).
            let ready = client.get(gateway.url("/healthz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return gateway;
            }
            assert!(Instant::now() < deadline, "never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, wait for a clean exit; returns everything it logged.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let stopped = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
        assert!(!port_open(self.port) && !port_open(self.admin));
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout).unwrap();
        stdout
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let db = TestDb::new().await;
    let gateway = Gateway::start(&db, &[]).await;
    // Logs are JSON lines by default.
    let listed = reqwest::Client::new()
        .get(gateway.url("/api/v1/clusters"))
        .header("X-User-Email", "a@b.io")
        .header("X-Request-ID", "req-42")
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let stdout = gateway.stop();
    let access_line = stdout
        .lines()
        .find(|l| l.contains("/api/v1/clusters"))
        .expect("an access log line");
    let line: serde_json::Value = serde_json::from_str(access_line).expect("JSON log line");
    assert_eq!(line["http.response.status_code"], 200);
    assert_eq!(line["http.route"], "/api/v1/clusters");
    assert_eq!(line["caller"], "a@b.io");
    assert_eq!(line["request_id"], "req-42");
    // The request's span is on the line: its request id and trace id (the caller's, as no
    // exporter is configured).
    assert_eq!(line["span"]["request_id"], "req-42");
    assert_eq!(line["span"]["trace_id"], TRACE_ID);
    // Without a traceparent, a fresh trace id per request.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["span"]["trace_id"].is_string())
        .collect();
    assert!(lines.len() >= 2, "{stdout}");
    assert!(
        lines
            .iter()
            .filter(|l| l["span"]["trace_id"] != TRACE_ID)
            .all(|l| l["span"]["trace_id"]
                .as_str()
                .is_some_and(|t| t.len() == 32))
    );
}

/// Operators run with `LOG_LEVEL=warn`: the request's span is below that level, but the
/// warnings a request logs must still say which request and trace they belong to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_carry_the_request_and_trace_id_at_log_level_warn() {
    let db = TestDb::new().await;
    let nobody = format!("http://127.0.0.1:{}", free_port().unwrap());
    let gateway = Gateway::start(
        &db,
        &[("LOG_LEVEL", "warn"), ("STATUS_AGGREGATOR_URL", &nobody)],
    )
    .await;
    let status = reqwest::Client::new()
        .get(gateway.url(&format!("/api/v1/clusters/{}/status", uuid::Uuid::now_v7())))
        .header("X-User-Email", "a@b.io")
        .header("X-Request-ID", "req-43")
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 503);

    let stdout = gateway.stop();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    let warning = lines
        .iter()
        .find(|l| l["message"] == "status-aggregator call failed")
        .unwrap_or_else(|| panic!("the aggregator failure is logged: {stdout}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["span"]["request_id"], "req-43", "{warning}");
    assert_eq!(warning["span"]["trace_id"], TRACE_ID, "{warning}");
    // The level still filters events: no INFO access line.
    assert!(
        lines.iter().all(|l| l["level"] != "INFO"),
        "INFO lines at LOG_LEVEL=warn: {stdout}"
    );
}
