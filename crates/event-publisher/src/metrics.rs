//! Prometheus metrics of the event-publisher (admin port, `/metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    core::Collector,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Rows waiting to be published (sampled on scrape).
    pub pending: IntGauge,
    /// Age of the oldest pending row, seconds (sampled on scrape).
    pub oldest_pending_age: prometheus::Gauge,
    /// Rows in the dead-letter state (sampled on scrape).
    pub dead: IntGauge,
    /// Shards this replica leases now.
    pub shards_held: IntGauge,
    pub publish_duration: HistogramVec,
    pub commit_to_publish: Histogram,
    pub published: IntCounterVec,
    pub failed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub pruned: prometheus::IntCounter,
    /// Reads of pending rows by the shard workers.
    pub outbox_reads: prometheus::IntCounter,
    pub grpc_publish: IntCounterVec,
    pub db_connections: IntGauge,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    result.unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let topic = &["topic"];
        let m = Metrics {
            pending: must(IntGauge::new(
                "outbox_pending_events",
                "outbox rows not yet published",
            )),
            oldest_pending_age: must(prometheus::Gauge::new(
                "outbox_oldest_pending_age_seconds",
                "age of the oldest unpublished outbox row",
            )),
            dead: must(IntGauge::new(
                "outbox_dead_events",
                "outbox rows Pub/Sub rejected as invalid (kept for inspection)",
            )),
            shards_held: must(IntGauge::new(
                "outbox_shards_held",
                "outbox shards leased by this replica",
            )),
            publish_duration: must(HistogramVec::new(
                HistogramOpts::new(
                    "pubsub_publish_duration_seconds",
                    "latency of Pub/Sub publish calls, by topic",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                topic,
            )),
            commit_to_publish: must(Histogram::with_opts(
                HistogramOpts::new(
                    "outbox_commit_to_publish_seconds",
                    "time from writing an outbox row to Pub/Sub acknowledging it",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )),
            published: must(IntCounterVec::new(
                Opts::new("events_published_total", "events acknowledged by Pub/Sub"),
                topic,
            )),
            failed: must(IntCounterVec::new(
                Opts::new(
                    "event_publish_failures_total",
                    "events whose publish attempt failed and will be retried",
                ),
                topic,
            )),
            dead_lettered: must(IntCounterVec::new(
                Opts::new(
                    "events_dead_lettered_total",
                    "events Pub/Sub rejected as invalid, moved to the dead-letter state",
                ),
                topic,
            )),
            pruned: must(prometheus::IntCounter::new(
                "outbox_pruned_total",
                "published outbox rows deleted after the retention period",
            )),
            outbox_reads: must(prometheus::IntCounter::new(
                "outbox_reads_total",
                "reads of pending outbox rows by this replica's shard workers",
            )),
            grpc_publish: must(IntCounterVec::new(
                Opts::new(
                    "grpc_publish_requests_total",
                    "gRPC Publish calls by result (ok, invalid, unavailable)",
                ),
                &["result"],
            )),
            db_connections: must(IntGauge::new(
                "db_pool_connections",
                "open database connections in the pool",
            )),
            registry,
        };
        let collectors: [Box<dyn Collector>; 13] = [
            Box::new(m.pending.clone()),
            Box::new(m.oldest_pending_age.clone()),
            Box::new(m.dead.clone()),
            Box::new(m.shards_held.clone()),
            Box::new(m.publish_duration.clone()),
            Box::new(m.commit_to_publish.clone()),
            Box::new(m.published.clone()),
            Box::new(m.failed.clone()),
            Box::new(m.dead_lettered.clone()),
            Box::new(m.pruned.clone()),
            Box::new(m.outbox_reads.clone()),
            Box::new(m.grpc_publish.clone()),
            Box::new(m.db_connections.clone()),
        ];
        for collector in collectors {
            must(m.registry.register(collector));
        }
        // Every series exists from the start, so dashboards and alerts see zeros, not gaps.
        for topic in ["cluster-events", "nodepool-events"] {
            m.published.with_label_values(&[topic]);
            m.failed.with_label_values(&[topic]);
            m.dead_lettered.with_label_values(&[topic]);
        }
        for result in ["ok", "invalid", "unavailable"] {
            m.grpc_publish.with_label_values(&[result]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
