//! Prometheus metrics of the status-aggregator.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Reports by result: accepted, stale, invalid, not_found, unavailable.
    pub reports: IntCounterVec,
    /// Time to validate, store and re-aggregate one report (the transaction).
    pub aggregation: Histogram,
    /// Aggregated phase changes, by the new phase.
    pub transitions: IntCounterVec,
    /// Resources the sweep re-evaluated.
    pub swept: IntCounter,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    result.unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            reports: must(IntCounterVec::new(
                Opts::new(
                    "status_reports_total",
                    "controller status reports by result",
                ),
                &["result"],
            )),
            aggregation: must(Histogram::with_opts(
                HistogramOpts::new(
                    "status_aggregation_duration_seconds",
                    "time to store a report and recompute the aggregated status",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )),
            transitions: must(IntCounterVec::new(
                Opts::new(
                    "status_phase_transitions_total",
                    "aggregated phase changes, by new phase",
                ),
                &["phase"],
            )),
            swept: must(IntCounter::new(
                "status_sweep_rechecked_total",
                "resources re-evaluated by the time-based sweep",
            )),
        };
        must(m.registry.register(Box::new(m.reports.clone())));
        must(m.registry.register(Box::new(m.aggregation.clone())));
        must(m.registry.register(Box::new(m.transitions.clone())));
        must(m.registry.register(Box::new(m.swept.clone())));
        for result in ["accepted", "stale", "invalid", "not_found", "unavailable"] {
            m.reports.with_label_values(&[result]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
