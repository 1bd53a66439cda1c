//! Concurrent writers, idempotent retries, pagination and ordering.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_puts_with_the_same_if_match_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let app = app.clone();
        let (id, mut spec) = (id.clone(), cluster["spec"].clone());
        spec["infraID"] = json!(format!("racer-{i}"));
        tasks.push(tokio::spawn(async move {
            let response = app
                .request(Method::PUT, &format!("/api/v1/clusters/{id}"), Some(ALICE))
                .header("If-Match", "\"1\"")
                .json(&json!({"spec": spec}))
                .send()
                .await
                .unwrap();
            read(response).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::PRECONDITION_FAILED {
            assert_problem(status, &body, 412, "PRECONDITION_FAILED");
        }
        statuses.push(status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412]);
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "cluster.updated"]
    );
}

/// `If-Match` on DELETE: a client that deletes only the version it saw gets 412, and nothing
/// is deleted, when the resource changed since; weak tags never match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_a_stale_if_match_is_412_and_deletes_nothing() {
    let app = TestApp::spawn().await;
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    let nodepool = app.create_nodepool(ALICE, &id, "np1").await;
    let np_id = nodepool["id"].as_str().unwrap().to_owned();
    // A label change: the cluster is at version 2, the nodepool still at 1.
    let (status, changed) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": cluster["spec"], "labels": {"team": "a"}}),
        )
        .await;
    assert_eq!(
        (status, changed["resource_version"].clone()),
        (StatusCode::OK, json!("2"))
    );
    let delete = async |path: &str, tag: &str| {
        let response = app
            .request(Method::DELETE, path, Some(ALICE))
            .header("If-Match", tag)
            .send()
            .await
            .unwrap();
        read(response).await
    };
    let cluster_path = format!("/api/v1/clusters/{id}");
    let nodepool_path = format!("/api/v1/nodepools/{np_id}");
    for (path, tag) in [
        (&cluster_path, "\"1\""),
        (&cluster_path, "W/\"2\""),
        (&nodepool_path, "\"2\""),
    ] {
        let (status, body) = delete(path, tag).await;
        assert_problem(status, &body, 412, "PRECONDITION_FAILED");
        assert_eq!(app.get(path, ALICE).await.0, StatusCode::OK, "{path} kept");
    }
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "nodepool.created"],
        "no event for a refused delete"
    );
    // The current versions (or any, with `*`) delete as before.
    assert_eq!(
        delete(&nodepool_path, "\"1\"").await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        delete(&cluster_path, "\"9\", \"2\"").await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.get(&cluster_path, ALICE).await.0, StatusCode::NOT_FOUND);
    let other = app.create_cluster(ALICE, "c2").await;
    let other_path = format!("/api/v1/clusters/{}", other["id"].as_str().unwrap());
    assert_eq!(delete(&other_path, "*").await.0, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_puts_leave_no_gap_or_duplicate() {
    let app = Arc::new(TestApp::spawn().await);
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            let (id, mut spec) = (id.clone(), cluster["spec"].clone());
            spec["infraID"] = json!(format!("w-{i}"));
            tokio::spawn(async move {
                app.put(
                    &format!("/api/v1/clusters/{id}"),
                    ALICE,
                    &json!({"spec": spec}),
                )
                .await
            })
        })
        .collect();
    let mut generations = BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(generations.insert(body["generation"].as_i64().unwrap()));
    }
    assert_eq!(generations, (2..=21).collect::<BTreeSet<i64>>());
    let outbox = app.outbox().await;
    let event_generations: Vec<i64> = outbox
        .iter()
        .skip(1)
        .map(|(_, body, ..)| body["generation"].as_i64().unwrap())
        .collect();
    assert_eq!(
        event_generations,
        (2..=21).collect::<Vec<i64>>(),
        "one event per generation, in commit order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_name_make_one_cluster() {
    let app = Arc::new(TestApp::spawn().await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post("/api/v1/clusters", ALICE, &cli_cluster("same"))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status.as_u16() {
            201 => created += 1,
            _ => {
                assert_problem(status, &body, 409, "CLUSTER_NAME_EXISTS");
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.outbox_types().await, ["cluster.created"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_make_one_resource_and_one_event() {
    let app = Arc::new(TestApp::spawn().await);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let response = app
                    .request(Method::POST, "/api/v1/clusters", Some(ALICE))
                    .header("Idempotency-Key", "retry-42")
                    .json(&cli_cluster("idem"))
                    .send()
                    .await
                    .unwrap();
                let location = response.headers()["location"].to_str().unwrap().to_owned();
                let etag = response.headers()["etag"].to_str().unwrap().to_owned();
                let content_type = response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let status = response.status();
                // The bytes, not only the JSON value: a retry gets the original response.
                let body = response.text().await.unwrap();
                (status, location, etag, content_type, body)
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }
    for response in &responses {
        assert_eq!(response.0, StatusCode::CREATED);
        assert_eq!(response, &responses[0], "identical responses");
    }
    let created: Value = serde_json::from_str(&responses[0].4).unwrap();
    conforms(
        "/api/v1/clusters",
        responses[0].0,
        Some(responses[0].3.as_str()),
        &created,
    );
    assert_eq!(
        responses[0].2,
        format!("\"{}\"", created["resource_version"].as_str().unwrap())
    );
    assert_eq!(app.outbox_types().await, ["cluster.created"]);
    let (_, list) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(list["total"], 1);

    // Same key, different body: 422. Same key, other caller: a separate scope.
    let (status, body) = app
        .post_with_key("/api/v1/clusters", ALICE, "retry-42", &cli_cluster("other"))
        .await;
    assert_problem(status, &body, 422, "IDEMPOTENCY_KEY_REUSED");
    let (status, body) = app
        .post_with_key("/api/v1/clusters", BOB, "retry-42", &cli_cluster("idem"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["created_by"], BOB);
    // Nodepools too.
    let cluster_id = created["id"].as_str().unwrap();
    let create_nodepool = async || {
        let response = app
            .request(Method::POST, "/api/v1/nodepools", Some(ALICE))
            .header("Idempotency-Key", "np-1")
            .json(&cli_nodepool(cluster_id, "np", 2))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let first = create_nodepool().await;
    let second = create_nodepool().await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, second, "the retry gets the same bytes");
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "cluster.created", "nodepool.created"]
    );
    // A bad key is refused.
    let (status, body) = app
        .post_with_key("/api/v1/clusters", ALICE, "", &cli_cluster("k"))
        .await;
    assert_problem(status, &body, 400, "VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_idempotency_records_are_pruned_in_the_background() {
    let app = TestApp::spawn_with(&[
        ("IDEMPOTENCY_TTL", "1s"),
        ("IDEMPOTENCY_PRUNE_INTERVAL", "1s"),
    ])
    .await;
    let records = async || -> Vec<String> {
        use diesel::QueryDsl as _;
        use diesel_async::RunQueryDsl as _;
        cls_storage::schema::idempotency_keys::table
            .select(cls_storage::schema::idempotency_keys::key)
            .load(&mut app.db.conn().await)
            .await
            .unwrap()
    };
    let (status, _) = app
        .post_with_key("/api/v1/clusters", ALICE, "short-lived", &cli_cluster("a"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(records().await, ["short-lived"]);

    // Gone within a few prune intervals after it expired, without any request touching it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !records().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired record is still stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let metrics = app.gateway_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "idempotency_keys_pruned_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_clamps_orders_and_filters() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut body = cli_cluster(&format!("c{i}"));
        body["labels"] =
            json!({"parity": if i % 2 == 0 { "even" } else { "odd" }, "team": "infra"});
        let (_, cluster) = app.post("/api/v1/clusters", ALICE, &body).await;
        ids.push(cluster["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let page = |body: &Value| {
        body["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (_, all) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(page(&all), ids, "newest first");
    let (_, second) = app.get("/api/v1/clusters?limit=3&offset=3", ALICE).await;
    assert_eq!(
        (
            page(&second),
            second["total"].clone(),
            second["limit"].clone(),
            second["offset"].clone()
        ),
        (ids[3..6].to_vec(), json!(7), json!(3), json!(3))
    );
    let (_, clamped) = app.get("/api/v1/clusters?limit=1000", ALICE).await;
    assert_eq!(clamped["limit"], 100);
    let (status, clamped) = app
        .get("/api/v1/clusters?limit=99999999999999999999999", ALICE)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(clamped["limit"], 100);
    let (status, beyond) = app
        .get(&format!("/api/v1/clusters?offset={}", i64::MAX), ALICE)
        .await;
    assert_eq!(status, StatusCode::OK, "{beyond}");
    assert_eq!(
        (beyond["clusters"].clone(), beyond["offset"].clone()),
        (json!([]), json!(i64::MAX))
    );
    // Beyond 64 bits the offset the page would report is not the one asked for: refused.
    let (status, body) = app
        .get("/api/v1/clusters?offset=99999999999999999999999", ALICE)
        .await;
    assert_problem(status, &body, 400, "INVALID_QUERY");
    assert_eq!(
        body["message"],
        "offset must be an integer from 0 to 9223372036854775807 (got '99999999999999999999999')"
    );
    let (_, even) = app
        .get("/api/v1/clusters?labels=parity=even,team=infra", ALICE)
        .await;
    assert_eq!(even["total"], 4);
    let (_, named) = app.get("/api/v1/clusters?name=c3", ALICE).await;
    assert_eq!(named["clusters"][0]["name"], "c3");
    let (_, pending) = app.get("/api/v1/clusters?status=Pending", ALICE).await;
    assert_eq!(pending["total"], 7);
    let (_, ready) = app.get("/api/v1/clusters?status=Ready", ALICE).await;
    assert_eq!(
        (ready["total"].clone(), ready["clusters"].clone()),
        (json!(0), json!([])),
        "empty lists are []"
    );
}
