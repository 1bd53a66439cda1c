//! A local PostgreSQL cluster made with `initdb`/`pg_ctl`, for development (`.data/postgres`)
//! and for stopping the throwaway cluster the test harness starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use xshell::{Shell, cmd};

/// Port of the development cluster (`cargo xtask db`).
pub(crate) const DEV_PORT: u16 = 55432;

/// Where `cargo xtask db` keeps its cluster (git-ignored).
pub(crate) fn dev_dir() -> PathBuf {
    super::project_root().join(".data/postgres")
}

/// Where the test harness (`cls-test-support`) keeps its throwaway cluster; keep in sync with
/// `cls_test_support::postgres::throwaway_dir`.
pub(crate) fn test_dir() -> PathBuf {
    std::env::temp_dir().join("cls-test-pg")
}

fn bindir() -> anyhow::Result<PathBuf> {
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
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
         (`apt-get install postgresql`), set PG_BINDIR, or set DATABASE_URL to an existing server"
    )
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `runuser -u postgres --` when we are root: `initdb` and `postgres` refuse to run as root.
/// (Commands start with `env` so the prefix may be empty.)
fn run_as() -> &'static [&'static str] {
    if as_root() {
        &["runuser", "-u", "postgres", "--"]
    } else {
        &[]
    }
}

pub(crate) fn is_running(dir: &Path) -> bool {
    let (Ok(bin), data) = (bindir(), dir.join("data")) else {
        return false;
    };
    data.exists()
        && Command::new("env")
            .args(run_as())
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Stops the cluster in `dir` if it is running.
pub(crate) fn stop(sh: &Shell, dir: &Path) -> anyhow::Result<()> {
    if !is_running(dir) {
        return Ok(());
    }
    let pg_ctl = bindir()?.join("pg_ctl");
    let data = dir.join("data");
    let run_as = run_as();
    cmd!(sh, "env {run_as...} {pg_ctl} -D {data} -m fast -w stop").run()?;
    Ok(())
}

/// Starts the development cluster if needed, creates the `cls` database if missing, and
/// returns its URL.
pub(crate) fn ensure_dev_database(sh: &Shell) -> anyhow::Result<String> {
    let dir = dev_dir();
    let bin = bindir()?;
    let run_as = run_as();
    let data = dir.join("data");
    if !data.exists() {
        sh.create_dir(&dir)?;
        if as_root() {
            cmd!(sh, "chown postgres {dir}").run()?;
        }
        let initdb = bin.join("initdb");
        cmd!(
            sh,
            "env {run_as...} {initdb} -D {data} -A trust -U postgres -E UTF8"
        )
        .run()?;
    }
    if !is_running(&dir) {
        let pg_ctl = bin.join("pg_ctl");
        let log = dir.join("log");
        let options = format!(
            "-p {DEV_PORT} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        cmd!(
            sh,
            "env {run_as...} {pg_ctl} -D {data} -o {options} -l {log} -w -t 60 start"
        )
        .run()
        .with_context(|| {
            format!(
                "starting Postgres on port {DEV_PORT} (see {})",
                log.display()
            )
        })?;
    }
    let psql = bin.join("psql");
    let port = DEV_PORT.to_string();
    let exists = cmd!(sh, "{psql} -h 127.0.0.1 -p {port} -U postgres -tAc")
        .arg("SELECT 1 FROM pg_database WHERE datname = 'cls'")
        .read()?;
    if exists.trim() != "1" {
        cmd!(sh, "{psql} -h 127.0.0.1 -p {port} -U postgres -c")
            .arg("CREATE DATABASE cls")
            .run()?;
    }
    Ok(format!("postgres://postgres@127.0.0.1:{DEV_PORT}/cls"))
}
