//! A CLI user's flow, exact response shapes, and the outbox rows every change leaves.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_flow_create_list_get_update_delete() {
    let app = TestApp::spawn().await;

    // Create: 201, Location, ETag, the full shape with server-owned fields.
    let response = app
        .request(Method::POST, "/api/v1/clusters", Some(ALICE))
        .json(&cli_cluster("prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let (_, cluster) = read(response).await;
    let id = cluster["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/clusters/{id}"));
    assert_eq!(etag, "\"1\"");
    assert_eq!(
        keys(&cluster),
        [
            "created_at",
            "created_by",
            "description",
            "generation",
            "id",
            "labels",
            "name",
            "resource_version",
            "spec",
            "status",
            "target_project_id",
            "updated_at"
        ]
    );
    assert_eq!(cluster["name"], "prod");
    assert_eq!(cluster["created_by"], ALICE);
    assert_eq!(cluster["generation"], 1);
    assert_eq!(cluster["resource_version"], "1");
    assert_eq!(cluster["target_project_id"], "my-project");
    assert_eq!(
        cluster["spec"]["release"],
        json!({"version": "4.16.0", "channelGroup": "stable"})
    );
    assert_eq!(cluster["spec"]["platform"]["type"], "gcp");
    assert!(
        cluster["spec"].get("networking").is_none(),
        "null optional fields are absent"
    );
    assert_eq!(cluster["status"]["phase"], "Pending");
    assert_eq!(cluster["status"]["reason"], "NoControllers");
    assert_eq!(cluster["status"]["observedGeneration"], 1);
    assert_eq!(cluster["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(cluster["status"]["conditions"][1]["type"], "Available");

    // Nodepool under it, from the CLI body.
    let nodepool = app.create_nodepool(ALICE, &id, "workers").await;
    let np_id = nodepool["id"].as_str().unwrap().to_owned();
    assert_eq!(nodepool["cluster_id"], id.as_str());
    assert_eq!(
        nodepool["spec"]["release"]["version"], "4.16.0",
        "inherited from the cluster"
    );
    assert_eq!(nodepool["spec"]["replicas"], 3);
    assert_eq!(nodepool["labels"], json!({}));

    // List and get.
    let (status, list) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&list), ["clusters", "limit", "offset", "total"]);
    assert_eq!(
        (
            list["total"].clone(),
            list["limit"].clone(),
            list["offset"].clone()
        ),
        (json!(1), json!(50), json!(0))
    );
    assert_eq!(list["clusters"][0]["id"], id.as_str());
    let response = app
        .request(Method::GET, &location, Some(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let (_, got) = read(response).await;
    assert_eq!(got, cluster);
    let (_, pools) = app
        .get(&format!("/api/v1/clusters/{id}/nodepools"), ALICE)
        .await;
    assert_eq!(keys(&pools), ["limit", "nodepools", "offset", "total"]);
    assert_eq!(pools["nodepools"][0]["id"], np_id.as_str());
    // The create's answer is built from what it wrote, not read back: it must be what is
    // stored.
    let (_, got) = app.get(&format!("/api/v1/nodepools/{np_id}"), ALICE).await;
    assert_eq!(got, nodepool);
    let (_, pools) = app
        .get(&format!("/api/v1/nodepools?clusterId={id}"), ALICE)
        .await;
    assert_eq!(pools["total"], 1);

    // Update replicas: generation 2, status reset to the new generation.
    let mut body = json!({"spec": nodepool["spec"].clone()});
    body["spec"]["replicas"] = json!(5);
    let response = app
        .request(
            Method::PUT,
            &format!("/api/v1/nodepools/{np_id}"),
            Some(ALICE),
        )
        .header("If-Match", "\"1\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        (
            updated["generation"].clone(),
            updated["spec"]["replicas"].clone()
        ),
        (json!(2), json!(5))
    );
    assert_eq!(updated["status"]["observedGeneration"], 2);

    // Delete with force.
    let (status, deleted) = app
        .delete(&format!("/api/v1/clusters/{id}?force=true"), ALICE)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        deleted,
        json!({"message": "cluster deletion initiated", "cluster_id": id})
    );
    let (status, _) = app.get(&location, ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone for the user at once");
    let (status, seen) = app.get(&location, CONTROLLER).await;
    assert_eq!(status, StatusCode::OK, "controllers still read it");
    assert!(seen["deleted_at"].is_string());
    let (_, np) = app
        .get(&format!("/api/v1/nodepools/{np_id}"), CONTROLLER)
        .await;
    assert!(np["deleted_at"].is_string(), "cascaded");

    // Exactly the events of those changes, in commit order, ordered by cluster.
    let outbox = app.outbox().await;
    let types: Vec<&str> = outbox.iter().map(|(t, ..)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "cluster.created",
            "nodepool.created",
            "nodepool.updated",
            "cluster.deleted",
            "nodepool.deleted"
        ]
    );
    for (event_type, body, attributes, ordering_key) in &outbox {
        assert_eq!(ordering_key, &id);
        assert_eq!(body["cluster_id"], id.as_str());
        assert_eq!(body["type"], event_type.as_str());
        assert_eq!(attributes["event_type"], event_type.as_str());
        assert_eq!(attributes["ce-type"], event_type.as_str());
        assert_eq!(attributes["source"], "cls-backend");
        if event_type.starts_with("nodepool.") {
            assert_eq!(body["nodepool_id"], np_id.as_str());
            assert_eq!(attributes["nodepool_id"], np_id.as_str());
        }
    }
    assert_eq!(
        outbox[2].1["generation"], 2,
        "nodepool.updated carries the new generation"
    );
    assert_eq!(outbox[2].2["generation"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_or_failed_changes_leave_no_events() {
    let app = TestApp::spawn().await;
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap();
    assert_eq!(app.outbox_types().await, ["cluster.created"]);

    // Same spec (defaults left out): 200, same generation, no event.
    let (status, same) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": cli_cluster("c1")["spec"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(
        (same["generation"].clone(), same["resource_version"].clone()),
        (json!(1), json!("1"))
    );
    // Labels only: new resource_version, same generation, no event.
    let (_, labelled) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": cluster["spec"], "labels": {"a": "b"}}),
        )
        .await;
    assert_eq!(
        (
            labelled["generation"].clone(),
            labelled["resource_version"].clone()
        ),
        (json!(1), json!("2"))
    );
    // Rejected changes: nothing.
    let (status, _) = app
        .post("/api/v1/clusters", ALICE, &cli_cluster("c1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let mut bad = cli_cluster("c2");
    bad["spec"]["infraID"] = json!("Bad_Infra");
    let (status, _) = app.post("/api/v1/clusters", ALICE, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": cluster["spec"], "resource_version": "99"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.outbox_types().await, ["cluster.created"]);

    // A real spec change: one event.
    let mut spec = cluster["spec"].clone();
    spec["infraID"] = json!("infra-new");
    let (_, changed) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": spec}),
        )
        .await;
    assert_eq!(changed["generation"], 2);
    assert_eq!(changed["status"]["observedGeneration"], 2);
    assert_eq!(
        app.outbox_types().await,
        ["cluster.created", "cluster.updated"]
    );
}

/// The next wake-up the relay would hear, as its shards; `None` if none comes within `wait`.
async fn next_wake(
    notifications: &mut (
             impl futures_util::Stream<Item = Result<diesel::pg::PgNotification, diesel::result::Error>>
             + Unpin
         ),
    wait: std::time::Duration,
) -> Option<Vec<i16>> {
    use futures_util::StreamExt as _;
    let note = tokio::time::timeout(wait, notifications.next())
        .await
        .ok()?;
    let note = note.unwrap().unwrap();
    assert_eq!(note.channel, cls_storage::outbox::NOTIFY_CHANNEL);
    Some(cls_storage::outbox::notified_shards(&note.payload).collect())
}

/// Every change that writes an event wakes the event-publisher's worker for the event's shard
/// once it has committed (the cluster's shard, for its nodepools too), and nothing else does:
/// not an unchanged spec, a rejected request or a replayed idempotent create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_that_writes_an_event_wakes_the_relay_for_its_shard() {
    let app = TestApp::spawn().await;
    let mut listener = app.db.conn().await;
    cls_storage::outbox::listen(&mut listener).await.unwrap();
    let mut notifications = std::pin::pin!(listener.notifications_stream());
    let soon = std::time::Duration::from_secs(5);
    let quiet = std::time::Duration::from_millis(300);

    let (status, cluster) = app
        .post_with_key("/api/v1/clusters", ALICE, "wake-1", &cli_cluster("c1"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cluster}");
    let id = cluster["id"].as_str().unwrap();
    let shard = vec![cls_domain::event::outbox_shard(id.parse().unwrap())];
    assert_eq!(
        next_wake(&mut notifications, soon).await,
        Some(shard.clone())
    );
    let (status, _) = app
        .post_with_key("/api/v1/clusters", ALICE, "wake-1", &cli_cluster("c1"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post("/api/v1/clusters", ALICE, &cli_cluster("c1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": cluster["spec"], "labels": {"a": "b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_wake(&mut notifications, quiet).await, None);

    let mut spec = cluster["spec"].clone();
    spec["infraID"] = json!("infra-new");
    let (status, _) = app
        .put(
            &format!("/api/v1/clusters/{id}"),
            ALICE,
            &json!({"spec": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        next_wake(&mut notifications, soon).await,
        Some(shard.clone())
    );

    let nodepool = app.create_nodepool(ALICE, id, "np1").await;
    assert_eq!(
        next_wake(&mut notifications, soon).await,
        Some(shard.clone())
    );
    let np = nodepool["id"].as_str().unwrap();
    let mut np_spec = nodepool["spec"].clone();
    np_spec["replicas"] = json!(5);
    let (status, body) = app
        .put(
            &format!("/api/v1/nodepools/{np}"),
            ALICE,
            &json!({"spec": np_spec}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        next_wake(&mut notifications, soon).await,
        Some(shard.clone())
    );
    let (status, _) = app.delete(&format!("/api/v1/nodepools/{np}"), ALICE).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        next_wake(&mut notifications, soon).await,
        Some(shard.clone())
    );
    let (status, _) = app
        .delete(&format!("/api/v1/clusters/{id}?force=true"), ALICE)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(next_wake(&mut notifications, soon).await, Some(shard));
    assert_eq!(next_wake(&mut notifications, quiet).await, None);
    assert_eq!(
        app.outbox_types().await,
        [
            "cluster.created",
            "cluster.updated",
            "nodepool.created",
            "nodepool.updated",
            "nodepool.deleted",
            "cluster.deleted"
        ]
    );
}
