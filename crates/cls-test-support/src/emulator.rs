//! The real Google Cloud Pub/Sub emulator (`gcloud beta emulators pubsub start`), on a free
//! port, stopped with its Java child when dropped.

use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{free_port, port_open};

/// A running emulator. Its state (topics, subscriptions, messages) lives in memory only.
#[derive(Debug)]
pub struct PubSubEmulator {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

/// Runs the emulator (`$2…`) and stops it, with the Java server it spawns, when told to
/// (TERM) or as soon as the test process (`$1`) is gone, so an emulator never outlives a test
/// that was killed or timed out. gcloud puts itself in a process group of its own, so the
/// watchdog signals that group, and the wrapper's children in case that ever changes.
const WATCHDOG: &str = r#"
parent=$1; shift
"$@" &
child=$!
stop() {
    kill -TERM -- -"$child" 2>/dev/null
    pkill -TERM -P "$child" 2>/dev/null
    kill -TERM "$child" 2>/dev/null
    wait "$child" 2>/dev/null
    exit 0
}
trap stop TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do
    sleep 1 & wait $!
done
stop
"#;

/// The project id tests use with the emulator.
pub const PROJECT: &str = "cls-test";

impl PubSubEmulator {
    /// Starts an emulator on a free port and waits until it listens.
    pub fn start() -> anyhow::Result<PubSubEmulator> {
        Self::start_on(free_port()?)
    }

    /// Starts an emulator on `port` (for restarting one on the port clients already use).
    pub fn start_on(port: u16) -> anyhow::Result<PubSubEmulator> {
        let log = std::env::temp_dir().join(format!("cls-pubsub-emulator-{port}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("sh")
            .args(["-c", WATCHDOG, "cls-pubsub-emulator"])
            .arg(std::process::id().to_string())
            .args(["gcloud", "beta", "emulators", "pubsub", "start", "--quiet"])
            .arg(format!("--host-port=127.0.0.1:{port}"))
            .arg(format!("--project={PROJECT}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group, so stopping it also stops the Java server it spawns.
            .process_group(0)
            .spawn()
            .context("cannot start the Pub/Sub emulator")?;
        let mut emulator = PubSubEmulator {
            child: Some(child),
            port,
            log,
        };
        emulator.wait_until_listening(Duration::from_secs(90))?;
        Ok(emulator)
    }

    fn wait_until_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("Server started, listening on") && port_open(self.port) {
                return Ok(());
            }
            if log.contains("gcloud: not found") || log.contains("gcloud: command not found") {
                bail!(
                    "`gcloud` is not installed: install the Google Cloud SDK with the pubsub-emulator component and a Java runtime"
                );
            }
            if log.contains("BindException") || log.contains("Address already in use") {
                bail!("the Pub/Sub emulator could not bind port {}", self.port);
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("the Pub/Sub emulator exited with {status}: {log}");
            }
            if Instant::now() > deadline {
                bail!("the Pub/Sub emulator did not start within {timeout:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `127.0.0.1:PORT`, the value for `PUBSUB_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the emulator and its Java child and waits until the port is closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let pattern = process_pattern(self.port);
        let gone = || !port_open(self.port) && !processes_alive(&pattern);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !gone() {
            // Last resort: whatever is left of this port's emulator.
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &pattern])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !gone() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Whether any process of this emulator (wrapper or Java server) is still running.
    pub fn processes_alive(&self) -> bool {
        processes_alive(&process_pattern(self.port))
    }
}

fn processes_alive(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `pgrep -f` pattern matching the emulator processes (wrapper and Java) of `port`.
fn process_pattern(port: u16) -> String {
    format!("pubsub.*(127\\.0\\.0\\.1:{port}|--port={port})( |$)")
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_file(&self.log);
    }
}
