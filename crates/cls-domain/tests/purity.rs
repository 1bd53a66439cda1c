//! The domain crate stays pure: no async runtime, database, RPC, HTTP or cloud client may
//! appear anywhere in its normal dependency tree.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "diesel",
    "diesel-async",
    "bb8",
    "tonic",
    "prost",
    "hyper",
    "h2",
    "actix-web",
    "actix-rt",
    "actix-http",
    "gcloud-sdk",
    "reqwest",
    "opentelemetry",
    "tracing",
];

fn dependency_names() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "cls-domain",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn domain_dependency_tree_has_no_io_crates() {
    let names = dependency_names();
    assert!(
        names.iter().any(|n| n == "serde"),
        "the tree was read: {names:?}"
    );
    let found: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|f| names.iter().any(|n| n == f))
        .collect();
    assert!(
        found.is_empty(),
        "cls-domain must stay pure but depends on {found:?}"
    );
}
