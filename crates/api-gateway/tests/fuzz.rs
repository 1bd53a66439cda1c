//! A property-based run of the OpenAPI document with Schemathesis (SPEC §10), against the
//! gateway and a status-aggregator in-process over real HTTP and gRPC on a real database:
//! no 5xx, every status, content type, header and body matches the document, schema-valid
//! requests are accepted and schema-violating ones refused, deleted resources are gone,
//! created ones can be read back, and requests without an identity are refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `st` against the app as `who`; the whole report when it fails.
fn schemathesis(app: &TestApp, who: &str, extra: &[&str]) -> Result<(), String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let seed = std::env::var("CLS_FUZZ_SEED").unwrap_or_else(|_| "20261207".to_owned());
    let output = Command::new(python_tool("SCHEMATHESIS", "st"))
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &format!("{}/openapi.json", app.base)])
        // Every check is on by default; tests/schemathesis.toml turns off what cannot hold
        // (a `--checks` option here would override it). One worker: with more, CPython 3.11's
        // `ast.parse` (Hypothesis describing its lambdas) can fail across threads.
        .args(["--seed", &seed, "--workers", "1"])
        .args(["--header", &format!("X-User-Email: {who}")])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run schemathesis (`cargo xtask ci` installs it): {e}"));
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "schemathesis as {who} (seed {seed}; CLS_FUZZ_SEED picks another):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_as_a_user_or_as_a_controller() {
    let app = TestApp::spawn_with_status(&[]).await;
    tokio::task::block_in_place(|| {
        schemathesis(&app, ALICE, &[]).unwrap_or_else(|report| panic!("{report}"));
        // Controllers still read deleted resources (SPEC §2.2), which `use_after_free`
        // would call a failure.
        schemathesis(&app, CONTROLLER, &["--exclude-checks", "use_after_free"])
            .unwrap_or_else(|report| panic!("{report}"));
    });
}
