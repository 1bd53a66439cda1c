//! Local PostgreSQL clusters: the development one (`cargo xtask db`, in `.data/postgres`) and
//! the throwaway one the test harness starts. The cluster mechanics live in
//! `cls-test-support`, shared with the tests.

use std::path::PathBuf;

pub(crate) use cls_test_support::postgres::{
    cluster_running as is_running, stop_cluster as stop, throwaway_dir as test_dir,
};
use cls_test_support::postgres::{ensure_cluster, pg_bindir};
use xshell::{Shell, cmd};

/// Port of the development cluster (`cargo xtask db`).
pub(crate) const DEV_PORT: u16 = 55432;

/// Where `cargo xtask db` keeps its cluster (git-ignored).
pub(crate) fn dev_dir() -> PathBuf {
    super::project_root().join(".data/postgres")
}

/// Starts the development cluster if needed, creates the `cls` database if missing, and
/// returns its URL.
pub(crate) fn ensure_dev_database(sh: &Shell) -> anyhow::Result<String> {
    ensure_cluster(&dev_dir(), Some(DEV_PORT), &[])?;
    let psql = pg_bindir()?.join("psql");
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
