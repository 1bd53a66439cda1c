//! The four services in-process over real gRPC and HTTP, on one real database and a real
//! Pub/Sub emulator, with a test subscription on each topic: what a controller would see.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different subset"
)]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cls_test_support::emulator::PROJECT;
pub use cls_test_support::subscriber::{Received, Subscriber};
use cls_test_support::{PubSubEmulator, TestDb};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const USER: &str = "alice@example.com";
pub const CONTROLLER: &str = "controller@system.local";

fn vars(pairs: &[(&str, &str)], extra: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn listeners() -> (TcpListener, TcpListener) {
    (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

/// Database, emulator, subscription, event-publisher, status-aggregator and api-gateway; the
/// tests start schedulers themselves ([`Stack::scheduler`]).
pub struct Stack {
    /// The test's own database, unless the stack runs on a given one ([`Stack::start_on`]).
    db: Option<TestDb>,
    pub database_url: String,
    pub emulator: PubSubEmulator,
    pub subscriber: Subscriber,
    pub publisher: event_publisher::Running,
    pub aggregator: status_aggregator::Running,
    /// Where the gateway and aggregator send triggers (the schedulers' gRPC port, fixed up
    /// front so a scheduler started later is found there).
    pub scheduler_port: u16,
    pub api: String,
    /// The gateway's admin server (`/metrics`).
    pub gateway_admin: std::net::SocketAddr,
    pub client: reqwest::Client,
}

impl Stack {
    /// Starts everything but the scheduler. `aggregator_vars` tune the aggregator.
    pub async fn start(aggregator_vars: &[(&str, &str)]) -> Stack {
        let db = TestDb::new().await;
        let url = db.url().to_owned();
        Stack::start_with(Some(db), url, aggregator_vars).await
    }

    /// [`Stack::start`] on a migrated database of the caller's (say, on a Postgres cluster
    /// the test restarts).
    pub async fn start_on(database_url: &str, aggregator_vars: &[(&str, &str)]) -> Stack {
        Stack::start_with(None, database_url.to_owned(), aggregator_vars).await
    }

    async fn start_with(
        db: Option<TestDb>,
        database_url: String,
        aggregator_vars: &[(&str, &str)],
    ) -> Stack {
        let emulator = PubSubEmulator::start().unwrap();
        let mut subscriber = Subscriber::connect(&emulator.host()).await;
        subscriber.subscribe().await;
        let scheduler_port = cls_test_support::free_port().unwrap();
        let scheduler_url = format!("http://127.0.0.1:{scheduler_port}");

        let publisher_config = event_publisher::Config::from_vars(&vars(
            &[
                ("DATABASE_URL", &database_url),
                ("PUBSUB_EMULATOR_HOST", &emulator.host()),
                ("GOOGLE_CLOUD_PROJECT", PROJECT),
                ("OUTBOX_POLL_INTERVAL", "500ms"),
                ("PUBLISH_BACKOFF_INITIAL", "50ms"),
                ("PUBLISH_BACKOFF_MAX", "1s"),
                ("SHUTDOWN_TIMEOUT", "5s"),
            ],
            &[],
        ))
        .unwrap();
        let (grpc, admin) = listeners().await;
        let publisher = event_publisher::start(&publisher_config, grpc, admin)
            .await
            .unwrap();

        let aggregator_config = status_aggregator::Config::from_vars(&vars(
            &[
                ("DATABASE_URL", &database_url),
                ("RECONCILE_SCHEDULER_URL", &scheduler_url),
                ("PEER_TIMEOUT", "2s"),
            ],
            aggregator_vars,
        ))
        .unwrap();
        let triggers = cls_rpc::client::ReconcileTriggers::new(
            aggregator_config.reconcile_scheduler_url.as_deref(),
            aggregator_config.peer_timeout,
            cls_rpc::auth::SharedToken::none(),
        )
        .unwrap();
        let (grpc, admin) = listeners().await;
        let aggregator = status_aggregator::start(
            &aggregator_config,
            Arc::new(status_aggregator::ReconcileOnPhaseChange(triggers)),
            grpc,
            admin,
        )
        .await
        .unwrap();

        let gateway_config = api_gateway::Config::from_vars(&vars(
            &[
                ("DATABASE_URL", &database_url),
                (
                    "STATUS_AGGREGATOR_URL",
                    &format!("http://{}", aggregator.grpc_addr),
                ),
                ("RECONCILE_SCHEDULER_URL", &scheduler_url),
                ("PEER_TIMEOUT", "2s"),
                ("HTTP_WORKERS", "2"),
            ],
            &[],
        ))
        .unwrap();
        let state = Arc::new(api_gateway::AppState::build(&gateway_config).await.unwrap());
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let running = api_gateway::start(&gateway_config, state, api, admin).unwrap();
        let api = format!("http://{}", running.api_addr);
        let gateway_admin = running.admin_addr;
        tokio::spawn(running.wait());

        Stack {
            db,
            database_url,
            emulator,
            subscriber,
            publisher,
            aggregator,
            scheduler_port,
            api,
            gateway_admin,
            client: reqwest::Client::new(),
        }
    }

    /// A new connection to the stack's database.
    pub async fn conn(&self) -> diesel_async::AsyncPgConnection {
        use diesel_async::AsyncConnection as _;
        diesel_async::AsyncPgConnection::establish(&self.database_url)
            .await
            .unwrap()
    }

    /// A scheduler configuration for this stack: short intervals, `extra` on top.
    pub fn scheduler_config(&self, extra: &[(&str, &str)]) -> reconcile_scheduler::Config {
        reconcile_scheduler::Config::from_vars(&vars(
            &[
                ("DATABASE_URL", &self.database_url),
                (
                    "EVENT_PUBLISHER_URL",
                    &format!("http://{}", self.publisher.grpc_addr),
                ),
                ("RECONCILE_POLL_INTERVAL", "200ms"),
                ("RECONCILE_DEBOUNCE", "1s"),
                ("RECONCILE_RETRY_BACKOFF", "500ms"),
                ("PEER_TIMEOUT", "2s"),
                ("RECONCILE_CLAIM_TTL", "5s"),
                ("SHUTDOWN_TIMEOUT", "5s"),
            ],
            extra,
        ))
        .unwrap()
    }

    /// Starts a scheduler replica; `on_trigger_port` puts it on the port the gateway and the
    /// aggregator send triggers to (one replica at a time may hold it).
    pub async fn scheduler(
        &self,
        config: &reconcile_scheduler::Config,
        on_trigger_port: bool,
    ) -> reconcile_scheduler::Running {
        let grpc = if on_trigger_port {
            TcpListener::bind(("127.0.0.1", self.scheduler_port))
                .await
                .unwrap()
        } else {
            TcpListener::bind("127.0.0.1:0").await.unwrap()
        };
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        reconcile_scheduler::start(config, grpc, admin)
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        who: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.api))
            .header("X-User-Email", who);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a cluster and returns its id.
    pub async fn create_cluster(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/clusters",
                USER,
                Some(&cluster_body(name, "infra-1")),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_cluster_named(&self, name: String) -> String {
        self.create_cluster(&name).await
    }

    /// Creates a nodepool in a cluster and returns its id.
    pub async fn create_nodepool(&self, cluster_id: &str, name: &str) -> String {
        let body = json!({
            "cluster_id": cluster_id, "name": name,
            "spec": {"replicas": 2, "platform": {"type": "GCP", "gcp": {"instanceType": "n2-standard-8"}}}
        });
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/nodepools",
                USER,
                Some(&body),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Changes a cluster's spec (a new generation); returns the new generation.
    pub async fn change_spec(&self, cluster_id: &str, infra_id: &str) -> i64 {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/clusters/{cluster_id}"),
                USER,
                Some(&json!({"spec": cluster_body("", infra_id)["spec"]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["generation"].as_i64().unwrap()
    }

    /// A controller reports `Available=True` on `generation` (the resource becomes Ready).
    pub async fn report_ready(&self, path: &str, generation: i64) {
        let report = json!({
            "controller_name": "ctl-a", "observed_generation": generation,
            "conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": "ok"}]
        });
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{path}/status"),
                CONTROLLER,
                Some(&report),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Pulls for `duration` and returns the reconcile events received, in arrival order.
    pub async fn reconciles_for(&self, duration: Duration) -> Vec<Reconcile> {
        let mut all = Vec::new();
        let _ = self
            .subscriber
            .pull_until(&mut all, duration, |_| false)
            .await;
        reconciles(&all)
    }

    /// Pulls until `done` holds for the reconcile events received (or `timeout`), returning
    /// them all.
    pub async fn reconciles_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Reconcile]) -> bool,
    ) -> Vec<Reconcile> {
        let mut all = Vec::new();
        let finished = self
            .subscriber
            .pull_until(&mut all, timeout, |r| done(&reconciles(r)))
            .await;
        let got = reconciles(&all);
        assert!(finished, "timed out; reconcile events so far: {got:#?}");
        got
    }
}

/// A minimal valid cluster body.
pub fn cluster_body(name: &str, infra_id: &str) -> Value {
    json!({
        "name": name,
        "spec": {"infraID": infra_id, "platform": {"type": "GCP", "gcp": {
            "projectID": "p", "region": "us-central1", "network": "n", "subnet": "s"}}}
    })
}

/// A reconcile event as received.
#[derive(Debug, Clone)]
pub struct Reconcile {
    pub event_id: String,
    /// The resource's id (nodepool id for nodepool events).
    pub resource: String,
    pub reason: String,
    pub generation: i64,
    pub scheduled_by: String,
    /// When the scheduler emitted it.
    pub timestamp: time::OffsetDateTime,
    pub body: Value,
}

/// The reconcile events among received messages.
pub fn reconciles(received: &[Received]) -> Vec<Reconcile> {
    received
        .iter()
        .filter(|m| {
            m.attributes
                .get("event_type")
                .is_some_and(|t| t.ends_with(".reconcile"))
        })
        .map(|m| {
            let body = &m.body;
            let resource = body["nodepool_id"]
                .as_str()
                .or(body["cluster_id"].as_str())
                .unwrap()
                .to_owned();
            Reconcile {
                event_id: body["id"].as_str().unwrap().to_owned(),
                resource,
                reason: body["reason"].as_str().unwrap().to_owned(),
                generation: body["generation"].as_i64().unwrap(),
                scheduled_by: body["metadata"]["scheduled_by"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                timestamp: time::OffsetDateTime::parse(
                    body["timestamp"].as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap(),
                body: body.clone(),
            }
        })
        .collect()
}

/// The reconcile events of one resource, in emission order.
pub fn of<'a>(events: &'a [Reconcile], resource: &str) -> Vec<&'a Reconcile> {
    let mut mine: Vec<&Reconcile> = events.iter().filter(|e| e.resource == resource).collect();
    mine.sort_by_key(|e| e.timestamp);
    mine
}

/// Seconds between consecutive events.
pub fn gaps(events: &[&Reconcile]) -> Vec<f64> {
    events
        .windows(2)
        .map(|w| (w[1].timestamp - w[0].timestamp).as_seconds_f64())
        .collect()
}

/// One series of a service's `/metrics`.
pub async fn metric(admin: std::net::SocketAddr, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
