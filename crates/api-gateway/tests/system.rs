//! Health, readiness, info, metrics, the OpenAPI document and Swagger UI, CORS, panics, and
//! behaviour while Postgres is unreachable.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use std::process::Command;

use actix_web::middleware::from_fn;
use common::*;
use diesel_async::RunQueryDsl as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_info() {
    let app = TestApp::spawn_with_status(&[]).await;
    let (status, health) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (health["status"].clone(), health["service"].clone()),
        (json!("healthy"), json!("cls-backend"))
    );
    assert!(
        time::OffsetDateTime::parse(
            health["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (status, ready) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, ready),
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let (_, info) = app.call(Method::GET, "/info", None, None).await;
    assert_eq!(info["service"], "api-gateway");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(!info["git_sha"].as_str().unwrap().is_empty());
    assert!(
        time::OffsetDateTime::parse(
            info["build_time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    // The admin port has probes too.
    let admin = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
}

fn looks_like_uuid(s: &str) -> bool {
    s.split(|c: char| !c.is_ascii_hexdigit() && c != '-')
        .any(|w| uuid::Uuid::try_parse(w).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_per_route_series_with_bounded_labels() {
    let app = TestApp::spawn().await;
    let cluster = app.create_cluster(ALICE, "c1").await;
    let id = cluster["id"].as_str().unwrap();
    app.get(&format!("/api/v1/clusters/{id}"), ALICE).await;
    app.get(&format!("/api/v1/clusters/{}", uuid::Uuid::new_v4()), ALICE)
        .await;
    app.get("/api/v1/no-such-thing/123", ALICE).await;
    let text = app.gateway_metrics().await;
    for series in [
        r#"http_requests_total{method="POST",route="/api/v1/clusters",status="201"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/clusters/{id}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/clusters/{id}",status="404"} 1"#,
        r#"http_request_errors_total{code="CLUSTER_NOT_FOUND",method="GET",route="/api/v1/clusters/{id}"} 1"#,
        r#"http_request_errors_total{code="ROUTE_NOT_FOUND",method="GET",route="unmatched"} 1"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/api/v1/clusters/{id}",le="+Inf"} 2"#,
        "db_pool_connections ",
        "db_pool_idle_connections ",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line
            .split_once('{')
            .map_or("", |(_, rest)| rest.split_once('}').map_or("", |(l, _)| l));
        assert!(!looks_like_uuid(labels), "unbounded label value in {line}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not Prometheus text: {line}");
    }
}

/// `DATABASE_MAX_CONNECTIONS` bounds the gateway's connections for requests, split over its
/// HTTP workers, however many requests arrive at once (other work has a small shared pool);
/// the pool gauge adds up every pool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_stay_within_database_max_connections() {
    let app =
        TestApp::spawn_with(&[("DATABASE_MAX_CONNECTIONS", "4"), ("HTTP_WORKERS", "2")]).await;
    let cluster = app.create_cluster(ALICE, "c1").await;
    let path = format!("/api/v1/clusters/{}", cluster["id"].as_str().unwrap());
    for _ in 0..5 {
        let answers = futures_util::future::join_all((0..48).map(|_| app.get(&path, ALICE))).await;
        assert!(
            answers.iter().all(|(status, _)| *status == StatusCode::OK),
            "every request answered: {:?}",
            answers.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        );
    }
    let mut conn = app.db.conn().await;
    let backends: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    // The idempotency clean-up, which runs at start-up, and the relay's wake-ups use the small
    // shared pool; the requests, spread over both workers, use theirs (the shared pool alone
    // has two).
    let shared = i64::from(api_gateway::WorkerPools::SHARED_CONNECTIONS);
    assert!(
        (shared + 1..=4 + shared).contains(&backends),
        "{backends} connections, not within {}..={}",
        shared + 1,
        4 + shared
    );
    let gauge = app.gateway_series("db_pool_connections").await.unwrap();
    assert_eq!(gauge, backends.to_string(), "the gauge adds up every pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_complete() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/api/v1/clusters",
        "/api/v1/clusters/{id}",
        "/api/v1/clusters/{id}/nodepools",
        "/api/v1/nodepools",
        "/api/v1/nodepools/{id}",
        "/health",
        "/healthz",
        "/readyz",
        "/info",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "Cluster",
        "NodePool",
        "ClusterSpec",
        "NodePoolSpec",
        "Status",
        "Condition",
        "Problem",
        "ClusterList",
    ] {
        assert!(schemas.get(schema).is_some(), "schema {schema} missing");
    }
    assert_eq!(
        schemas["ClusterSpec"]["properties"]["infraID"]["type"],
        json!(["string", "null"])
    );
    assert!(
        schemas["Problem"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("code"))
    );

    let file = std::env::temp_dir().join(format!("cls-openapi-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let validator = python_tool("OPENAPI_SPEC_VALIDATOR", "openapi-spec-validator");
    let output = Command::new(&validator).arg(&file).output().unwrap_or_else(|e| {
        panic!("cannot run {} ({e}); run `cargo xtask ci` (it installs it into .tools/venv) or pip install openapi-spec-validator", validator.display())
    });
    std::fs::remove_file(&file).unwrap();
    assert!(
        output.status.success(),
        "the OpenAPI document is invalid:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Swagger UI reads it.
    let ui = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().to_lowercase().contains("swagger"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_without_auth_on_preflight() {
    let app = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "https://console.example.com")]).await;
    let preflight = app
        .request(Method::OPTIONS, "/api/v1/clusters", None)
        .header("Origin", "https://console.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,x-user-email",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = app
        .request(Method::OPTIONS, "/api/v1/clusters", None)
        .header("Origin", "https://evil.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let actual = app
        .request(Method::GET, "/api/v1/clusters", Some(ALICE))
        .header("Origin", "https://console.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    assert!(
        actual.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("etag")
    );

    let any = TestApp::spawn_with(&[("CORS_ALLOWED_ORIGINS", "*")]).await;
    let response = any
        .request(Method::GET, "/healthz", None)
        .header("Origin", "https://x.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "no wildcard with credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new()
            .wrap(from_fn(api_gateway::middleware::edge))
            .route(
                "/boom",
                actix_web::web::get().to(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler bug");
                    }
                    actix_web::HttpResponse::Ok().finish()
                }),
            )
            .route(
                "/ok",
                actix_web::web::get().to(|| async { actix_web::HttpResponse::Ok().body("fine") }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{base}/boom"))
            .header("X-Request-ID", "panic-1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "panic-1");
        let (status, body) = read(response).await;
        assert_problem(status, &body, 500, "INTERNAL");
        assert_eq!(body["request_id"], "panic-1");
        assert_eq!(
            body["message"], "internal server error",
            "nothing internal leaks"
        );
        let ok = client.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(ok.text().await.unwrap(), "fine");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_means_503_and_not_ready() {
    let port = cls_test_support::free_port().unwrap();
    let app = TestApp::spawn_with(&[(
        "DATABASE_URL",
        &format!("postgres://postgres@127.0.0.1:{port}/nothing"),
    )])
    .await;
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK,
        "alive"
    );
    let response = app
        .request(Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = read(response).await;
    assert_problem(status, &body, 503, "UNAVAILABLE");
    let started = std::time::Instant::now();
    let (status, body) = app.get("/api/v1/clusters", ALICE).await;
    assert_problem(status, &body, 503, "UNAVAILABLE");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answers promptly"
    );
    let value: Value = body;
    assert!(
        !value["message"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leaked"
    );
}

/// `RATE_LIMIT_PER_CALLER`: a user past its burst is refused with 429 `RATE_LIMITED` and a
/// `Retry-After` before anything is stored; other users and controllers keep their own
/// quotas (controllers have none), and the quota comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_its_quota_gets_429_and_nothing_is_stored() {
    let app =
        TestApp::spawn_with(&[("RATE_LIMIT_PER_CALLER", "1"), ("RATE_LIMIT_BURST", "3")]).await;
    let started = std::time::Instant::now();
    let mut created = 0;
    let refused = loop {
        let response = app
            .request(Method::POST, "/api/v1/clusters", Some(ALICE))
            .json(&cli_cluster(&format!("quota-{created}")))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::CREATED {
            break response;
        }
        created += 1;
        assert!(created < 50, "never limited");
    };
    // The burst, plus at most one per second the loop took (1 per second refills).
    let allowed = 3 + started.elapsed().as_secs() + 1;
    assert!((3..=allowed).contains(&created), "{created} created");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let (status, body) = read(refused).await;
    let message = assert_problem(status, &body, 429, "RATE_LIMITED");
    assert!(message.contains("retry after 1 s"), "{message}");
    // Refused before the handler: no cluster, no event.
    assert_eq!(app.outbox_types().await.len() as u64, created);
    let (status, list) = app.get("/api/v1/clusters?limit=100", CONTROLLER).await;
    assert_eq!(status, StatusCode::OK);
    let names = strings(&list["clusters"], "name");
    assert_eq!(names.len() as u64, created, "{names:?}");
    assert!(
        !names.contains(&format!("quota-{created}").as_str()),
        "{names:?}"
    );

    // Bob has a quota of his own; a controller has none.
    assert_eq!(app.get("/api/v1/clusters", BOB).await.0, StatusCode::OK);
    for _ in 0..10 {
        assert_eq!(
            app.get("/api/v1/clusters", CONTROLLER).await.0,
            StatusCode::OK
        );
    }
    // Health, info and the document are not counted.
    assert_eq!(
        app.call(Method::GET, "/info", None, None).await.0,
        StatusCode::OK
    );

    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(app.get("/api/v1/clusters", ALICE).await.0, StatusCode::OK);
    let metrics = app.gateway_metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.contains("route=\"/api/v1/clusters\"") && l.contains("code=\"RATE_LIMITED\"")
        ),
        "429s are counted per route and code"
    );
}

/// A Postgres restart (SPEC §8): while it is down the API answers 503 `UNAVAILABLE` with
/// `Retry-After` (never a 500 or a hang) and `/readyz` is 503; once it is back the same
/// process serves again by itself, and nothing written before is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_recovers_from_a_postgres_restart_without_restarting() {
    use cls_test_support::postgres::OwnCluster;
    let pg = tokio::task::block_in_place(|| OwnCluster::start("gateway-restart")).unwrap();
    cls_storage::migrate::run(pg.url()).await.unwrap();
    let app = TestApp::spawn_full(
        &[("DATABASE_URL", pg.url())],
        Some(&[("DATABASE_URL", pg.url())]),
    )
    .await;
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.0,
        StatusCode::OK
    );
    let before = app.create_cluster(ALICE, "before").await;
    let path = format!("/api/v1/clusters/{}", before["id"].as_str().unwrap());
    assert_eq!(app.get(&path, ALICE).await.0, StatusCode::OK);

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    for (method, body) in [(Method::GET, None), (Method::PUT, Some(&before))] {
        let started = std::time::Instant::now();
        let mut request = app.request(method, &path, Some(ALICE));
        if let Some(body) = body {
            request = request.json(&json!({"spec": body["spec"]}));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["retry-after"], "1");
        let (status, body) = read(response).await;
        assert_problem(status, &body, 503, "UNAVAILABLE");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "prompt"
        );
    }
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_problem(status, &body, 503, "UNAVAILABLE");
    assert_eq!(
        body["message"], "the database is unavailable, retry later",
        "names what is down"
    );

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    // Pooled connections died with the server: a request that meets one may still answer
    // 503 (the connection is then dropped), but never anything else, and the pool heals.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut unavailable = 0;
    loop {
        let (status, body) = app.get(&path, ALICE).await;
        if status == StatusCode::OK {
            assert_eq!(
                body["name"], "before",
                "written before the restart, still there"
            );
            break;
        }
        assert_problem(status, &body, 503, "UNAVAILABLE");
        unavailable += 1;
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Every request from now on succeeds: the broken connections are gone.
    for i in 0..40 {
        let (status, body) = app.get(&path, ALICE).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i} after recovery ({unavailable} 503s before): {body}"
        );
    }
    app.create_cluster(ALICE, "after").await;
    let (_, list) = app.get("/api/v1/clusters", ALICE).await;
    assert_eq!(list["total"], 2);
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.0,
        StatusCode::OK
    );
}

#[test]
fn the_response_conformance_check_can_fail() {
    let rejects = |path: &str, status: u16, content_type: &str, body: Value| {
        let status = StatusCode::from_u16(status).unwrap();
        std::panic::catch_unwind(|| conforms(path, status, Some(content_type), &body)).is_err()
    };
    let valid_list = json!({"clusters": [], "total": 0, "limit": 50, "offset": 0});
    assert!(!rejects(
        "/api/v1/clusters",
        200,
        "application/json",
        valid_list.clone()
    ));
    assert!(rejects(
        "/api/v1/clusters",
        200,
        "application/json",
        json!({"clusters": "nope", "total": 0, "limit": 50, "offset": 0})
    ));
    assert!(
        rejects(
            "/api/v1/clusters",
            200,
            "application/json",
            json!({"total": 0})
        ),
        "missing required fields"
    );
    assert!(
        rejects("/api/v1/clusters", 200, "text/plain", valid_list.clone()),
        "undeclared media type"
    );
    assert!(
        rejects("/api/v1/clusters", 418, "application/json", valid_list),
        "undeclared status"
    );
    let problem = json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "x", "code": "CLUSTER_NOT_FOUND", "message": "x", "request_id": "r"});
    assert!(!rejects(
        "/api/v1/clusters/0196a0f0-0000-7000-8000-000000000001",
        404,
        "application/problem+json",
        problem.clone()
    ));
    assert!(rejects(
        "/api/v1/clusters/0196a0f0-0000-7000-8000-000000000001",
        404,
        "application/json",
        problem
    ));
}
