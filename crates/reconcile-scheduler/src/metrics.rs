//! Prometheus metrics of the reconcile-scheduler.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconcile events accepted by the publisher, by resource kind and reason.
    pub emitted: IntCounterVec,
    /// Publish calls that failed (their items are retried).
    pub publish_failures: IntCounter,
    /// How late a due item was when claimed (claim-loop lag).
    pub claim_lag: Histogram,
    /// Time of one claim → publish → complete round.
    pub round: Histogram,
    /// Reactive triggers by reason and result (accepted, not_found, invalid, unavailable).
    pub triggers: IntCounterVec,
    /// Deleted resources purged.
    pub purged: IntCounter,
    /// Schedule counters, refreshed on scrape (all replicas).
    pub scheduled: IntGauge,
    pub due: IntGauge,
    pub overdue: IntGauge,
    pub claimed: IntGauge,
    pub oldest_due: Gauge,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    result.unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let gauge = |name: &str, help: &str| must(IntGauge::new(name, help));
        let m = Metrics {
            registry: Registry::new(),
            emitted: must(IntCounterVec::new(
                Opts::new(
                    "reconcile_events_emitted_total",
                    "reconcile events accepted by the event-publisher, by kind and reason",
                ),
                &["kind", "reason"],
            )),
            publish_failures: must(IntCounter::new(
                "reconcile_publish_failures_total",
                "Publish calls to the event-publisher that failed (items retried)",
            )),
            claim_lag: must(Histogram::with_opts(
                HistogramOpts::new(
                    "reconcile_claim_lag_seconds",
                    "how long past its due time an item was claimed",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )),
            round: must(Histogram::with_opts(
                HistogramOpts::new(
                    "reconcile_round_duration_seconds",
                    "one claim, publish and complete round",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )),
            triggers: must(IntCounterVec::new(
                Opts::new(
                    "reconcile_triggers_total",
                    "reactive reconcile triggers by reason and result",
                ),
                &["reason", "result"],
            )),
            purged: must(IntCounter::new(
                "reconcile_purged_resources_total",
                "soft-deleted resources purged after DELETED_RETENTION",
            )),
            scheduled: gauge(
                "reconcile_scheduled_resources",
                "live resources with a reconcile schedule",
            ),
            due: gauge(
                "reconcile_due_resources",
                "resources due for a reconcile now",
            ),
            overdue: gauge(
                "reconcile_overdue_resources",
                "resources due for longer than the attention interval",
            ),
            claimed: gauge(
                "reconcile_claimed_resources",
                "due resources this replica holds in a round now (sum over replicas for all)",
            ),
            oldest_due: must(Gauge::new(
                "reconcile_oldest_due_seconds",
                "seconds since the oldest due resource became due",
            )),
        };
        must(m.registry.register(Box::new(m.emitted.clone())));
        must(m.registry.register(Box::new(m.publish_failures.clone())));
        must(m.registry.register(Box::new(m.claim_lag.clone())));
        must(m.registry.register(Box::new(m.round.clone())));
        must(m.registry.register(Box::new(m.triggers.clone())));
        must(m.registry.register(Box::new(m.purged.clone())));
        for g in [&m.scheduled, &m.due, &m.overdue, &m.claimed] {
            must(m.registry.register(Box::new(g.clone())));
        }
        must(m.registry.register(Box::new(m.oldest_due.clone())));
        m
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
