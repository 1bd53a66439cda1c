//! The status endpoints end to end: the gateway in-process over real HTTP, the
//! status-aggregator in-process over real gRPC, one real database (SPEC §3.3, §4).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A controller's report: `Available` True or False, optionally with an error.
fn report(controller: &str, generation: i64, available: bool, error: bool) -> Value {
    let last_error = if error {
        json!({"controllerName": controller, "errorType": "Transient", "errorCode": "QUOTA",
               "message": "quota exceeded", "userActionable": false})
    } else {
        Value::Null
    };
    json!({
        "controller_name": controller,
        "observed_generation": generation,
        "conditions": [{"type": "Available", "status": if available { "True" } else { "False" },
                        "reason": "Working", "message": "on it"}],
        "metadata": {"attempt": 1},
        "last_error": last_error,
    })
}

/// The status path of the resource under test, and the `Cluster`/`NodePool` word of messages.
struct Target {
    path: String,
    resource: String,
    word: &'static str,
}

async fn targets(app: &TestApp) -> [Target; 2] {
    let cluster = app.create_cluster(ALICE, "status-c").await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    let nodepool = app.create_nodepool(ALICE, &id, "pool-a").await;
    let np = nodepool["id"].as_str().unwrap();
    [
        Target {
            path: format!("/api/v1/clusters/{id}/status"),
            resource: format!("/api/v1/clusters/{id}"),
            word: "Cluster",
        },
        Target {
            path: format!("/api/v1/nodepools/{np}/status"),
            resource: format!("/api/v1/nodepools/{np}"),
            word: "NodePool",
        },
    ]
}

async fn put_report(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value) {
    app.put(path, CONTROLLER, body).await
}

/// Reports and expects 200.
async fn accept(app: &TestApp, path: &str, body: &Value) {
    let (status, answer) = put_report(app, path, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn status_of(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get(path, ALICE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// phase, reason, message, (Ready reason, message, status), (Available reason, message, status)
fn summary(view: &Value) -> Vec<String> {
    let s = &view["status"];
    let mut out = vec![
        s["phase"].as_str().unwrap().to_owned(),
        s["reason"].as_str().unwrap().to_owned(),
        s["message"].as_str().unwrap().to_owned(),
    ];
    for (i, kind) in ["Ready", "Available"].iter().enumerate() {
        let c = &s["conditions"][i];
        assert_eq!(c["type"], *kind);
        for field in ["reason", "message", "status"] {
            out.push(c[field].as_str().unwrap().to_owned());
        }
    }
    out
}

fn expect(row: [&str; 9]) -> Vec<String> {
    row.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_table_through_the_api_for_clusters_and_nodepools() {
    let app = TestApp::spawn_with_status(&[]).await;
    for t in targets(&app).await {
        let w = t.word;
        let view = status_of(&app, &t.path).await;
        assert_eq!(view["controller_status"], json!([]));
        assert_eq!(
            summary(&view),
            expect([
                "Pending",
                "NoControllers",
                "Waiting for controllers to report status",
                "ControllersNotReady",
                "No controllers have reported status yet",
                "False",
                "ControllersNotAvailable",
                "No controllers are available yet",
                "False",
            ])
        );

        accept(&app, &t.path, &report("ctl-a", 1, false, false)).await;
        assert_eq!(
            summary(&status_of(&app, &t.path).await),
            expect([
                "Progressing",
                "ControllersProvisioning",
                "Controllers are provisioning resources (29 minutes remaining) (1 controllers working)",
                "ControllersNotYetReady",
                "Controllers are still working (1 of 1 controllers)",
                "False",
                "ControllersBecomingAvailable",
                "Controllers are becoming available (1 working)",
                "False",
            ])
        );

        accept(&app, &t.path, &report("ctl-b", 1, true, false)).await;
        assert_eq!(
            summary(&status_of(&app, &t.path).await),
            expect([
                "Progressing",
                "PartialProgress",
                &format!("{w} is progressing (1/2 controllers ready)"),
                "PartiallyReady",
                "1 of 2 controllers are ready",
                "False",
                "PartiallyAvailable",
                "Controllers are still becoming available (1 available of 2)",
                "False",
            ])
        );

        accept(&app, &t.path, &report("ctl-a", 1, false, true)).await;
        assert_eq!(
            summary(&status_of(&app, &t.path).await),
            expect([
                "Progressing",
                "ControllersWithErrors",
                &format!("{w} is progressing but some controllers have errors (1/2 ready)"),
                "PartiallyReady",
                "1 of 2 controllers are ready",
                "False",
                "PartiallyAvailableWithErrors",
                "Some controllers have errors (1 available of 2)",
                "False",
            ])
        );

        accept(&app, &t.path, &report("ctl-a", 1, true, false)).await;
        let view = status_of(&app, &t.path).await;
        assert_eq!(
            summary(&view),
            expect([
                "Ready",
                "AllControllersReady",
                &format!("{w} is ready with 2 controllers operational"),
                "AllControllersReady",
                "All 2 controllers are ready",
                "True",
                "AllControllersAvailable",
                "All 2 controllers are available",
                "True",
            ])
        );
        // One row per controller, sorted, with what the controller sent.
        let rows = view["controller_status"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["controller_name"], "ctl-a");
        assert_eq!(rows[1]["controller_name"], "ctl-b");
        assert_eq!(rows[0]["metadata"], json!({"attempt": 1}));
        assert_eq!(rows[0]["last_error"], Value::Null);
        // The resource itself shows the stored aggregate (reads never write).
        let (_, resource) = app.get(&t.resource, ALICE).await;
        assert_eq!(resource["status"], view["status"]);
        assert_eq!(status_of(&app, &t.path).await["status"], view["status"]);
    }
}

/// Polls the status until its reason is `reason`.
async fn wait_for_reason(app: &TestApp, path: &str, reason: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = status_of(app, path).await;
        if view["status"]["reason"] == reason {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "still {} instead of {reason}",
            view["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_alone_moves_provisioning_to_showing_progress_to_failed() {
    let app = TestApp::spawn_with_status(&[
        ("STATUS_GRACE_PERIOD", "2s"),
        ("STATUS_PROGRESS_WINDOW", "2s"),
        ("STATUS_SWEEP_INTERVAL", "100ms"),
    ])
    .await;
    let targets = targets(&app).await;
    for t in &targets {
        accept(&app, &t.path, &report("ctl-a", 1, false, false)).await;
        let view = status_of(&app, &t.path).await;
        assert_eq!(view["status"]["reason"], "ControllersProvisioning");
        assert_eq!(
            view["status"]["message"],
            "Controllers are provisioning resources (1 controllers working)",
            "no minutes left to mention"
        );
    }
    // A second report on the same generation keeps the grace clock (first report) running.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for t in &targets {
        accept(&app, &t.path, &report("ctl-a", 1, false, false)).await;
    }
    for t in &targets {
        let view = wait_for_reason(
            &app,
            &t.path,
            "ControllersShowingProgress",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(view["status"]["phase"], "Progressing");
        assert_eq!(
            view["status"]["message"],
            "Controllers are actively working but not yet ready (1 controllers showing progress)"
        );
    }
    // No more reports: the sweep alone declares the timeout.
    for t in &targets {
        let view =
            wait_for_reason(&app, &t.path, "ControllerTimeout", Duration::from_secs(6)).await;
        assert_eq!(
            summary(&view),
            expect([
                "Failed",
                "ControllerTimeout",
                "Controllers failed to become ready after 0 minutes with no progress (1 controllers timed out)",
                "ControllersTimedOut",
                "Controllers timed out after 0 minutes",
                "False",
                "ControllersTimedOut",
                "No controllers became available after 0 minutes",
                "False",
            ])
        );
    }
    let admin = app.aggregator.as_ref().unwrap().admin_addr;
    let scrape = scrape(&format!("http://{admin}")).await;
    assert!(
        scrape.contains(r#"status_phase_transitions_total{phase="Failed"} 2"#),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_shows_pending_until_controllers_report_on_the_new_generation() {
    let app = TestApp::spawn_with_status(&[]).await;
    let cluster = app.create_cluster(ALICE, "gen-aware").await;
    let id = cluster["id"].as_str().unwrap();
    let path = format!("/api/v1/clusters/{id}/status");
    accept(&app, &path, &report("ctl-a", 1, true, false)).await;
    assert_eq!(status_of(&app, &path).await["status"]["phase"], "Ready");

    let mut spec = cluster["spec"].clone();
    spec["infraID"] = json!("infra-changed");
    let (status, updated) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["generation"], 2);
    let view = status_of(&app, &path).await;
    assert_eq!(view["status"]["phase"], "Pending");
    assert_eq!(view["status"]["observedGeneration"], 2);

    // A late report on generation 1 is stored but does not count for generation 2.
    accept(&app, &path, &report("ctl-a", 1, true, false)).await;
    assert_eq!(status_of(&app, &path).await["status"]["phase"], "Pending");
    accept(&app, &path, &report("ctl-a", 2, true, false)).await;
    let view = status_of(&app, &path).await;
    assert_eq!(view["status"]["phase"], "Ready");
    assert_eq!(view["status"]["observedGeneration"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_upsert_one_row_and_keep_transition_times_while_status_holds() {
    let app = TestApp::spawn_with_status(&[]).await;
    let cluster = app.create_cluster(ALICE, "upsert").await;
    let path = format!(
        "/api/v1/clusters/{}/status",
        cluster["id"].as_str().unwrap()
    );
    accept(&app, &path, &report("ctl-a", 1, true, false)).await;
    let first = status_of(&app, &path).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    accept(&app, &path, &report("ctl-a", 1, true, false)).await;
    let second = status_of(&app, &path).await;
    let rows = second["controller_status"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one row per controller");
    assert_eq!(
        rows[0]["conditions"][0]["lastTransitionTime"],
        first["controller_status"][0]["conditions"][0]["lastTransitionTime"],
        "the controller's condition kept its transition time"
    );
    assert_eq!(
        second["status"]["conditions"][0]["lastTransitionTime"],
        first["status"]["conditions"][0]["lastTransitionTime"],
        "the aggregated Ready condition kept its transition time"
    );
    assert_ne!(
        rows[0]["last_updated"],
        first["controller_status"][0]["last_updated"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_with_clear_errors_and_change_nothing() {
    let app = TestApp::spawn_with_status(&[]).await;
    let cluster = app.create_cluster(ALICE, "strict").await;
    let id = cluster["id"].as_str().unwrap();
    let path = format!("/api/v1/clusters/{id}/status");
    accept(&app, &path, &report("ctl-a", 1, true, false)).await;
    let before = status_of(&app, &path).await;

    // A user may not write status, even on its own cluster.
    let (status, body) = app
        .put(&path, ALICE, &report("ctl-a", 1, true, false))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    // Counted with the aggregator's report results (the gateway refuses it alone).
    let metrics = app.gateway_metrics().await;
    assert!(
        metrics.contains(r#"status_reports_total{result="forbidden"} 1"#),
        "{metrics}"
    );
    // A generation the cluster does not have yet.
    let (status, body) = put_report(&app, &path, &report("ctl-a", 5, true, false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["field"], "observed_generation");
    // Missing controller name; a bad timestamp.
    let mut nameless = report("ctl-a", 1, true, false);
    nameless.as_object_mut().unwrap().remove("controller_name");
    let (status, body) = put_report(&app, &path, &nameless).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "controller_name");
    let mut bad_time = report("ctl-a", 1, true, false);
    bad_time["conditions"][0]["lastTransitionTime"] = json!("yesterday");
    let (status, body) = put_report(&app, &path, &bad_time).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"][0]["field"],
        "conditions[0].lastTransitionTime"
    );
    // Unknown fields are named.
    let mut typo = report("ctl-a", 1, true, false);
    typo["observed_generaton"] = json!(1);
    let (status, body) = put_report(&app, &path, &typo).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "observed_generaton");
    // A key given twice: which one would count is up to the parser, so neither does.
    let twice = report("ctl-b", 1, true, false).to_string().replacen(
        r#""controller_name":"ctl-b""#,
        r#""controller_name":"ctl-b","controller_name":"ctl-c""#,
        1,
    );
    assert!(twice.contains("ctl-c"), "{twice}");
    let (status, body) = app
        .send_raw(Method::PUT, &path, CONTROLLER, "application/json", twice)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["errors"],
        json!([{"field": "controller_name", "message": "is given more than once"}])
    );
    // A wrong type does not hide the other violations.
    let mut mixed = report("ctl-a", 1, true, false);
    mixed["observed_generation"] = json!("one");
    mixed.as_object_mut().unwrap().remove("controller_name");
    mixed["conditions"][0]["lastTransitionTime"] = json!("yesterday");
    let (status, body) = put_report(&app, &path, &mixed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut fields = strings(&body["errors"], "field");
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "conditions[0].lastTransitionTime",
            "controller_name",
            "observed_generation"
        ],
        "{body}"
    );
    assert_eq!(status_of(&app, &path).await, before, "nothing changed");

    // Stale: after a report on generation 2, one on generation 1 is refused.
    let mut spec = cluster["spec"].clone();
    spec["infraID"] = json!("infra-2");
    app.put(
        &format!("/api/v1/clusters/{id}"),
        ALICE,
        &json!({"spec": spec}),
    )
    .await;
    accept(&app, &path, &report("ctl-a", 2, true, false)).await;
    let settled = status_of(&app, &path).await;
    let (status, body) = put_report(&app, &path, &report("ctl-a", 1, false, true)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "STALE_STATUS_REPORT");
    assert_eq!(status_of(&app, &path).await, settled, "nothing changed");

    // Isolation: another user sees nothing; unknown ids are 404 for controllers too.
    let (status, body) = app.get(&path, BOB).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("CLUSTER_NOT_FOUND"))
    );
    let missing = "/api/v1/nodepools/00000000-0000-4000-8000-000000000000/status";
    let (status, body) = put_report(&app, missing, &report("ctl-a", 1, true, false)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NODEPOOL_NOT_FOUND"))
    );

    // Deleted: controllers may still report (and read).
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/clusters/{id}?force=true"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    accept(&app, &path, &report("ctl-b", 2, true, false)).await;
    let (status, _) = app.get(&path, CONTROLLER).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_leave_the_aggregate_of_the_stored_rows() {
    let app = std::sync::Arc::new(TestApp::spawn_with_status(&[]).await);
    let cluster = app.create_cluster(ALICE, "busy").await;
    let path = format!(
        "/api/v1/clusters/{}/status",
        cluster["id"].as_str().unwrap()
    );
    let mut tasks = Vec::new();
    for c in 0..5 {
        for i in 0..20 {
            let (app, path) = (app.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let body = report(&format!("ctl-{c}"), 1, (i + c) % 3 != 0, i % 7 == 0);
                let (status, answer) = put_report(&app, &path, &body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let view = status_of(&app, &path).await;
    let rows: Vec<cls_domain::status::ControllerStatus> =
        serde_json::from_value(view["controller_status"].clone()).unwrap();
    assert_eq!(rows.len(), 5);
    let stored: cls_domain::status::Status =
        serde_json::from_value(view["status"].clone()).unwrap();
    let summaries: Vec<_> = rows.iter().map(|r| r.summary()).collect();
    let fresh = cls_domain::aggregate::aggregate(&cls_domain::aggregate::AggregationInput {
        kind: cls_domain::resource::ResourceKind::Cluster,
        generation: 1,
        controllers: &summaries,
        previous: Some(&stored),
        now: stored.last_update_time,
        grace: cls_domain::aggregate::DEFAULT_GRACE,
        progress_window: cls_domain::aggregate::PROGRESS_WINDOW,
    });
    assert_eq!(
        fresh.status, stored,
        "the stored aggregate reflects the final rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_aggregator_status_answers_503_fast_and_the_rest_works() {
    let mut app = TestApp::spawn_with_status(&[]).await;
    let cluster = app.create_cluster(ALICE, "alone").await;
    let id = cluster["id"].as_str().unwrap();
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    app.aggregator.take().unwrap().abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Not ready: the aggregator is the gRPC peer the gateway needs (SPEC §3.3), named in the
    // problem; on the admin port too (the probes' port).
    for url in [
        format!("{}/readyz", app.base),
        format!("{}/readyz", app.admin),
    ] {
        let started = Instant::now();
        let response = app.client.get(url).send().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered promptly"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "UNAVAILABLE");
        assert_eq!(
            body["message"],
            "the status aggregator is unavailable, retry later"
        );
    }
    let started = Instant::now();
    let response = app
        .request(
            Method::PUT,
            &format!("/api/v1/clusters/{id}/status"),
            Some(CONTROLLER),
        )
        .json(&report("ctl-a", 1, true, false))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered promptly"
    );
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = read(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE"))
    );
    let (status, _) = app
        .get(&format!("/api/v1/clusters/{id}/status"), ALICE)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.get(&format!("/api/v1/clusters/{id}"), ALICE).await;
    assert_eq!(status, StatusCode::OK, "other endpoints are unaffected");
}

/// A Postgres restart under the aggregator (SPEC §8): reports answer 503 `UNAVAILABLE`
/// while it is down (never a 500 or a hang); afterwards the same aggregator stores reports
/// again by itself, and the report accepted before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_recover_from_a_postgres_restart_without_restarting() {
    use cls_test_support::postgres::OwnCluster;
    let pg = tokio::task::block_in_place(|| OwnCluster::start("aggregator-restart")).unwrap();
    cls_storage::migrate::run(pg.url()).await.unwrap();
    let db = [("DATABASE_URL", pg.url())];
    let app = TestApp::spawn_full(&db, Some(&db)).await;
    let cluster = app.create_cluster(ALICE, "restarted").await;
    let path = format!(
        "/api/v1/clusters/{}/status",
        cluster["id"].as_str().unwrap()
    );
    assert_eq!(
        app.put(&path, CONTROLLER, &report("ctl-a", 1, false, false))
            .await
            .0,
        StatusCode::OK
    );

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let started = Instant::now();
    let (status, body) = app
        .put(&path, CONTROLLER, &report("ctl-b", 1, true, false))
        .await;
    assert_problem(status, &body, 503, "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(10), "prompt");

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app
            .put(&path, CONTROLLER, &report("ctl-b", 1, true, false))
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert_problem(status, &body, 503, "UNAVAILABLE");
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..20 {
        let (status, body) = app
            .put(&path, CONTROLLER, &report("ctl-b", 1, true, false))
            .await;
        assert_eq!(status, StatusCode::OK, "report {i} after recovery: {body}");
    }
    let (status, got) = app.get(&path, CONTROLLER).await;
    assert_eq!(status, StatusCode::OK);
    let controllers = strings(&got["controller_status"], "controller_name");
    assert_eq!(
        controllers,
        ["ctl-a", "ctl-b"],
        "the report from before is kept"
    );
    assert_eq!(got["status"]["reason"], "PartialProgress");
}
