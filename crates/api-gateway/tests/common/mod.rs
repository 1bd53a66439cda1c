//! The in-process gateway over real HTTP on an ephemeral port, with its own database.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset of this shared module"
)]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

pub mod jwt;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, LazyLock};

use api_gateway::{AppState, Config};
use cls_test_support::TestDb;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const CONTROLLER: &str = "controller@system.local";

/// An address where nothing listens (a call is refused at once, as when the peer is down):
/// the status-aggregator of a gateway started without one, and the scheduler of every test.
/// The scheduler's default, port 50052, may be one of `cargo xtask dev` running on the same
/// machine, with another database.
const NOWHERE: &str = "http://127.0.0.1:1";

pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    /// The in-process status-aggregator, when started with [`TestApp::spawn_with_status`].
    pub aggregator: Option<status_aggregator::Running>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    pub async fn spawn_with(vars: &[(&str, &str)]) -> TestApp {
        TestApp::spawn_full(vars, None).await
    }

    /// The gateway and a status-aggregator on the same database, over real gRPC.
    /// `aggregator_vars` configure the aggregator (e.g. `STATUS_GRACE_PERIOD`).
    pub async fn spawn_with_status(aggregator_vars: &[(&str, &str)]) -> TestApp {
        TestApp::spawn_full(&[], Some(aggregator_vars)).await
    }

    /// The gateway with `vars`, and a status-aggregator with `aggregator` when given.
    pub async fn spawn_full(vars: &[(&str, &str)], aggregator: Option<&[(&str, &str)]>) -> TestApp {
        let db = TestDb::new().await;
        let aggregator = match aggregator {
            None => None,
            Some(extra) => {
                let mut env: HashMap<String, String> = HashMap::from([
                    ("DATABASE_URL".to_owned(), db.url().to_owned()),
                    ("RECONCILE_SCHEDULER_URL".to_owned(), NOWHERE.to_owned()),
                ]);
                for (k, v) in extra {
                    env.insert((*k).to_owned(), (*v).to_owned());
                }
                let config = status_aggregator::Config::from_vars(&env).unwrap();
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                Some(
                    status_aggregator::start(
                        &config,
                        Arc::new(status_aggregator::LogPhaseChanges),
                        grpc,
                        admin,
                    )
                    .await
                    .unwrap(),
                )
            }
        };
        let aggregator_url = aggregator
            .as_ref()
            .map_or_else(|| NOWHERE.to_owned(), |a| format!("http://{}", a.grpc_addr));
        let mut env: HashMap<String, String> = HashMap::from([
            ("STATUS_AGGREGATOR_URL".to_owned(), aggregator_url),
            ("RECONCILE_SCHEDULER_URL".to_owned(), NOWHERE.to_owned()),
            ("DATABASE_URL".to_owned(), db.url().to_owned()),
            ("HTTP_WORKERS".to_owned(), "2".to_owned()),
            ("DATABASE_MAX_CONNECTIONS".to_owned(), "30".to_owned()),
            ("DEFAULT_CLUSTER_VERSION".to_owned(), "4.16.0".to_owned()),
        ]);
        for (k, v) in vars {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_vars(&env).unwrap();
        let state = Arc::new(AppState::build(&config).await.unwrap());
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let running = api_gateway::start(&config, state, api, admin).unwrap();
        let base = format!("http://{}", running.api_addr);
        let admin = format!("http://{}", running.admin_addr);
        tokio::spawn(running.wait());
        TestApp {
            db,
            base,
            admin,
            client: reqwest::Client::new(),
            aggregator,
        }
    }

    /// The gateway's `/metrics` (admin port) as text.
    pub async fn gateway_metrics(&self) -> String {
        scrape(&self.admin).await
    }

    /// The value of one series of the gateway's `/metrics`, named exactly as it is exposed
    /// (`name{label="…",…}`), if it is there.
    pub async fn gateway_series(&self, series: &str) -> Option<String> {
        let prefix = format!("{series} ");
        self.gateway_metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::to_owned)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request as `who` (`None`: anonymous).
    pub fn request(&self, method: Method, path: &str, who: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match who {
            Some(email) => builder.header("X-User-Email", email),
            None => builder,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        who: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut builder = self.request(method, path, who);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        read(builder.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, who: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(who), None).await
    }

    pub async fn post(&self, path: &str, who: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(who), Some(body)).await
    }

    pub async fn put(&self, path: &str, who: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(who), Some(body)).await
    }

    pub async fn delete(&self, path: &str, who: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(who), None).await
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        path: &str,
        who: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        read(
            self.request(Method::POST, path, Some(who))
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Sends `body` as it is, with `content_type`: for bodies `serde_json` would not write.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        who: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, Value) {
        read(
            self.request(method, path, Some(who))
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Creates a cluster as `who` and returns it.
    pub async fn create_cluster(&self, who: &str, name: &str) -> Value {
        let (status, body) = self.post("/api/v1/clusters", who, &cli_cluster(name)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Creates a nodepool in `cluster_id` as `who` and returns it.
    pub async fn create_nodepool(&self, who: &str, cluster_id: &str, name: &str) -> Value {
        let (status, body) = self
            .post("/api/v1/nodepools", who, &cli_nodepool(cluster_id, name, 3))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Every outbox row, oldest first: (event_type, body, attributes, ordering_key).
    pub async fn outbox(&self) -> Vec<(String, Value, Value, String)> {
        let mut conn = self.db.conn().await;
        cls_storage::outbox::pending(&mut conn, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event_type, r.body, r.attributes, r.ordering_key))
            .collect()
    }

    pub async fn outbox_types(&self) -> Vec<String> {
        self.outbox().await.into_iter().map(|(t, ..)| t).collect()
    }
}

/// Reads a response and checks it against the OpenAPI document: the status must be declared
/// for that path, with the response's media type, and the body must match its schema.
pub async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let path = response.url().path().to_owned();
    let content_type = response.headers().get("content-type").map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned()
    });
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    conforms(&path, status, content_type.as_deref(), &body);
    (status, body)
}

static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(&api_gateway::openapi::document_json()).unwrap());

/// The document's path template that `path` instantiates, if any.
fn template_for(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    DOCUMENT["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
}

/// Panics unless a response conforms to the OpenAPI document.
#[track_caller]
pub fn conforms(path: &str, status: StatusCode, content_type: Option<&str>, body: &Value) {
    // Unknown routes are not in the document (they are all 404 ROUTE_NOT_FOUND), nor are the
    // methods a path does not have (405 METHOD_NOT_ALLOWED).
    let Some(template) = template_for(path) else {
        return;
    };
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return;
    }
    let operations = DOCUMENT["paths"][template].as_object().unwrap();
    let code = status.as_u16().to_string();
    let declared: Vec<&Value> = operations
        .values()
        .filter_map(|op| op["responses"].get(&code))
        .collect();
    assert!(
        !declared.is_empty(),
        "{status} is not declared for {template} in the OpenAPI document: {body}"
    );
    let Some(content_type) = content_type else {
        assert!(
            declared.iter().any(|r| r.get("content").is_none()),
            "{template} {status}: no content type"
        );
        return;
    };
    let mut problems = Vec::new();
    for response in declared {
        let Some(schema) = response["content"]
            .get(content_type)
            .map(|c| c["schema"].clone())
        else {
            problems.push(format!("media type {content_type} not declared"));
            continue;
        };
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": DOCUMENT["components"],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap();
        match validator.validate(body) {
            Ok(()) => return,
            Err(error) => problems.push(format!("{error} at {}", error.instance_path())),
        }
    }
    panic!(
        "response of {path} ({template}) {status} does not match the OpenAPI document: {problems:?}\n{body}"
    );
}

/// Asserts a problem+json error with `code`, and returns its message.
#[track_caller]
pub fn assert_problem(
    status: StatusCode,
    body: &Value,
    expected_status: u16,
    code: &str,
) -> String {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert_eq!(body["status"], json!(expected_status));
    assert_eq!(body["type"], json!("about:blank"));
    assert_eq!(body["message"], body["detail"]);
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    body["message"].as_str().unwrap().to_owned()
}

/// The body a real CLI sends for a cluster: every field, optional ones null.
pub fn cli_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "description": "made by gcphcp",
        "target_project_id": "my-project",
        "labels": {"team": "infra"},
        "spec": {
            "infraID": "infra-abc",
            "issuerURL": "https://storage.googleapis.com/my-issuer",
            "serviceAccountSigningKey": "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
            "platform": {"type": "GCP", "gcp": {
                "projectID": "my-project", "region": "us-central1", "network": "vpc", "subnet": "sub",
                "endpointAccess": null,
                "workloadIdentity": {"projectNumber": "123456789", "poolID": "pool", "providerID": "oidc",
                    "serviceAccountsRef": {"nodePoolEmail": "np@p.iam.gserviceaccount.com",
                        "controlPlaneEmail": "cp@p.iam.gserviceaccount.com",
                        "cloudControllerEmail": "cc@p.iam.gserviceaccount.com",
                        "storageEmail": null, "imageRegistryEmail": null, "networkEmail": null}}}},
            "release": {"image": null, "version": null, "channelGroup": null},
            "networking": null,
            "dns": null
        }
    })
}

/// The body a real CLI sends for a nodepool.
pub fn cli_nodepool(cluster_id: &str, name: &str, replicas: i64) -> Value {
    json!({
        "cluster_id": cluster_id,
        "name": name,
        "labels": null,
        "spec": {
            "replicas": replicas,
            "platform": {"type": "GCP", "gcp": {"instanceType": "n2-standard-8",
                "rootVolume": {"size": 128, "type": "pd-balanced"}, "subnet": null,
                "serviceAccount": null, "labels": null, "taints": null}},
            "management": {"autoRepair": true, "upgradeType": "Replace", "replace": null},
            "release": null,
            "nodeDrainTimeout": null
        }
    })
}

/// The Prometheus text at `{base}/metrics`.
pub async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A command-line tool from PyPI: the path in the environment variable `var`, else
/// `.tools/venv/bin/{tool}` (where `cargo xtask ci` installs it), else `tool` on `PATH`.
pub fn python_tool(var: &str, tool: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/venv/bin")
        .join(tool);
    if venv.exists() {
        return venv;
    }
    tool.into()
}

/// The string `key` of every element of the JSON array `items`, in order.
pub fn strings<'a>(items: &'a Value, key: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap())
        .collect()
}
