//! Observability across the services (SPEC §8), in-process over real gRPC, Postgres and the
//! Pub/Sub emulator: one trace from a REST call through gRPC and the outbox to Pub/Sub, received
//! by a real OTLP collector (a gRPC server implementing the OTLP trace service); and every
//! service's `/metrics` as Prometheus text with bounded labels.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use reqwest::Method;
use serde_json::json;

/// A received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attributes: HashMap<String, String>,
    /// The names of its span events (`tracing` events exported with it).
    events: Vec<String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a.value.as_ref())))
                            .collect(),
                        events: span.events.into_iter().map(|e| e.name).collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A controller's status report on cluster `id`, sent in trace `trace_id`; its HTTP status.
async fn report_status(client: &reqwest::Client, api: &str, id: &str, trace_id: &str) -> u16 {
    client
        .put(format!("{api}/api/v1/clusters/{id}/status"))
        .header("X-User-Email", CONTROLLER)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({"controller_name": "ctl-a", "observed_generation": 1,
            "conditions": [{"type": "Available", "status": "True", "reason": "Done", "message": "ok"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_rest_through_grpc_and_the_outbox_to_pubsub() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // One tracer for the whole test process: every in-process service exports through it.
    let telemetry = cls_telemetry::init(&cls_telemetry::Settings {
        service: "cls-test",
        version: "0",
        level: "info",
        format: cls_telemetry::LogFormat::Json,
        otlp_endpoint: Some(&endpoint),
    })
    .unwrap();
    assert!(cls_telemetry::tracing_enabled());

    let stack = Stack::start(&[]).await;
    let scheduler = stack.scheduler(&stack.scheduler_config(&[]), true).await;
    let response = stack
        .client
        .post(format!("{}/api/v1/clusters", stack.api))
        .header("X-User-Email", USER)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&cluster_body("traced", "infra-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let cluster: serde_json::Value = response.json().await.unwrap();
    let id = cluster["id"].as_str().unwrap().to_owned();

    // The Pub/Sub message of the creation carries the trace to controllers.
    let mut received = Vec::new();
    assert!(
        stack
            .subscriber
            .pull_until(&mut received, Duration::from_secs(20), |r| r
                .iter()
                .any(|m| m.attributes.get("event_type").map(String::as_str)
                    == Some("cluster.created")))
            .await
    );
    let created = received
        .iter()
        .find(|m| m.attributes["event_type"] == "cluster.created")
        .unwrap();
    let traceparent = &created.attributes["traceparent"];
    assert!(
        traceparent.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{traceparent}"
    );

    // The spans arrive at the collector (batched export).
    let wanted = |spans: &[Span]| {
        let in_trace =
            |f: &dyn Fn(&Span) -> bool| spans.iter().any(|s| s.trace_id == CLIENT_TRACE && f(s));
        in_trace(&|s| {
            s.kind == SERVER
                && s.attributes.get("http.route").map(String::as_str) == Some("/api/v1/clusters")
        }) && in_trace(&|s| {
            s.kind == SERVER
                && s.attributes.get("rpc.method").map(String::as_str) == Some("Trigger")
        }) && in_trace(&|s| s.kind == PRODUCER)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.0.lock().unwrap().clone();
        if wanted(&spans) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the trace never all arrived: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect();
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let find = |f: &dyn Fn(&Span) -> bool| *trace.iter().find(|s| f(s)).unwrap();

    // The gateway's server span: a child of the client's span, with HTTP conventions.
    let http = find(&|s| {
        s.kind == SERVER
            && s.attributes.get("http.route").map(String::as_str) == Some("/api/v1/clusters")
    });
    assert_eq!(
        http.parent, CLIENT_SPAN,
        "the client's traceparent is the parent"
    );
    assert_eq!(http.name, "POST /api/v1/clusters");
    assert_eq!(http.attributes["http.request.method"], "POST");
    assert_eq!(http.attributes["http.response.status_code"], "201");
    // `request_id` is exported for finding a request's trace; `trace_id` is for log lines
    // only (the span has its trace id already).
    assert!(http.attributes.contains_key("request_id"), "{http:?}");
    assert!(!http.attributes.contains_key("trace_id"), "{http:?}");
    assert_eq!(http.service, "cls-test");
    // The access log line is an INFO event: logged, not exported with the span it repeats.
    assert!(http.events.is_empty(), "{:?}", http.events);

    // Postgres work inside it (the cluster, its schedule row and its event: one statement).
    let insert = find(&|s| s.name == "INSERT clusters");
    assert_eq!(insert.attributes["db.system"], "postgresql");
    assert_eq!(insert.kind, CLIENT);
    assert_eq!(insert.parent, http.span_id);

    // gateway → scheduler over gRPC: client span under the request, server span under it.
    let call = find(&|s| {
        s.kind == CLIENT && s.attributes.get("rpc.method").map(String::as_str) == Some("Trigger")
    });
    assert_eq!(call.attributes["rpc.system"], "grpc");
    assert_eq!(
        call.attributes["rpc.service"],
        "cls.scheduler.v1.ReconcileScheduler"
    );
    let handled = find(&|s| {
        s.kind == SERVER && s.attributes.get("rpc.method").map(String::as_str) == Some("Trigger")
    });
    assert_eq!(handled.parent, call.span_id);
    assert_eq!(by_id[call.parent.as_str()].span_id, http.span_id);

    // outbox → Pub/Sub: the publish span is a child of the transaction's context, and the
    // message's traceparent names it.
    let publish = find(&|s| s.kind == PRODUCER);
    assert_eq!(publish.attributes["messaging.system"], "gcp_pubsub");
    assert_eq!(
        publish.attributes["messaging.destination.name"],
        "cluster-events"
    );
    assert_eq!(publish.parent, http.span_id);
    assert!(
        traceparent.contains(&http.span_id),
        "{traceparent} names the request span"
    );

    // Only CLS's own spans are exported, never library internals (h2, hyper, tower, …).
    for span in &spans {
        let ours = span.name.starts_with("POST ")
            || span.name.starts_with("GET ")
            || span.name.starts_with("PUT ")
            || span.name.starts_with("cls.")
            || span.name.starts_with("INSERT ")
            || span.name.starts_with("SELECT ")
            || span.name.starts_with("UPDATE ")
            || span.name.ends_with(" publish")
            || span.name == "reconcile round";
        assert!(ours, "an unexpected span was exported: {span:?}");
    }

    // No request bodies or secrets in attributes.
    for span in &trace {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("infra-1"),
                "{key} carries the body: {value}"
            );
            assert!(
                !key.contains("email") && !value.contains(USER),
                "{key}={value}"
            );
        }
    }
    // gateway → aggregator: a controller's status report in a trace of its own.
    const REPORT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let report = report_status(&stack.client, &stack.api, &id, REPORT_TRACE).await;
    assert_eq!(report, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<Span> = collector
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == REPORT_TRACE)
            .cloned()
            .collect();
        let reported = |kind: i32| {
            spans.iter().any(|s| {
                s.kind == kind
                    && s.attributes.get("rpc.method").map(String::as_str) == Some("ReportStatus")
            })
        };
        if reported(CLIENT) && reported(SERVER) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "report spans never arrived: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let call = spans
        .iter()
        .find(|s| {
            s.kind == CLIENT
                && s.attributes.get("rpc.method").map(String::as_str) == Some("ReportStatus")
        })
        .unwrap();
    let served = spans
        .iter()
        .find(|s| {
            s.kind == SERVER
                && s.attributes.get("rpc.method").map(String::as_str) == Some("ReportStatus")
        })
        .unwrap();
    assert_eq!(
        served.attributes["rpc.service"],
        "cls.status.v1.StatusAggregator"
    );
    assert_eq!(served.parent, call.span_id);
    let request = spans
        .iter()
        .find(|s| {
            s.kind == SERVER
                && s.attributes.get("http.route").map(String::as_str)
                    == Some("/api/v1/clusters/{id}/status")
        })
        .unwrap();
    assert_eq!(call.parent, request.span_id);
    assert_eq!(request.parent, "b7ad6b7169203331");

    // A warning inside a request is exported with its span: the aggregator is gone, the report
    // fails with 503, and the gateway's span carries why.
    const FAILED_TRACE: &str = "5c3f6e0e2b1a4d9c8e7f6a5b4c3d2e1f";
    stack.aggregator.shutdown().await;
    let report = report_status(&stack.client, &stack.api, &id, FAILED_TRACE).await;
    assert_eq!(report, 503);
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let found = collector
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.trace_id == FAILED_TRACE && s.kind == SERVER)
            .cloned();
        if let Some(span) = found {
            break span;
        }
        assert!(
            Instant::now() < deadline,
            "the failed report's span never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(failed.attributes["http.response.status_code"], "503");
    assert_eq!(failed.events, ["status-aggregator call failed"]);

    scheduler.shutdown().await;
    telemetry.shutdown().await;
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Prometheus text exposition: `name{labels} value` lines.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').unwrap();
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").unwrap();
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line}"
            );
            (name, labels, value)
        })
        .collect()
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_s_metrics_parse_and_keep_labels_bounded() {
    let stack = Stack::start(&[]).await;
    let scheduler = stack.scheduler(&stack.scheduler_config(&[]), true).await;
    // A small workload touching every service.
    let cluster = stack.create_cluster("metrics").await;
    stack
        .report_ready(&format!("/api/v1/clusters/{cluster}"), 1)
        .await;
    let (status, _) = stack
        .call(
            Method::GET,
            &format!("/api/v1/clusters/{cluster}"),
            USER,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .call(
            Method::PUT,
            "/api/v1/clusters/not-a-uuid/status",
            USER,
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 400);
    stack
        .reconciles_until(Duration::from_secs(20), |e| !of(e, &cluster).is_empty())
        .await;

    let services = [
        (
            "api-gateway",
            stack.gateway_admin,
            vec![
                "http_requests_total",
                "http_request_duration_seconds_bucket",
                "http_request_errors_total",
            ],
        ),
        (
            "status-aggregator",
            stack.aggregator.admin_addr,
            vec![
                "status_reports_total",
                "status_aggregation_duration_seconds_bucket",
                "status_phase_transitions_total",
            ],
        ),
        (
            "reconcile-scheduler",
            scheduler.service.admin_addr,
            vec![
                "reconcile_events_emitted_total",
                "reconcile_claim_lag_seconds_bucket",
                "reconcile_due_resources",
                "reconcile_triggers_total",
            ],
        ),
        (
            "event-publisher",
            stack.publisher.admin_addr,
            vec![
                "events_published_total",
                "outbox_pending_events",
                "outbox_oldest_pending_age_seconds",
                "pubsub_publish_duration_seconds_bucket",
            ],
        ),
    ];
    for (service, admin, documented) in services {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = parse(&text);
        for name in documented {
            assert!(
                samples.iter().any(|(n, _, _)| n == name),
                "{service}: {name} missing from\n{text}"
            );
        }
        for (name, labels, _) in &samples {
            for (key, value) in labels {
                assert!(
                    !looks_like_uuid(value),
                    "{service}: {name}{{{key}=\"{value}\"}} is unbounded"
                );
            }
            if name.ends_with("_seconds_bucket") || name.ends_with("_total") {
                continue;
            }
            assert!(
                !name.ends_with("_count") || labels.iter().all(|(k, _)| k != "le"),
                "{service}: {name}"
            );
        }
    }
    let gateway = reqwest::get(format!("http://{}/metrics", stack.gateway_admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        gateway.contains(r#"route="/api/v1/clusters/{id}/status""#),
        "routes are templates: {gateway}"
    );
    scheduler.shutdown().await;
}
