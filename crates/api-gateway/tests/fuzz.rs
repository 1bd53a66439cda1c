//! A property-based run of the OpenAPI document with Schemathesis (SPEC §10), against the
//! gateway and a status-aggregator in-process over real HTTP and gRPC on a real database:
//! no 5xx, every status, content type, header and body matches the document, schema-valid
//! requests are accepted and schema-violating ones refused, deleted resources are gone,
//! created ones can be read back, and requests without an identity are refused: with the
//! identity header as a user and as a controller, and with a bearer token in JWT mode.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `st` against the app with the identity header `identity` (`Name: value`) on every
/// request; panics with the whole report when it fails.
fn schemathesis(app: &TestApp, identity: &str, extra: &[&str]) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let seed = std::env::var("CLS_FUZZ_SEED").unwrap_or_else(|_| "20261207".to_owned());
    let output = tokio::task::block_in_place(|| {
        Command::new(python_tool("SCHEMATHESIS", "st"))
            .arg("--config-file")
            .arg(&config)
            .arg("--no-color")
            .args(["run", &format!("{}/openapi.json", app.base)])
            // Every check is on by default; tests/schemathesis.toml turns off what cannot hold
            // (a `--checks` option here would override it). One worker: with more, CPython
            // 3.11's `ast.parse` (Hypothesis describing its lambdas) can fail across threads.
            .args(["--seed", &seed, "--workers", "1"])
            .args(["--header", identity])
            .args(extra)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run schemathesis (`cargo xtask ci` installs it): {e}")
            })
    });
    assert!(
        output.status.success(),
        "schemathesis with `{identity}` (seed {seed}; CLS_FUZZ_SEED picks another):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How many requests to `method route` the gateway answered with `status` so far.
async fn answered(app: &TestApp, method: &str, route: &str, status: u16) -> u64 {
    app.gateway_series(&format!(
        "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
    ))
    .await
    .map_or(0, |n| n.parse().expect("a counter is an integer"))
}

// A run whose identity does not work fails (401 is no accepted answer to a schema-valid
// request); the counts after each run show that its identity did what only it may do.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_as_a_user_or_as_a_controller() {
    let app = TestApp::spawn_with_status(&[]).await;
    schemathesis(&app, &format!("X-User-Email: {ALICE}"), &[]);
    let created = answered(&app, "POST", "/api/v1/clusters", 201).await;
    assert!(created > 0, "the user's run created no cluster");
    // Controllers still read deleted resources (SPEC §2.2), which `use_after_free`
    // would call a failure.
    schemathesis(
        &app,
        &format!("X-User-Email: {CONTROLLER}"),
        &["--exclude-checks", "use_after_free"],
    );
    let reports = answered(&app, "PUT", "/api/v1/clusters/{id}/status", 200).await
        + answered(&app, "PUT", "/api/v1/nodepools/{id}/status", 200).await;
    assert!(reports > 0, "the controller's run stored no status report");
}

/// In JWT mode the identity is a bearer token's `email` claim: the same document holds, and
/// `ignored_auth` checks that a request without the token is refused. Fewer examples: past
/// the identity the requests go where the runs above already went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_in_jwt_mode() {
    let keys = jwt::Keys::generate();
    let jwks = jwt::JwksFile::write(&keys);
    let app = TestApp::spawn_full(&jwks.gateway_vars(), Some(&[])).await;
    let token = keys.sign("ES256", "ec-1", &jwt::claims(ALICE));
    schemathesis(
        &app,
        &format!("Authorization: Bearer {token}"),
        &["--max-examples", "15"],
    );
    let created = answered(&app, "POST", "/api/v1/clusters", 201).await;
    assert!(created > 0, "the token's run created no cluster");
}
