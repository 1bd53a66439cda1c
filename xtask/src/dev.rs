//! `cargo xtask dev`: the whole system on one machine, without Docker.
//!
//! Starts a throwaway Postgres (or uses `DATABASE_URL`) and the Pub/Sub emulator (or uses
//! `PUBSUB_EMULATOR_HOST`), migrates, builds and starts the four services with local defaults,
//! waits until each `/readyz` is green, prints where things are, and streams the services'
//! logs with a prefix each. Ctrl-C stops everything it started — by PID, nothing else — and
//! removes the throwaway database. `--smoke` (used by `cargo xtask ci`) drives a whole
//! lifecycle over HTTP against the running binaries, checks the events on a Pub/Sub
//! subscription at every step, and stops.

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
        let result = smoke_test(&api, &pubsub_host);
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

/// The end-to-end lifecycle against the running binaries, over HTTP only, as a user, a
/// controller and a Pub/Sub subscriber see it: create a cluster and a nodepool → their
/// lifecycle and first reconcile events arrive on a subscription → a controller reports →
/// Ready (and a `status_change` reconcile) → a spec update (generation 2, `spec_change`
/// reconcile) → delete (deletion events). Proves the four services cooperate over gRPC.
fn smoke_test(api: &str, pubsub: &str) -> anyhow::Result<()> {
    let events = Subscription::create(pubsub)?;
    let user = "smoke@example.com";
    let controller = "controller@system.local";
    let name = format!("smoke-{}", std::process::id());
    let cluster = expect(
        201,
        http(
            "POST",
            &format!("{api}/api/v1/clusters"),
            user,
            Some(&serde_json::json!({
                "name": name,
                "spec": {"infraID": "smoke", "platform": {"type": "GCP", "gcp": {
                    "projectID": "p", "region": "us-central1", "network": "n", "subnet": "s"}}}
            })),
        )?,
    )?;
    let id = cluster["id"]
        .as_str()
        .context("no id in the created cluster")?
        .to_owned();
    let nodepool = expect(
        201,
        http(
            "POST",
            &format!("{api}/api/v1/nodepools"),
            user,
            Some(&serde_json::json!({
                "cluster_id": id, "name": "workers",
                "spec": {"replicas": 2, "platform": {"type": "GCP", "gcp": {"instanceType": "n2-standard-8"}}}
            })),
        )?,
    )?;
    let nodepool_id = nodepool["id"]
        .as_str()
        .context("no nodepool id")?
        .to_owned();
    events.wait_for(&[
        ("cluster.created", None, 1),
        ("nodepool.created", None, 1),
        ("cluster.reconcile", Some("never_reconciled"), 1),
        ("nodepool.reconcile", Some("never_reconciled"), 1),
    ])?;
    eprintln!(
        "dev --smoke: cluster {id} and nodepool {nodepool_id} created; lifecycle and first reconcile events received"
    );

    let report = serde_json::json!({
        "controller_name": "smoke-controller", "observed_generation": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": "ok"}]
    });
    expect(
        200,
        http(
            "PUT",
            &format!("{api}/api/v1/clusters/{id}/status"),
            controller,
            Some(&report),
        )?,
    )?;
    let ready = expect(
        200,
        http("GET", &format!("{api}/api/v1/clusters/{id}"), user, None)?,
    )?;
    if ready["status"]["phase"] != "Ready" {
        bail!("the cluster is not Ready after the report: {ready}");
    }
    events.wait_for(&[("cluster.reconcile", Some("status_change"), 1)])?;
    eprintln!("dev --smoke: a controller report made it Ready; status_change reconcile received");

    let mut spec = cluster["spec"].clone();
    spec["infraID"] = "smoke-2".into();
    let updated = expect(
        200,
        http(
            "PUT",
            &format!("{api}/api/v1/clusters/{id}"),
            user,
            Some(&serde_json::json!({"spec": spec})),
        )?,
    )?;
    if updated["generation"] != 2 || updated["status"]["phase"] != "Pending" {
        bail!("a spec update should give generation 2, Pending: {updated}");
    }
    events.wait_for(&[
        ("cluster.updated", None, 2),
        ("cluster.reconcile", Some("spec_change"), 2),
    ])?;
    eprintln!(
        "dev --smoke: spec update to generation 2; cluster.updated and spec_change reconcile received"
    );

    expect(
        202,
        http(
            "DELETE",
            &format!("{api}/api/v1/clusters/{id}?force=true"),
            user,
            None,
        )?,
    )?;
    expect(
        404,
        http("GET", &format!("{api}/api/v1/clusters/{id}"), user, None)?,
    )?;
    events.wait_for(&[("cluster.deleted", None, 2), ("nodepool.deleted", None, 1)])?;
    eprintln!(
        "dev --smoke: deleted; cluster.deleted and nodepool.deleted received — the lifecycle works end to end"
    );
    Ok(())
}

/// The body of a response with the expected status, or an error showing what came instead.
fn expect(status: u16, (got, body): (u16, serde_json::Value)) -> anyhow::Result<serde_json::Value> {
    if got == status {
        Ok(body)
    } else {
        bail!("expected HTTP {status}, got {got}: {body}")
    }
}

/// One HTTP call with curl as `who`; returns the status and the JSON body (null if none).
fn http(
    method: &str,
    url: &str,
    who: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
    ]);
    if !who.is_empty() {
        command.args(["-H", &format!("X-User-Email: {who}")]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = command.output()?;
    let text = String::from_utf8(out.stdout)?;
    let (body, status) = text.rsplit_once('\n').context("no status from curl")?;
    let status: u16 = status
        .trim()
        .parse()
        .with_context(|| format!("{method} {url}: {text}"))?;
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Ordered subscriptions on both topics of the emulator, through its REST API.
struct Subscription {
    base: String,
    names: Vec<String>,
    received: std::cell::RefCell<Vec<serde_json::Value>>,
}

impl Subscription {
    fn create(pubsub: &str) -> anyhow::Result<Subscription> {
        let base = format!("http://{pubsub}/v1/projects/cls-local");
        let mut names = Vec::new();
        for topic in ["cluster-events", "nodepool-events"] {
            let name = format!("smoke-{topic}-{}", std::process::id());
            let body = serde_json::json!({
                "topic": format!("projects/cls-local/topics/{topic}"),
                "ackDeadlineSeconds": 60, "enableMessageOrdering": true
            });
            expect(
                200,
                http(
                    "PUT",
                    &format!("{base}/subscriptions/{name}"),
                    "",
                    Some(&body),
                )?,
            )?;
            names.push(name);
        }
        Ok(Subscription {
            base,
            names,
            received: Default::default(),
        })
    }

    /// Pulls (and acknowledges) until every `(type, reason, generation)` was received at
    /// least once, or fails after 30 s listing what arrived.
    fn wait_for(&self, wanted: &[(&str, Option<&str>, i64)]) -> anyhow::Result<()> {
        use base64::Engine as _;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let missing: Vec<_> = wanted
                .iter()
                .filter(|(kind, reason, generation)| {
                    !self.received.borrow().iter().any(|e| {
                        e["type"] == *kind
                            && e["generation"] == *generation
                            && reason.is_none_or(|r| e["reason"] == r)
                    })
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "events {missing:?} never arrived; received: {:#?}",
                    self.received.borrow()
                );
            }
            for name in &self.names {
                let url = format!("{}/subscriptions/{name}", self.base);
                let (_, pulled) = http(
                    "POST",
                    &format!("{url}:pull"),
                    "",
                    Some(&serde_json::json!({
                        "maxMessages": 100, "returnImmediately": true
                    })),
                )?;
                let mut ack_ids = Vec::new();
                for m in pulled["receivedMessages"].as_array().into_iter().flatten() {
                    ack_ids.push(m["ackId"].clone());
                    let data = m["message"]["data"].as_str().unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
                    self.received
                        .borrow_mut()
                        .push(serde_json::from_slice(&bytes)?);
                }
                if !ack_ids.is_empty() {
                    http(
                        "POST",
                        &format!("{url}:acknowledge"),
                        "",
                        Some(&serde_json::json!({"ackIds": ack_ids})),
                    )?;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs a closure when dropped (clean-up on every exit path).
struct Stop<F: FnMut()>(F);

impl<F: FnMut()> Drop for Stop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
