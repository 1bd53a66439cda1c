//! Tests of service binaries as deployed: configuration errors, readiness, SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `bin` with only `env` and asserts it exits 64 naming `variable` on stderr.
pub fn assert_config_error(bin: &str, env: &[(&str, &str)], variable: &str) {
    let output = Command::new(bin)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64), "{variable}: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(variable), "{variable}: {stderr}");
}

/// `GET http://127.0.0.1:{port}{path}`: the status code and body, or `None` when nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}

/// Starts `bin` with `env` (stdout discarded) and waits until `/readyz` on `admin_port`
/// answers 200, failing the test after 20 s or if the process exits.
pub fn start_ready(bin: &str, env: &[(&str, &str)], admin_port: u16) -> Child {
    start(bin, env, Stdio::null(), admin_port)
}

/// Like [`start_ready`], with stdout (the log lines) piped for the test to read after the
/// process stopped. Keep the output small (a quiet `LOG_LEVEL`): nothing drains the pipe
/// while the process runs.
pub fn start_ready_logged(bin: &str, env: &[(&str, &str)], admin_port: u16) -> Child {
    start(bin, env, Stdio::piped(), admin_port)
}

fn start(bin: &str, env: &[(&str, &str)], stdout: Stdio, admin_port: u16) -> Child {
    let mut child = Command::new(bin)
        .envs(env.iter().copied())
        .stdout(stdout)
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get(admin_port, "/readyz").is_some_and(|(status, _)| status == 200) {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{bin} exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "{bin} never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM and waits for the exit, failing the test after 10 s.
pub fn sigterm(child: &mut Child) -> ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The deployed-binary check every internal service passes: started against `database_url`
/// with ephemeral ports, it becomes ready, its `/metrics` contains `metric_line`, and SIGTERM
/// makes it exit 0 within 10 s. Call from a blocking context (`block_in_place`).
pub fn ready_then_sigterm(bin: &str, database_url: &str, metric_line: &str) {
    let admin = crate::free_port().expect("a free port");
    let port = admin.to_string();
    let mut child = start_ready(
        bin,
        &[
            ("DATABASE_URL", database_url),
            ("GRPC_PORT", "0"),
            ("METRICS_PORT", &port),
            ("LOG_LEVEL", "warn"),
        ],
        admin,
    );
    let (_, scrape) = http_get(admin, "/metrics").expect("/metrics answers");
    assert!(scrape.contains(metric_line), "{scrape}");
    let status = sigterm(&mut child);
    assert!(status.success(), "{status:?}");
}
