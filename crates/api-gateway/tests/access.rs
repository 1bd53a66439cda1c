//! The access matrix of SPEC §2.2 for every endpoint: owner, another user, a controller, an
//! anonymous caller and a malformed identity. Invisible resources answer 404 exactly as if
//! they did not exist.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Fixture {
    cluster: String,
    nodepool: String,
    cluster_spec: Value,
    nodepool_spec: Value,
}

async fn fixture(app: &TestApp) -> Fixture {
    let cluster = app.create_cluster(ALICE, "alices").await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    let nodepool = app.create_nodepool(ALICE, &id, "pool").await;
    Fixture {
        cluster: id,
        nodepool: nodepool["id"].as_str().unwrap().to_owned(),
        cluster_spec: cluster["spec"].clone(),
        nodepool_spec: nodepool["spec"].clone(),
    }
}

/// Every endpoint except deletions, as (method, path, body).
fn endpoints(f: &Fixture, tag: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/clusters".into(), None),
        (
            Method::POST,
            "/api/v1/clusters".into(),
            Some(cli_cluster(&format!("new-{tag}"))),
        ),
        (Method::GET, format!("/api/v1/clusters/{}", f.cluster), None),
        (
            Method::PUT,
            format!("/api/v1/clusters/{}", f.cluster),
            Some(json!({"spec": f.cluster_spec})),
        ),
        (
            Method::GET,
            format!("/api/v1/clusters/{}/nodepools", f.cluster),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/clusters/{}/nodepools", f.cluster),
            Some(cli_nodepool(&f.cluster, &format!("a-{tag}"), 1)),
        ),
        (Method::GET, "/api/v1/nodepools".into(), None),
        (
            Method::POST,
            "/api/v1/nodepools".into(),
            Some(cli_nodepool(&f.cluster, &format!("b-{tag}"), 1)),
        ),
        (
            Method::GET,
            format!("/api/v1/nodepools/{}", f.nodepool),
            None,
        ),
        (
            Method::PUT,
            format!("/api/v1/nodepools/{}", f.nodepool),
            Some(json!({"spec": f.nodepool_spec})),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_malformed_identities_are_refused_everywhere() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let mut all = endpoints(&f, "x");
    all.push((
        Method::DELETE,
        format!("/api/v1/nodepools/{}", f.nodepool),
        None,
    ));
    all.push((
        Method::DELETE,
        format!("/api/v1/clusters/{}", f.cluster),
        None,
    ));
    for (method, path, body) in &all {
        let (status, problem) = app.call(method.clone(), path, None, body.as_ref()).await;
        assert_problem(status, &problem, 401, "AUTH_REQUIRED");
        for bad in ["not-an-email", "two@@example.com", "x@localhost"] {
            let (status, problem) = app
                .call(method.clone(), path, Some(bad), body.as_ref())
                .await;
            assert_problem(status, &problem, 401, "INVALID_EMAIL");
        }
    }
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "nodepool.created"],
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_sees_nothing_and_learns_nothing() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let missing = "0196a0f0-0000-7000-8000-00000000beef";
    let expected: [(u16, Option<&str>); 10] = [
        (200, None),
        (201, None),
        (404, Some("CLUSTER_NOT_FOUND")),
        (404, Some("CLUSTER_NOT_FOUND")),
        (404, Some("CLUSTER_NOT_FOUND")),
        (404, Some("CLUSTER_NOT_FOUND")),
        (200, None),
        (400, Some("INVALID_CLUSTER_ID")),
        (404, Some("NODEPOOL_NOT_FOUND")),
        (404, Some("NODEPOOL_NOT_FOUND")),
    ];
    for ((method, path, body), (want, code)) in endpoints(&f, "bob").into_iter().zip(expected) {
        let (status, response) = app
            .call(method.clone(), &path, Some(BOB), body.as_ref())
            .await;
        match code {
            Some(code) => {
                assert_problem(status, &response, want, code);
                // The same request about an id that does not exist reads identically.
                let path_missing = path
                    .replace(&f.cluster, missing)
                    .replace(&f.nodepool, missing);
                let body_missing = body.map(|b| {
                    serde_json::from_str::<Value>(&b.to_string().replace(&f.cluster, missing))
                        .unwrap()
                });
                let (status2, response2) = app
                    .call(
                        method.clone(),
                        &path_missing,
                        Some(BOB),
                        body_missing.as_ref(),
                    )
                    .await;
                assert_eq!(status2, status, "{method} {path}");
                assert_eq!(response2["message"], response["message"], "{method} {path}");
            }
            None => assert_eq!(status.as_u16(), want, "{method} {path}: {response}"),
        }
    }
    // Bob's lists count only what Bob may see.
    let (_, clusters) = app.get("/api/v1/clusters", BOB).await;
    assert_eq!(clusters["total"], 1, "only the cluster Bob created");
    assert_ne!(clusters["clusters"][0]["id"], f.cluster.as_str());
    let (_, nodepools) = app.get("/api/v1/nodepools", BOB).await;
    assert_eq!(
        (nodepools["total"].clone(), nodepools["nodepools"].clone()),
        (json!(0), json!([]))
    );
    let (_, filtered) = app
        .get(&format!("/api/v1/nodepools?clusterId={}", f.cluster), BOB)
        .await;
    assert_eq!(filtered["total"], 0);
    // Deletions.
    let (status, body) = app
        .delete(&format!("/api/v1/nodepools/{}", f.nodepool), BOB)
        .await;
    assert_problem(status, &body, 404, "NODEPOOL_NOT_FOUND");
    let (status, body) = app
        .delete(&format!("/api/v1/clusters/{}?force=true", f.cluster), BOB)
        .await;
    assert_problem(status, &body, 404, "CLUSTER_NOT_FOUND");
    // Alice's resources are untouched: only Bob's own creation left an event.
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "nodepool.created", "cluster.created"]
    );
    let (_, cluster) = app
        .get(&format!("/api/v1/clusters/{}", f.cluster), ALICE)
        .await;
    assert_eq!(cluster["resource_version"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_controller_may_do_everything() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    for (who, tag) in [(ALICE, "alice"), (CONTROLLER, "ctl")] {
        let expected = [200, 201, 200, 200, 200, 201, 200, 201, 200, 200];
        for ((method, path, body), want) in endpoints(&f, tag).into_iter().zip(expected) {
            let (status, response) = app
                .call(method.clone(), &path, Some(who), body.as_ref())
                .await;
            assert_eq!(status.as_u16(), want, "{who} {method} {path}: {response}");
        }
    }
    // The controller sees Alice's resources in lists too.
    let (_, clusters) = app.get("/api/v1/clusters", CONTROLLER).await;
    assert_eq!(
        clusters["total"], 3,
        "Alice's, and one each created by Alice and the controller"
    );
    let (status, _) = app
        .delete(&format!("/api/v1/nodepools/{}", f.nodepool), CONTROLLER)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app
        .delete(&format!("/api/v1/clusters/{}", f.cluster), ALICE)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Deleted: hidden from Alice, visible to the controller by id and with include_deleted.
    let (status, _) = app
        .get(&format!("/api/v1/clusters/{}", f.cluster), ALICE)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, seen) = app
        .get(&format!("/api/v1/clusters/{}", f.cluster), CONTROLLER)
        .await;
    assert!(seen["deleted_at"].is_string());
    let (_, live) = app.get("/api/v1/clusters", CONTROLLER).await;
    let (_, all) = app
        .get("/api/v1/clusters?include_deleted=true", CONTROLLER)
        .await;
    assert_eq!(
        (live["total"].clone(), all["total"].clone()),
        (json!(2), json!(3))
    );
    let (_, alice_all) = app
        .get("/api/v1/clusters?include_deleted=true", ALICE)
        .await;
    assert_eq!(
        alice_all["total"], 1,
        "include_deleted means nothing to a user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_auth_acts_as_the_first_controller() {
    let app = TestApp::spawn_with(&[
        ("DISABLE_AUTH", "true"),
        (
            "CONTROLLER_IDENTITIES",
            "ops@system.local,controller@system.local",
        ),
    ])
    .await;
    let (status, cluster) = app
        .call(
            Method::POST,
            "/api/v1/clusters",
            None,
            Some(&cli_cluster("c1")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cluster}");
    assert_eq!(cluster["created_by"], "ops@system.local");
}
