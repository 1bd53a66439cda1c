//! Every failure is a problem+json body with a stable code: bad JSON, wrong content type,
//! oversized bodies, unknown routes and methods, bad ids and queries, validation.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A validation problem's `errors`, as (field, message) pairs.
fn field_errors(body: &serde_json::Value) -> Vec<(&str, &str)> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_problems() {
    let app = TestApp::spawn().await;

    // Not JSON at all.
    let response = app
        .request(Method::POST, "/api/v1/clusters", Some(ALICE))
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, body) = read(response).await;
    assert_problem(status, &body, 400, "INVALID_JSON");
    assert_eq!(
        body["request_id"],
        request_id.as_str(),
        "the body carries the response's request id"
    );
    assert!(
        body.get("errors").is_none(),
        "errors only for validation failures"
    );

    // Wrong content type.
    let post_as = async |content_type: &str, who: &str, name: &str| {
        let body = cli_cluster(name).to_string();
        app.send_raw(Method::POST, "/api/v1/clusters", who, content_type, body)
            .await
    };
    for content_type in ["text/plain", "application/jsonp", "text/json+x"] {
        let (status, body) = post_as(content_type, ALICE, "c").await;
        assert_problem(status, &body, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    // Media types compare case-insensitively and may carry parameters (RFC 9110 §8.3.1).
    for (content_type, name) in [
        ("application/json; charset=utf-8", "ct-charset"),
        ("Application/JSON", "ct-case"),
        ("application/merge-patch+json", "ct-suffix"),
    ] {
        // As Bob: Alice's clusters are counted below.
        let (status, body) = post_as(content_type, BOB, name).await;
        assert_eq!(status, StatusCode::CREATED, "{content_type}: {body}");
    }

    // Over 1 MiB.
    let mut huge = cli_cluster("c");
    huge["description"] = json!("x".repeat(1024 * 1024 + 10));
    let (status, body) = app.post("/api/v1/clusters", ALICE, &huge).await;
    assert_problem(status, &body, 413, "PAYLOAD_TOO_LARGE");

    // Unknown fields anywhere, all named, with every other violation.
    let mut typo = cli_cluster("Bad Name");
    typo["spec"]["platform"]["gcp"]["regoin"] = json!("x");
    typo["lables"] = json!({});
    let (status, body) = app.post("/api/v1/clusters", ALICE, &typo).await;
    assert_problem(status, &body, 400, "VALIDATION_FAILED");
    let fields = strings(&body["errors"], "field");
    assert_eq!(fields, ["lables", "spec.platform.gcp.regoin", "name"]);

    // Keys given twice are named too (no parser's choice between them is silently taken),
    // with every other violation; nothing is created.
    let mut twice = cli_cluster("Bad Name");
    twice["labels"] = json!({"team": "a"});
    let twice = twice
        .to_string()
        .replacen(r#""team":"a""#, r#""team":"a","team":"b""#, 1);
    assert!(twice.contains(r#""team":"b""#), "{twice}");
    let twice = format!(
        r#"{}, "description": "x", "description": "y"}}"#,
        twice.strip_suffix('}').unwrap()
    );
    let (status, body) = app
        .send_raw(
            Method::POST,
            "/api/v1/clusters",
            ALICE,
            "application/json",
            twice,
        )
        .await;
    assert_problem(status, &body, 400, "VALIDATION_FAILED");
    let errors = field_errors(&body);
    assert_eq!(
        errors[..2],
        [
            ("labels.team", "is given more than once"),
            ("description", "is given more than once"),
        ],
        "{body}"
    );
    assert_eq!(errors[2].0, "name", "{body}");
    let (_, list) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(list["total"], 0, "{list}");

    // Wrong types and missing fields, all reported, together with the other violations.
    let mut mistyped = cli_cluster("Bad Name");
    mistyped["labels"] = json!({"team": 7});
    mistyped["spec"]["platform"]["gcp"] = json!({"projectID": "p", "network": ["n"]});
    mistyped["spec"]["infraID"] = json!("abcdefghijklmnop");
    let (status, body) = app.post("/api/v1/clusters", ALICE, &mistyped).await;
    assert_problem(status, &body, 400, "VALIDATION_FAILED");
    let errors = field_errors(&body);
    let fields: Vec<&str> = errors.iter().map(|(field, _)| *field).collect();
    assert_eq!(
        fields,
        [
            "labels.team",
            "spec.platform.gcp.network",
            "spec.platform.gcp.region",
            "spec.platform.gcp.subnet",
            "name",
            "spec.infraID",
        ],
        "{body}"
    );
    assert!(errors[1].1.starts_with("invalid type: sequence"), "{body}");
    assert_eq!(errors[2].1, "is required");
    assert_eq!(errors[5].1, "must be 15 characters or less (got 16)");

    let mut invalid = cli_cluster("Bad Name");
    invalid["spec"]["infraID"] = json!("abcdefghijklmnop");
    invalid["spec"]["release"]["channelGroup"] = json!("nightly");
    let (status, body) = app.post("/api/v1/clusters", ALICE, &invalid).await;
    assert_problem(status, &body, 400, "VALIDATION_FAILED");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{body}");
    assert_eq!(
        errors[1],
        json!({"field": "spec.infraID", "message": "must be 15 characters or less (got 16)"})
    );

    // Ids and queries.
    let (status, body) = app.get("/api/v1/clusters/not-a-uuid", ALICE).await;
    assert_problem(status, &body, 400, "INVALID_ID");
    let (status, body) = app
        .get("/api/v1/nodepools/0196a0f0000070008000000000000001", ALICE)
        .await;
    assert_problem(status, &body, 400, "INVALID_ID");
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=0",
        "limit=1.5",
        "limit=+-3",
        "offset=-5",
        "status=Sleeping",
        "labels=novalue",
        "include_deleted=maybe",
        "bogus=1",
        "limit=1&limit=2",
    ] {
        let (status, body) = app.get(&format!("/api/v1/clusters?{query}"), ALICE).await;
        let message = assert_problem(status, &body, 400, "INVALID_QUERY");
        assert!(!message.is_empty());
    }
    let (status, body) = app.get("/api/v1/nodepools?clusterId=nope", ALICE).await;
    assert_problem(status, &body, 400, "INVALID_QUERY");

    // Unknown route and wrong method.
    let (status, body) = app.get("/api/v1/widgets", ALICE).await;
    assert_problem(status, &body, 404, "ROUTE_NOT_FOUND");
    let response = app
        .request(Method::PATCH, "/api/v1/clusters", Some(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    let (status, body) = read(response).await;
    assert_problem(status, &body, 405, "METHOD_NOT_ALLOWED");
    let response = app
        .request(
            Method::POST,
            "/api/v1/clusters/0196a0f0-0000-7000-8000-000000000001",
            Some(ALICE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, PUT, DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let response = app
        .request(Method::GET, "/healthz", None)
        .header("X-Request-ID", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc.123");
    let response = app
        .request(Method::GET, "/healthz", None)
        .header("X-Request-ID", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());
    let (status, body) = app.call(Method::GET, "/api/v1/clusters", None, None).await;
    assert_problem(status, &body, 401, "AUTH_REQUIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_guard_and_force() {
    let app = TestApp::spawn().await;
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).unwrap();
    // Put it in Ready as an aggregation would.
    let mut status: cls_domain::status::Status =
        serde_json::from_value(cluster["status"].clone()).unwrap();
    status.phase = cls_domain::status::Phase::Ready;
    let mut conn = app.db.conn().await;
    cls_storage::clusters::store_status(&mut conn, uuid, &status, None)
        .await
        .unwrap();

    for force in ["", "?force=false", "?force=1", "?force=TRUE"] {
        let (status, body) = app
            .delete(&format!("/api/v1/clusters/{id}{force}"), ALICE)
            .await;
        let message = assert_problem(status, &body, 409, "CLUSTER_NOT_DELETABLE");
        assert!(
            message.contains("Ready") && message.contains("?force=true"),
            "{message}"
        );
    }
    assert_eq!(app.outbox_types().await, ["cluster.created"]);
    let (status, _) = app
        .delete(&format!("/api/v1/clusters/{id}?force=true"), ALICE)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = app
        .delete(&format!("/api/v1/clusters/{id}?force=true"), ALICE)
        .await;
    assert_problem(status, &body, 404, "CLUSTER_NOT_FOUND");

    // Pending clusters (and nodepools) delete without force.
    let other = app.create_cluster(ALICE, "c2").await;
    let np = app
        .create_nodepool(ALICE, other["id"].as_str().unwrap(), "np")
        .await;
    let (status, body) = app
        .delete(
            &format!("/api/v1/nodepools/{}", np["id"].as_str().unwrap()),
            ALICE,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body,
        json!({"message": "nodepool deletion initiated", "nodepool_id": np["id"]})
    );
    let (status, _) = app
        .delete(
            &format!("/api/v1/clusters/{}", other["id"].as_str().unwrap()),
            ALICE,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        app.outbox_types().await,
        [
            "cluster.created",
            "cluster.deleted",
            "cluster.created",
            "nodepool.created",
            "nodepool.deleted",
            "cluster.deleted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_can_be_reused_after_delete_and_conflict_while_live() {
    let app = TestApp::spawn().await;
    let first = app.create_cluster(ALICE, "c1").await;
    let (status, body) = app
        .post("/api/v1/clusters", ALICE, &cli_cluster("c1"))
        .await;
    let message = assert_problem(status, &body, 409, "CLUSTER_NAME_EXISTS");
    assert_eq!(message, "a cluster named 'c1' already exists");
    // Another user may use the same name.
    app.create_cluster(BOB, "c1").await;
    let id = first["id"].as_str().unwrap();
    app.create_nodepool(ALICE, id, "np").await;
    let (status, body) = app
        .post("/api/v1/nodepools", ALICE, &cli_nodepool(id, "np", 1))
        .await;
    assert_problem(status, &body, 409, "NODEPOOL_NAME_EXISTS");
    app.delete(&format!("/api/v1/clusters/{id}"), ALICE).await;
    let again = app.create_cluster(ALICE, "c1").await;
    assert_ne!(again["id"], first["id"]);
}

/// Postgres stores no NUL in `text` or `jsonb`: a NUL anywhere in a body or a query used to
/// reach it and answer 500 (found by the Schemathesis run, tests/fuzz.rs). It is a 400 naming
/// the field, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_with_the_field_named_and_nothing_stored() {
    let app = TestApp::spawn_with_status(&[]).await;
    let mut body = cli_cluster("nul");
    body["spec"]["platform"]["gcp"]["workloadIdentity"]["poolID"] = json!("po\u{0}ol");
    body["labels"] = json!({"te\u{0}am": "infra"});
    let (status, problem) = app.post("/api/v1/clusters", ALICE, &body).await;
    assert_problem(status, &problem, 400, "VALIDATION_FAILED");
    let errors = field_errors(&problem);
    for field in [
        "spec.platform.gcp.workloadIdentity.poolID",
        "labels.te\u{0}am",
    ] {
        assert!(
            errors.contains(&(field, "must not contain NUL characters (\\u0000)")),
            "{field} in {errors:?}"
        );
    }
    let (_, list) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(list["total"], 0, "nothing stored");
    assert!(app.outbox().await.is_empty(), "no event");

    // A server-owned field is dropped whatever it holds.
    let mut echoed = cli_cluster("echoed");
    echoed["id"] = json!("x\u{0}");
    assert_eq!(
        app.post("/api/v1/clusters", ALICE, &echoed).await.0,
        StatusCode::CREATED
    );

    // In a status report's free-form metadata too (keys and values).
    let cluster = app.create_cluster(ALICE, "reported").await;
    let path = format!(
        "/api/v1/clusters/{}/status",
        cluster["id"].as_str().unwrap()
    );
    let (status, problem) = app
        .put(
            &path,
            CONTROLLER,
            &json!({"controller_name": "ctl-a", "observed_generation": 1,
                    "metadata": {"k\u{0}": "v", "note": "a\u{0}b"}}),
        )
        .await;
    assert_problem(status, &problem, 400, "VALIDATION_FAILED");
    assert_eq!(
        field_errors(&problem),
        [
            (
                "metadata.k\u{0}",
                "must not contain NUL characters (\\u0000)"
            ),
            ("metadata.note", "must not contain NUL characters (\\u0000)")
        ]
    );
    let (_, status_view) = app.get(&path, CONTROLLER).await;
    assert_eq!(
        status_view["controller_status"],
        json!([]),
        "no report stored"
    );

    // In a query.
    for query in ["labels=team%3Dinf%00ra", "name=c%001"] {
        let (status, problem) = app.get(&format!("/api/v1/clusters?{query}"), ALICE).await;
        assert_problem(status, &problem, 400, "INVALID_QUERY");
        assert!(
            problem["message"]
                .as_str()
                .unwrap()
                .ends_with("must not contain NUL characters (\\u0000)"),
            "{problem}"
        );
    }
}

/// JSON Schema's `integer` includes `3.0`, and so does the API: an integral number is read as
/// an integer wherever one is expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_numbers_written_with_a_fraction_are_integers() {
    let app = TestApp::spawn().await;
    let cluster = app.create_cluster(ALICE, "floats").await;
    let id = cluster["id"].as_str().unwrap();
    let mut body = cli_nodepool(id, "np", 0);
    body["spec"]["replicas"] = json!(3.0);
    body["spec"]["platform"]["gcp"]["rootVolume"]["size"] = json!(1.28e2);
    let (status, created) = app.post("/api/v1/nodepools", ALICE, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["replicas"], json!(3));
    assert_eq!(
        created["spec"]["platform"]["gcp"]["rootVolume"]["size"],
        json!(128)
    );
    // A fraction is still not an integer.
    body["name"] = json!("np2");
    body["spec"]["replicas"] = json!(2.5);
    let (status, problem) = app.post("/api/v1/nodepools", ALICE, &body).await;
    assert_problem(status, &problem, 400, "VALIDATION_FAILED");
    assert_eq!(field_errors(&problem)[0].0, "spec.replicas");
}
