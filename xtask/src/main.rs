//! Project automation, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `dev [--smoke]`: run the whole system locally (see `dev.rs`).
//! - `deploy-check`: validate the Helm chart, docker-compose.yml and the Dockerfile offline.
//! - `ci`: everything CI checks: formatting, clippy and rustdoc with `-D warnings`, the build,
//!   the whole test suite under nextest (real Postgres, real Pub/Sub emulator, both started by
//!   the test harness itself), `deploy-check`, and `dev --smoke`.
//! - `db [migrate]`: make sure a local Postgres is running (or use `DATABASE_URL`), create the
//!   `cls` database and apply the migrations; prints the `DATABASE_URL` to use.
//! - `db reset`: revert every migration and apply them again.
//! - `db stop`: stop the local Postgres started by `db`.
//! - `bench`: performance against same-run baselines, written to `docs/benchmarks.md`.

mod bench;
mod bench_publisher;
mod bench_scheduler;
mod deploy;
mod dev;
mod pg;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use xshell::{Shell, cmd};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: cargo xtask <ci | bench [all|gateway|publisher] | db [migrate|reset|stop]>";

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match args.as_slice() {
        ["ci"] => ci(&sh),
        ["deploy-check"] => deploy::check(&sh),
        ["dev"] => dev::dev(&sh, false),
        ["dev", "--smoke"] => dev::dev(&sh, true),
        ["db"] | ["db", "migrate"] => db_migrate(&sh),
        ["db", "reset"] => db_reset(&sh),
        ["bench"] => bench::bench(&sh, "all"),
        ["bench", what] => bench::bench(&sh, what),
        ["db", "stop"] => pg::stop(&pg::dev_dir()),
        ["help" | "--help" | "-h"] => {
            eprintln!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

pub(crate) fn project_root() -> PathBuf {
    // `cargo xtask` (`cargo run`) sets `CARGO_MANIFEST_DIR` for the run too, to the checkout
    // it was invoked in. Checkouts sharing one target dir can leave a binary built from
    // another checkout in place, whose compile-time path would send `bench` output there.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The full check CI runs. Tests start their own Postgres (unless `TEST_DATABASE_URL` or
/// `DATABASE_URL` is set) and their own Pub/Sub emulators.
fn ci(sh: &Shell) -> anyhow::Result<()> {
    let test_pg = pg::test_dir();
    let test_pg_was_running = pg::is_running(&test_pg);
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    // Doc links to missing or private items are only warnings by default.
    cmd!(sh, "cargo doc --workspace --no-deps --locked")
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()?;
    cmd!(sh, "cargo build --workspace --all-targets --locked").run()?;
    let validator = python_tool(
        sh,
        "openapi-spec-validator",
        "openapi-spec-validator==0.9.0",
    )?;
    let schemathesis = python_tool(sh, "st", "schemathesis==4.32.5")?;
    let tests = cmd!(sh, "cargo nextest run --workspace --locked --profile ci")
        .env("OPENAPI_SPEC_VALIDATOR", &validator)
        .env("SCHEMATHESIS", &schemathesis)
        .run();
    // Leave the machine as we found it: stop the throwaway test cluster if this run started it.
    if !test_pg_was_running && pg::is_running(&test_pg) {
        pg::stop(&test_pg)?;
    }
    tests?;
    deploy::check(sh)?;
    // The README's first command, end to end: every service started as `cargo xtask dev` does.
    dev::dev(sh, true)?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// A command-line tool from PyPI, installed once into `.tools/venv` (git-ignored).
pub(crate) fn python_tool(sh: &Shell, tool: &str, requirement: &str) -> anyhow::Result<PathBuf> {
    let venv = project_root().join(".tools/venv");
    let path = venv.join("bin").join(tool);
    if !path.exists() {
        if !venv.join("bin/pip").exists() {
            cmd!(sh, "python3 -m venv {venv}").run()?;
        }
        let pip = venv.join("bin/pip");
        cmd!(
            sh,
            "{pip} install --quiet --disable-pip-version-check {requirement}"
        )
        .run()?;
    }
    Ok(path)
}

fn database_url(sh: &Shell) -> anyhow::Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => pg::ensure_dev_database(sh),
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the URL is the task's output, for `eval` or copying"
)]
fn db_migrate(sh: &Shell) -> anyhow::Result<()> {
    let url = database_url(sh)?;
    cmd!(
        sh,
        "cargo run --quiet --locked -p cls-storage --bin migrate"
    )
    .env("DATABASE_URL", &url)
    .run()?;
    println!("DATABASE_URL={url}");
    Ok(())
}

fn db_reset(sh: &Shell) -> anyhow::Result<()> {
    let url = database_url(sh)?;
    cmd!(
        sh,
        "cargo run --quiet --locked -p cls-storage --bin migrate -- --revert-all"
    )
    .env("DATABASE_URL", &url)
    .run()?;
    db_migrate(sh)
}
