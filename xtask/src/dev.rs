//! `cargo xtask dev`: the whole system on one machine, without Docker.
//!
//! Starts a throwaway Postgres (or uses `DATABASE_URL`) and the Pub/Sub emulator (or uses
//! `PUBSUB_EMULATOR_HOST`), migrates, builds and starts the four services with local defaults,
//! waits until each `/readyz` is green, prints where things are, and streams the services'
//! logs with a prefix each. Ctrl-C stops everything it started — by PID, nothing else — and
//! removes the throwaway database. `--smoke` (used by `cargo xtask ci`) creates a cluster
//! through the API, waits until the scheduler's first reconcile event for it was published to
//! Pub/Sub, and stops.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cls_test_support::PubSubEmulator;
use cls_test_support::postgres::{ensure_cluster, pg_bindir, stop_cluster};
use xshell::{Shell, cmd};

/// A service to run: binary, admin port, extra environment.
struct Service {
    name: &'static str,
    admin_port: u16,
    env: Vec<(&'static str, String)>,
}

/// A started service, stopped (TERM, then KILL) when dropped.
struct Running {
    name: &'static str,
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("dev: stopped {}", self.name);
        }
    }
}

fn require(tool_ok: bool, message: &str) -> anyhow::Result<()> {
    if tool_ok { Ok(()) } else { bail!("{message}") }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port to use: `preferred` when free, else any free one.
fn port(preferred: u16) -> anyhow::Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        Ok(preferred)
    } else {
        Ok(cls_test_support::free_port()?)
    }
}

pub(crate) fn dev(sh: &Shell, smoke: bool) -> anyhow::Result<()> {
    // Prerequisites, each with what to install.
    let own_database = std::env::var("DATABASE_URL").map_or(true, |v| v.is_empty());
    if own_database {
        require(
            pg_bindir().is_ok(),
            "PostgreSQL server binaries (initdb, pg_ctl) are needed: apt-get install postgresql, or set DATABASE_URL",
        )?;
    }
    let own_emulator = std::env::var("PUBSUB_EMULATOR_HOST").map_or(true, |v| v.is_empty());
    if own_emulator {
        require(
            on_path("gcloud") && on_path("java"),
            "the Pub/Sub emulator is needed: install the Google Cloud SDK with the pubsub-emulator component and a Java runtime, or set PUBSUB_EMULATOR_HOST",
        )?;
    }

    cmd!(
        sh,
        "cargo build --locked -p api-gateway -p status-aggregator -p event-publisher -p reconcile-scheduler -p cls-storage"
    )
    .run()?;
    let bin = crate::bench::target_dir().join("debug");

    // Postgres: a throwaway cluster of this run (stopped and removed at the end), or the
    // caller's.
    let (database_url, _pg_guard) = if own_database {
        let (dir, url) = throwaway_postgres()?;
        let guard = Stop(move || {
            let _ = stop_cluster(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(dir.with_extension("lock"));
            eprintln!("dev: stopped and removed the throwaway Postgres");
        });
        (url, Some(guard))
    } else {
        (std::env::var("DATABASE_URL")?, None)
    };
    cmd!(sh, "{bin}/migrate")
        .env("DATABASE_URL", &database_url)
        .run()?;

    // Pub/Sub: a fresh emulator (its state is in memory; stopped with this process).
    let emulator = if own_emulator {
        eprintln!("dev: starting the Pub/Sub emulator…");
        Some(PubSubEmulator::start()?)
    } else {
        None
    };
    let pubsub_host = match &emulator {
        Some(e) => e.host(),
        None => std::env::var("PUBSUB_EMULATOR_HOST")?,
    };

    let api_port = port(8080)?;
    let aggregator_grpc = port(50051)?;
    let scheduler_grpc = port(50052)?;
    let publisher_grpc = port(50053)?;
    let scheduler_url = format!("http://127.0.0.1:{scheduler_grpc}");
    let services = [
        Service {
            name: "status-aggregator",
            admin_port: port(8083)?,
            env: vec![
                ("GRPC_PORT", aggregator_grpc.to_string()),
                ("RECONCILE_SCHEDULER_URL", scheduler_url.clone()),
            ],
        },
        Service {
            name: "event-publisher",
            admin_port: port(8082)?,
            env: vec![
                ("GRPC_PORT", publisher_grpc.to_string()),
                ("PUBSUB_EMULATOR_HOST", pubsub_host.clone()),
                ("GOOGLE_CLOUD_PROJECT", "cls-local".to_owned()),
            ],
        },
        Service {
            name: "reconcile-scheduler",
            admin_port: port(8084)?,
            env: vec![
                ("GRPC_PORT", scheduler_grpc.to_string()),
                (
                    "EVENT_PUBLISHER_URL",
                    format!("http://127.0.0.1:{publisher_grpc}"),
                ),
            ],
        },
        Service {
            name: "api-gateway",
            admin_port: port(8081)?,
            env: vec![
                ("PORT", api_port.to_string()),
                (
                    "STATUS_AGGREGATOR_URL",
                    format!("http://127.0.0.1:{aggregator_grpc}"),
                ),
                ("RECONCILE_SCHEDULER_URL", scheduler_url),
            ],
        },
    ];

    let (lines, log) = mpsc::channel::<String>();
    let mut running = Vec::new();
    for service in &services {
        let mut command = Command::new(bin.join(service.name));
        command
            .env("DATABASE_URL", &database_url)
            .env("METRICS_PORT", service.admin_port.to_string())
            .env("LOG_FORMAT", "text")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C reaches us, and we stop the services in order.
            .process_group(0);
        for (k, v) in &service.env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", service.name))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (lines, name) = (lines.clone(), service.name);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if lines.send(format!("[{name:<19}] {line}")).is_err() {
                        break;
                    }
                }
            });
        }
        running.push(Running {
            name: service.name,
            child,
        });
    }
    drop(lines);

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    // Ready when every /readyz is green; a service that exits early is an error.
    let deadline = Instant::now() + Duration::from_secs(90);
    for (service, run) in services.iter().zip(running.iter_mut()) {
        loop {
            drain(&log);
            if let Some(status) = run.child.try_wait()? {
                bail!("{} exited early with {status}", service.name);
            }
            if http_ok(&format!("http://127.0.0.1:{}/readyz", service.admin_port)) {
                break;
            }
            if Instant::now() > deadline || stop_rx.try_recv().is_ok() {
                bail!("{} did not become ready", service.name);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let api = format!("http://127.0.0.1:{api_port}");
    eprintln!(
        "\ndev: CLS is running\n  API:      {api}/api/v1/clusters\n  docs:     {api}/docs/\n  metrics:  gateway :{} · aggregator :{} · publisher :{} · scheduler :{}\n  Pub/Sub:  {pubsub_host} (project cls-local)\n  database: {database_url}\n\n  try: curl -s -H 'X-User-Email: you@example.com' {api}/api/v1/clusters\n\n  Ctrl-C stops everything started here.\n",
        services[3].admin_port,
        services[0].admin_port,
        services[1].admin_port,
        services[2].admin_port
    );

    if smoke {
        let result = smoke_test(&api, services[2].admin_port, services[1].admin_port);
        drain(&log);
        running.reverse();
        drop(running);
        drop(emulator);
        return result;
    }
    loop {
        drain(&log);
        if stop_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            eprintln!("\ndev: stopping…");
            break;
        }
        for run in &mut running {
            if let Some(status) = run.child.try_wait()? {
                eprintln!(
                    "dev: {} exited with {status}; stopping everything",
                    run.name
                );
                drop(running);
                drop(emulator);
                bail!("a service stopped");
            }
        }
    }
    // Services first (they drain), then the emulator, then Postgres (the guard).
    running.reverse();
    drop(running);
    drop(emulator);
    Ok(())
}

/// Starts a fresh cluster in the temp directory, named after this process, on a free port, and
/// returns its directory and URL. Clusters left by earlier runs that died without cleaning up
/// (their process is gone) are stopped and removed first, so nothing stale is reused.
fn throwaway_postgres() -> anyhow::Result<(std::path::PathBuf, String)> {
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("cls-dev-")
            .map(|rest| rest.trim_end_matches(".lock"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            let _ = stop_cluster(&path);
            let _ = std::fs::remove_dir_all(&path);
            eprintln!("dev: removed the Postgres of an earlier run ({name})");
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let dir = tmp.join(format!("cls-dev-{}", std::process::id()));
    eprintln!("dev: starting a throwaway Postgres in {}…", dir.display());
    let url = ensure_cluster(&dir, None, &[])?;
    Ok((dir, url))
}

/// Prints what the services logged so far.
fn drain(log: &mpsc::Receiver<String>) {
    while let Ok(line) = log.try_recv() {
        eprintln!("{line}");
    }
}

fn http_ok(url: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "--max-time", "2", url])
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates a cluster through the API, reads its status back, and waits until the scheduler
/// emitted its first reconcile and the publisher delivered both events to Pub/Sub: every
/// service took part, over its real gRPC and Pub/Sub connections.
fn smoke_test(api: &str, scheduler_admin: u16, publisher_admin: u16) -> anyhow::Result<()> {
    let name = format!("smoke-{}", std::process::id());
    let body = format!(
        r#"{{"name":"{name}","spec":{{"infraID":"smoke","platform":{{"type":"gcp","gcp":{{"projectID":"p","region":"r","network":"n","subnet":"s"}}}}}}}}"#
    );
    let created = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{api}/api/v1/clusters"),
    ])?;
    let cluster: serde_json::Value = serde_json::from_str(&created)?;
    let id = cluster["id"]
        .as_str()
        .context("no id in the created cluster")?;
    let status: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("{api}/api/v1/clusters/{id}/status")])?)?;
    if status["status"]["phase"] != "Pending" {
        bail!("unexpected status of a new cluster: {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let scheduled = r#"reconcile_events_emitted_total{kind="cluster",reason="never_reconciled"}"#;
    let published = r#"events_published_total{topic="cluster-events"}"#;
    loop {
        let emitted = metric(scheduler_admin, scheduled)?;
        let delivered = metric(publisher_admin, published)?;
        if emitted >= 1.0 && delivered >= 2.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("events did not flow: {scheduled} = {emitted}, {published} = {delivered}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "dev --smoke: created cluster {id}, read its status, and saw cluster.created and its first reconcile published"
    );
    Ok(())
}

/// One series of a service's `/metrics` (0 when absent).
fn metric(admin_port: u16, series: &str) -> anyhow::Result<f64> {
    let text = curl(&[&format!("http://127.0.0.1:{admin_port}/metrics")])?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0))
}

fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "10",
            "-H",
            "X-User-Email: smoke@example.com",
        ])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs a closure when dropped (clean-up on every exit path).
struct Stop<F: FnMut()>(F);

impl<F: FnMut()> Drop for Stop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
