//! Postgres for tests: a server, a migrated template database, and one database per test.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{free_port, port_open};

/// The Postgres server tests use: its URL with no database path.
#[derive(Debug)]
struct Server {
    /// e.g. `postgres://postgres@127.0.0.1:5432`, plus any query string of the given URL.
    base: String,
    query: String,
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("{}/{database}{}", self.base, self.query)
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let configured = std::env::var("TEST_DATABASE_URL")
            .or_else(|_| std::env::var("DATABASE_URL"))
            .ok()
            .filter(|url| !url.is_empty());
        let url = match configured {
            Some(url) => url,
            None => throwaway_cluster()
                .unwrap_or_else(|e| panic!("cannot start a throwaway Postgres for tests: {e:#}")),
        };
        split_url(&url)
    })
}

/// Splits `scheme://authority/db?query` into (`scheme://authority`, `?query`).
fn split_url(url: &str) -> Server {
    let (without_query, query) = match url.find('?') {
        Some(i) => (&url[..i], url[i..].to_owned()),
        None => (url, String::new()),
    };
    let authority_start = without_query.find("://").map_or(0, |i| i + 3);
    let base = match without_query[authority_start..].find('/') {
        Some(i) => &without_query[..authority_start + i],
        None => without_query,
    };
    Server {
        base: base.to_owned(),
        query,
    }
}

/// A database of its own for one test, cloned from the migrated template; dropped with it.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh, fully migrated database.
    pub async fn new() -> TestDb {
        let template = template()
            .await
            .unwrap_or_else(|e| panic!("test template: {e:#}"));
        Self::create(Some(template)).await
    }

    /// A fresh database with no schema at all (for migration tests).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let name = format!("cls_test_{}", uuid::Uuid::new_v4().simple());
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        let mut admin = admin().await.unwrap_or_else(|e| panic!("{e:#}"));
        // Copying a template fails while another session is connected to it; that only
        // happens for an instant while another process finishes building the template.
        let mut attempt = 0;
        loop {
            match diesel::sql_query(&sql).execute(&mut admin).await {
                Ok(_) => break,
                Err(e) if attempt < 50 && e.to_string().contains("being accessed") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database {name}: {e}"),
            }
        }
        let url = server().url(&name);
        TestDb { name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to this database.
    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("CLS_KEEP_TEST_DB").is_some() {
            eprintln!("keeping test database {}", self.url);
            return;
        }
        let name = self.name.clone();
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = admin().await?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e:#}", self.name);
        }
    }
}

async fn admin() -> anyhow::Result<AsyncPgConnection> {
    let url = server().url("postgres");
    AsyncPgConnection::establish(&url).await.with_context(|| {
        format!(
            "cannot connect to the test Postgres server at {}",
            server().base
        )
    })
}

static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The name of the migrated template database, building it if this migration set has none
/// yet. Processes coordinate through an advisory lock; the template appears atomically (it is
/// built under a temporary name and renamed), so a crash never leaves a half-migrated one.
async fn template() -> anyhow::Result<&'static str> {
    TEMPLATE
        .get_or_try_init(|| async {
            let name = format!("cls_template_{:016x}", migrations_fingerprint()?);
            let mut admin = admin().await?;
            diesel::sql_query("SELECT pg_advisory_lock($1)")
                .bind::<BigInt, _>(TEMPLATE_LOCK)
                .execute(&mut admin)
                .await?;
            let built = build_template(&mut admin, &name).await;
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(TEMPLATE_LOCK)
                .execute(&mut admin)
                .await?;
            built.map(|()| name)
        })
        .await
        .map(String::as_str)
}

const TEMPLATE_LOCK: i64 = 0x434c_5354;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn build_template(admin: &mut AsyncPgConnection, name: &str) -> anyhow::Result<()> {
    let exists: Count =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(admin)
            .await?;
    if exists.n > 0 {
        return Ok(());
    }
    let building = format!("{name}_building");
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
        .execute(admin)
        .await?;
    diesel::sql_query(format!("CREATE DATABASE {building}"))
        .execute(admin)
        .await?;
    cls_storage::migrate::run(&server().url(&building))
        .await
        .context("migrating the test template")?;
    diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
        .execute(admin)
        .await?;
    Ok(())
}

/// A hash of every file under `migrations/`, so a changed migration gets a new template.
fn migrations_fingerprint() -> anyhow::Result<u64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = Vec::new();
    collect_files(&dir, &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let bytes = fs::read(&file)?;
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        for byte in name.bytes().chain(bytes) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A cluster of one test's own

/// A Postgres cluster of one test's own (its own directory and port), so that restarting it
/// disturbs no other test. Stopped and removed when dropped.
#[derive(Debug)]
pub struct OwnCluster {
    dir: PathBuf,
    port: u16,
    url: String,
}

impl OwnCluster {
    /// Creates and starts the cluster (blocking: `initdb` takes a second or two), migrated
    /// with CLS's schema by the caller if needed. `name` keeps concurrent tests apart.
    pub fn start(name: &str) -> anyhow::Result<OwnCluster> {
        let dir = std::env::temp_dir().join(format!("cls-test-pg-{name}-{}", std::process::id()));
        let port = free_port()?;
        let url = ensure_cluster(&dir, Some(port), &["fsync=off"])?;
        Ok(OwnCluster { dir, port, url })
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the cluster (fast shutdown: every connection is closed), waits a second, and
    /// starts it again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        std::thread::sleep(Duration::from_secs(1));
        self.start_again()
    }

    /// Stops the cluster; [`OwnCluster::start_again`] brings it back on the same port.
    pub fn stop(&self) -> anyhow::Result<()> {
        stop_cluster(&self.dir)
    }

    pub fn start_again(&self) -> anyhow::Result<()> {
        ensure_cluster(&self.dir, Some(self.port), &["fsync=off"]).map(drop)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = stop_cluster(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The throwaway cluster

/// Where the shared throwaway cluster lives. One per machine, reused by every test process
/// (nextest runs each test in its own process) and left running for the next run;
/// `cargo xtask ci` stops it at the end if it started it.
pub fn throwaway_dir() -> PathBuf {
    std::env::temp_dir().join("cls-test-pg")
}

/// Starts (or reuses) the throwaway cluster and returns its URL.
fn throwaway_cluster() -> anyhow::Result<String> {
    ensure_cluster(&throwaway_dir(), None, TEST_SETTINGS)
}

/// Settings for the throwaway test cluster: speed over durability.
const TEST_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
];

/// Makes sure a local cluster in `dir` is running and returns the URL of its `postgres`
/// database. Reuses a running cluster; starts an existing one; creates one with `initdb`
/// (trust auth, user `postgres`) if `dir` has none. Listens on 127.0.0.1 only, on `port` or a
/// free one. Processes coordinate through a lock file, so concurrent callers share one.
pub fn ensure_cluster(dir: &Path, port: Option<u16>, settings: &[&str]) -> anyhow::Result<String> {
    let lock_path = dir.with_extension("lock");
    if let Some(parent) = lock_path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().context("locking the local Postgres cluster")?;
    let url = start_cluster(dir, port, settings);
    drop(lock);
    url
}

fn cluster_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

fn start_cluster(dir: &Path, port: Option<u16>, settings: &[&str]) -> anyhow::Result<String> {
    let port_file = dir.join("port");
    let known_port = fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    if let Some(known) = known_port
        && cluster_running(dir)
        && port_open(known)
    {
        return Ok(cluster_url(known));
    }
    let data = dir.join("data");
    if !data.join("PG_VERSION").exists() {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir)?;
        if running_as_root() {
            run(Command::new("chown").arg("postgres").arg(dir))?;
        }
        run(pg_tool("initdb")?.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]))?;
    }
    let port = match port {
        Some(port) => port,
        None => free_port()?,
    };
    let mut options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        dir.display()
    );
    for setting in settings {
        options.push_str(" -c ");
        options.push_str(setting);
    }
    let log = dir.join("log");
    run(pg_tool("pg_ctl")?
        .arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(&log)
        .args(["-w", "-t", "60", "start"]))
    .with_context(|| format!("starting Postgres on port {port} (see {})", log.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !port_open(port) {
        if Instant::now() > deadline {
            bail!("Postgres did not open port {port}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&port_file, port.to_string())?;
    Ok(cluster_url(port))
}

/// Whether the cluster in `dir` is running.
pub fn cluster_running(dir: &Path) -> bool {
    dir.join("data").exists()
        && pg_tool("pg_ctl").is_ok_and(|mut c| {
            c.arg("-D")
                .arg(dir.join("data"))
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Stops the cluster in `dir` if it is running.
pub fn stop_cluster(dir: &Path) -> anyhow::Result<()> {
    if cluster_running(dir) {
        run(pg_tool("pg_ctl")?
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]))?;
    }
    Ok(())
}

/// A command for a PostgreSQL server tool, run as the `postgres` user when we are root
/// (`initdb` refuses to run as root).
pub fn pg_tool(tool: &str) -> anyhow::Result<Command> {
    let path = pg_bindir()?.join(tool);
    Ok(if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    })
}

/// The directory holding `initdb` and `pg_ctl`: from `PG_BINDIR`, `pg_config --bindir`, or
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql, set PG_BINDIR, or set TEST_DATABASE_URL",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_around_the_database() {
        let s = split_url("postgres://u:p@h:5432/db?sslmode=disable");
        assert_eq!(s.url("x"), "postgres://u:p@h:5432/x?sslmode=disable");
        let s = split_url("postgres://h");
        assert_eq!(s.url("x"), "postgres://h/x");
        let s = split_url("postgresql://postgres@127.0.0.1:25432/postgres");
        assert_eq!(s.url("t"), "postgresql://postgres@127.0.0.1:25432/t");
    }
}
