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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let db = TestDb::new().await;
    let (port, admin) = (free_port().unwrap(), free_port().unwrap());
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", db.url())
        .env("PORT", port.to_string())
        .env("METRICS_PORT", admin.to_string())
        .env("SHUTDOWN_TIMEOUT", "5s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Logs are JSON lines by default.
    let listed = client
        .get(format!("http://127.0.0.1:{port}/api/v1/clusters"))
        .header("X-User-Email", "a@b.io")
        .header("X-Request-ID", "req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!port_open(port) && !port_open(admin));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
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
    assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
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
            .filter(|l| l["span"]["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736")
            .all(|l| l["span"]["trace_id"]
                .as_str()
                .is_some_and(|t| t.len() == 32))
    );
}
