//! Prometheus metrics of the gateway, served on the admin port (`METRICS_PORT`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    status_reports: IntCounterVec,
    pub db_connections: IntGauge,
    pub db_idle_connections: IntGauge,
    /// Expired idempotency records deleted.
    pub idempotency_pruned: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests served, by method, route template and status",
            ),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by method and route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let errors = IntCounterVec::new(
            Opts::new(
                "http_request_errors_total",
                "HTTP error responses by method, route template and error code",
            ),
            &["method", "route", "code"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        // The same series as the status-aggregator's, for the reports the gateway refuses
        // itself (a caller that is not a controller), so `sum by (result)` over both services
        // counts every report.
        let status_reports = IntCounterVec::new(
            Opts::new(
                "status_reports_total",
                "controller status reports by result",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        status_reports.with_label_values(&["forbidden"]);
        let db_connections = IntGauge::new(
            "db_pool_connections",
            "open database connections in the pool",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let db_idle_connections = IntGauge::new(
            "db_pool_idle_connections",
            "idle database connections in the pool",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let idempotency_pruned = IntCounter::new(
            "idempotency_keys_pruned_total",
            "expired Idempotency-Key records deleted",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(status_reports.clone()),
            Box::new(db_connections.clone()),
            Box::new(db_idle_connections.clone()),
            Box::new(idempotency_pruned.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|e| unreachable!("unique metric names: {e}"));
        }
        Metrics {
            registry,
            requests,
            duration,
            errors,
            status_reports,
            db_connections,
            db_idle_connections,
            idempotency_pruned,
        }
    }

    /// Records one request. `route` is the route template, never the raw path.
    pub fn observe(
        &self,
        method: &str,
        route: &str,
        status: u16,
        error_code: Option<&str>,
        seconds: f64,
    ) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(seconds);
        if let Some(code) = error_code {
            self.errors.with_label_values(&[method, route, code]).inc();
        }
    }

    /// A status report refused because the caller is not a controller.
    pub fn status_report_forbidden(&self) {
        self.status_reports.with_label_values(&["forbidden"]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        cls_service::admin::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
