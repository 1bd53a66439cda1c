//! The status aggregation decision table (SPEC §4.2) as a pure function.

use time::{Duration, OffsetDateTime};

use crate::resource::ResourceKind;
use crate::status::{Condition, ConditionStatus, ControllerSummary, Phase, Status};

/// The default window: a controller that reported within it counts as "showing progress".
pub const PROGRESS_WINDOW: Duration = Duration::minutes(5);

/// The default `STATUS_GRACE_PERIOD`.
pub const DEFAULT_GRACE: Duration = Duration::minutes(30);

/// Everything the aggregated status depends on.
#[derive(Debug, Clone, Copy)]
pub struct AggregationInput<'a> {
    pub kind: ResourceKind,
    /// The resource's current generation. Rows for other generations are ignored.
    pub generation: i64,
    /// Every controller row of the resource. Each carries the time it first reported on its
    /// generation, so the grace clock is the earliest of those among current rows.
    pub controllers: &'a [ControllerSummary],
    /// The stored status, for condition transition times.
    pub previous: Option<&'a Status>,
    pub now: OffsetDateTime,
    pub grace: Duration,
    /// A report this recent counts as progress ([`PROGRESS_WINDOW`] unless configured).
    pub progress_window: Duration,
}

/// The aggregated status and when, at the latest, it must be recomputed even if nothing
/// else happens (`None`: only a new report or spec change can change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub status: Status,
    pub recheck_at: Option<OffsetDateTime>,
}

/// The status of a resource no controller has reported on yet.
pub fn initial_status(kind: ResourceKind, generation: i64, now: OffsetDateTime) -> Status {
    aggregate(&AggregationInput {
        kind,
        generation,
        controllers: &[],
        previous: None,
        now,
        grace: DEFAULT_GRACE,
        progress_window: PROGRESS_WINDOW,
    })
    .status
}

/// Applies the decision table: the first matching row wins.
pub fn aggregate(input: &AggregationInput<'_>) -> Aggregate {
    let kind = input.kind.display_name();
    let current: Vec<&ControllerSummary> = input
        .controllers
        .iter()
        .filter(|c| c.observed_generation == input.generation)
        .collect();
    let n = current.len();
    let ready = current.iter().filter(|c| c.ready).count();
    let errors = current.iter().filter(|c| c.has_error).count();

    let (decision, recheck_at) = if n == 0 {
        (
            Decision {
                phase: Phase::Pending,
                reason: "NoControllers",
                message: "Waiting for controllers to report status".to_owned(),
                ready: (
                    "ControllersNotReady",
                    "No controllers have reported status yet".to_owned(),
                ),
                available: (
                    "ControllersNotAvailable",
                    "No controllers are available yet".to_owned(),
                ),
            },
            None,
        )
    } else if ready == n && errors == 0 {
        (
            Decision {
                phase: Phase::Ready,
                reason: "AllControllersReady",
                message: format!("{kind} is ready with {n} controllers operational"),
                ready: (
                    "AllControllersReady",
                    format!("All {n} controllers are ready"),
                ),
                available: (
                    "AllControllersAvailable",
                    format!("All {n} controllers are available"),
                ),
            },
            None,
        )
    } else if ready > 0 && errors > 0 {
        (
            Decision {
                phase: Phase::Progressing,
                reason: "ControllersWithErrors",
                message: format!(
                    "{kind} is progressing but some controllers have errors ({ready}/{n} ready)"
                ),
                ready: (
                    "PartiallyReady",
                    format!("{ready} of {n} controllers are ready"),
                ),
                available: (
                    "PartiallyAvailableWithErrors",
                    format!("Some controllers have errors ({ready} available of {n})"),
                ),
            },
            None,
        )
    } else if ready > 0 {
        (
            Decision {
                phase: Phase::Progressing,
                reason: "PartialProgress",
                message: format!("{kind} is progressing ({ready}/{n} controllers ready)"),
                ready: (
                    "PartiallyReady",
                    format!("{ready} of {n} controllers are ready"),
                ),
                available: (
                    "PartiallyAvailable",
                    format!("Controllers are still becoming available ({ready} available of {n})"),
                ),
            },
            None,
        )
    } else {
        none_ready(input, &current)
    };

    let status = Status {
        observed_generation: input.generation,
        phase: decision.phase,
        reason: decision.reason.to_owned(),
        message: decision.message,
        conditions: vec![
            condition(input, "Ready", decision.phase, decision.ready),
            condition(input, "Available", decision.phase, decision.available),
        ],
        last_update_time: input.now,
    };
    Aggregate { status, recheck_at }
}

struct Decision {
    phase: Phase,
    reason: &'static str,
    message: String,
    ready: (&'static str, String),
    available: (&'static str, String),
}

/// The three rows where no current controller is ready yet.
fn none_ready(
    input: &AggregationInput<'_>,
    current: &[&ControllerSummary],
) -> (Decision, Option<OffsetDateTime>) {
    let n = current.len();
    let first_report = current
        .iter()
        .map(|c| c.first_reported_at)
        .min()
        .unwrap_or(input.now);
    let last_report = current
        .iter()
        .map(|c| c.last_reported_at)
        .max()
        .unwrap_or(input.now);
    let any_error = current.iter().any(|c| c.has_error);
    let elapsed = input.now - first_report;
    let deadline = first_report + input.grace;
    let working = (
        "ControllersNotYetReady",
        format!("Controllers are still working ({n} of {n} controllers)"),
    );
    let becoming = (
        "ControllersBecomingAvailable",
        format!("Controllers are becoming available ({n} working)"),
    );

    if elapsed < input.grace {
        let minutes_left = whole_minutes(input.grace - elapsed);
        let remaining = match minutes_left {
            0 => String::new(),
            m => format!(" ({m} minutes remaining)"),
        };
        // The message changes when the whole number of minutes left drops, and the row
        // changes when the grace period ends.
        let next_change = deadline - Duration::minutes(minutes_left);
        return (
            Decision {
                phase: Phase::Progressing,
                reason: "ControllersProvisioning",
                message: format!(
                    "Controllers are provisioning resources{remaining} ({n} controllers working)"
                ),
                ready: working,
                available: becoming,
            },
            Some(next_change),
        );
    }
    let recent_report = input.now - last_report < input.progress_window;
    if recent_report || any_error {
        // Without an error, silence turns this into a timeout.
        let recheck = (!any_error).then_some(last_report + input.progress_window);
        return (
            Decision {
                phase: Phase::Progressing,
                reason: "ControllersShowingProgress",
                message: format!(
                    "Controllers are actively working but not yet ready ({n} controllers showing progress)"
                ),
                ready: working,
                available: becoming,
            },
            recheck,
        );
    }
    let x = whole_minutes(elapsed);
    (
        Decision {
            phase: Phase::Failed,
            reason: "ControllerTimeout",
            message: format!(
                "Controllers failed to become ready after {x} minutes with no progress ({n} controllers timed out)"
            ),
            ready: (
                "ControllersTimedOut",
                format!("Controllers timed out after {x} minutes"),
            ),
            available: (
                "ControllersTimedOut",
                format!("No controllers became available after {x} minutes"),
            ),
        },
        None,
    )
}

fn whole_minutes(d: Duration) -> i64 {
    d.whole_minutes().max(0)
}

/// Builds a condition, keeping the previous transition time while its status is unchanged.
fn condition(
    input: &AggregationInput<'_>,
    condition_type: &str,
    phase: Phase,
    (reason, message): (&'static str, String),
) -> Condition {
    let status = if phase == Phase::Ready {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let last_transition_time = input
        .previous
        .and_then(|p| p.condition(condition_type))
        .filter(|c| c.status == status)
        .map_or(input.now, |c| c.last_transition_time);
    Condition {
        condition_type: condition_type.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ControllerCondition, ControllerStatus, ErrorInfo};
    use serde_json::Map;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-24 10:00:00 UTC);

    /// A controller row: `ready` sets Available=True; `error` sets last_error.
    struct Row {
        generation: i64,
        ready: bool,
        error: bool,
        first: OffsetDateTime,
        last: OffsetDateTime,
    }

    fn row(ready: bool, error: bool) -> Row {
        Row {
            generation: 1,
            ready,
            error,
            first: T0,
            last: T0,
        }
    }

    impl Row {
        fn at(mut self, first: OffsetDateTime, last: OffsetDateTime) -> Row {
            self.first = first;
            self.last = last;
            self
        }
        fn generation(mut self, g: i64) -> Row {
            self.generation = g;
            self
        }
        fn build(&self, i: usize) -> ControllerStatus {
            ControllerStatus {
                controller_name: format!("ctl-{i}"),
                observed_generation: self.generation,
                conditions: vec![ControllerCondition {
                    condition_type: "Available".into(),
                    status: if self.ready {
                        ConditionStatus::True
                    } else {
                        ConditionStatus::False
                    },
                    reason: String::new(),
                    message: String::new(),
                    last_transition_time: self.first,
                    severity: None,
                }],
                metadata: Map::new(),
                last_error: self.error.then(|| ErrorInfo {
                    controller_name: format!("ctl-{i}"),
                    error_type: "Transient".into(),
                    error_code: "E1".into(),
                    message: "boom".into(),
                    user_actionable: false,
                    suggestions: None,
                    details: None,
                    retry_after: None,
                    timestamp: None,
                }),
                first_reported_at: self.first,
                last_reported_at: self.last,
            }
        }
    }

    fn run(
        kind: ResourceKind,
        rows: &[Row],
        now: OffsetDateTime,
        previous: Option<&Status>,
    ) -> Aggregate {
        let controllers: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| r.build(i).summary())
            .collect();
        aggregate(&AggregationInput {
            kind,
            generation: 1,
            controllers: &controllers,
            previous,
            now,
            grace: DEFAULT_GRACE,
            progress_window: PROGRESS_WINDOW,
        })
    }

    /// Checks phase, reason, message and both conditions (status, reason, message).
    fn check(rows: &[Row], now: OffsetDateTime, expected: [&str; 7], conditions_true: bool) {
        for kind in [ResourceKind::Cluster, ResourceKind::NodePool] {
            let status = run(kind, rows, now, None).status;
            let ready = status.condition("Ready").unwrap();
            let available = status.condition("Available").unwrap();
            let message = expected[2].replace("{Kind}", kind.display_name());
            assert_eq!(
                [
                    status.phase.as_str(),
                    status.reason.as_str(),
                    message.as_str(),
                    ready.reason.as_str(),
                    ready.message.as_str(),
                    available.reason.as_str(),
                    available.message.as_str()
                ],
                [
                    expected[0],
                    expected[1],
                    message.as_str(),
                    expected[3],
                    expected[4],
                    expected[5],
                    expected[6]
                ],
            );
            let want = if conditions_true {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            assert_eq!((ready.status, available.status), (want, want));
            assert_eq!(status.observed_generation, 1);
            assert_eq!(status.last_update_time, now);
            assert_eq!(
                status
                    .conditions
                    .iter()
                    .map(|c| c.condition_type.as_str())
                    .collect::<Vec<_>>(),
                ["Ready", "Available"]
            );
        }
    }

    #[test]
    fn row_no_controllers() {
        check(
            &[],
            T0,
            [
                "Pending",
                "NoControllers",
                "Waiting for controllers to report status",
                "ControllersNotReady",
                "No controllers have reported status yet",
                "ControllersNotAvailable",
                "No controllers are available yet",
            ],
            false,
        );
        assert_eq!(run(ResourceKind::Cluster, &[], T0, None).recheck_at, None);
    }

    #[test]
    fn row_all_ready() {
        check(
            &[row(true, false), row(true, false)],
            T0,
            [
                "Ready",
                "AllControllersReady",
                "{Kind} is ready with 2 controllers operational",
                "AllControllersReady",
                "All 2 controllers are ready",
                "AllControllersAvailable",
                "All 2 controllers are available",
            ],
            true,
        );
    }

    #[test]
    fn row_some_ready_with_errors() {
        check(
            &[row(true, false), row(false, true), row(false, false)],
            T0,
            [
                "Progressing",
                "ControllersWithErrors",
                "{Kind} is progressing but some controllers have errors (1/3 ready)",
                "PartiallyReady",
                "1 of 3 controllers are ready",
                "PartiallyAvailableWithErrors",
                "Some controllers have errors (1 available of 3)",
            ],
            false,
        );
        // All ready but one with an error is not Ready.
        check(
            &[row(true, true), row(true, false)],
            T0,
            [
                "Progressing",
                "ControllersWithErrors",
                "{Kind} is progressing but some controllers have errors (2/2 ready)",
                "PartiallyReady",
                "2 of 2 controllers are ready",
                "PartiallyAvailableWithErrors",
                "Some controllers have errors (2 available of 2)",
            ],
            false,
        );
    }

    #[test]
    fn row_some_ready_no_errors() {
        check(
            &[row(true, false), row(false, false)],
            T0,
            [
                "Progressing",
                "PartialProgress",
                "{Kind} is progressing (1/2 controllers ready)",
                "PartiallyReady",
                "1 of 2 controllers are ready",
                "PartiallyAvailable",
                "Controllers are still becoming available (1 available of 2)",
            ],
            false,
        );
    }

    const PROVISIONING: [&str; 7] = [
        "Progressing",
        "ControllersProvisioning",
        "",
        "ControllersNotYetReady",
        "Controllers are still working (2 of 2 controllers)",
        "ControllersBecomingAvailable",
        "Controllers are becoming available (2 working)",
    ];

    #[test]
    fn row_provisioning_with_minutes_rounded_down() {
        let rows = [row(false, false), row(false, false)];
        let mut expected = PROVISIONING;
        for (now, message) in [
            (
                T0,
                "Controllers are provisioning resources (30 minutes remaining) (2 controllers working)",
            ),
            (
                T0 + Duration::seconds(1),
                "Controllers are provisioning resources (29 minutes remaining) (2 controllers working)",
            ),
            (
                T0 + Duration::seconds(29 * 60 - 1),
                "Controllers are provisioning resources (1 minutes remaining) (2 controllers working)",
            ),
            (
                T0 + Duration::seconds(29 * 60 + 1),
                "Controllers are provisioning resources (2 controllers working)",
            ),
            (
                T0 + Duration::seconds(30 * 60) - Duration::nanoseconds(1),
                "Controllers are provisioning resources (2 controllers working)",
            ),
        ] {
            expected[2] = message;
            check(&rows, now, expected, false);
        }
    }

    #[test]
    fn provisioning_rechecks_when_the_minutes_or_the_row_change() {
        let rows = [row(false, false)];
        let at = |now| run(ResourceKind::Cluster, &rows, now, None).recheck_at;
        assert_eq!(
            at(T0 + Duration::seconds(90)),
            Some(T0 + Duration::minutes(2))
        );
        assert_eq!(
            at(T0 + Duration::seconds(29 * 60 + 30)),
            Some(T0 + DEFAULT_GRACE)
        );
    }

    #[test]
    fn grace_clock_starts_at_the_earliest_first_report_of_the_current_generation() {
        // One controller started 20 min ago, another just now: 10 minutes remain.
        let rows = [
            row(false, false).at(T0 - Duration::minutes(20), T0),
            row(false, false).at(T0, T0),
            // A row for an older generation started long ago and is ignored.
            row(false, false)
                .generation(0)
                .at(T0 - Duration::hours(5), T0 - Duration::hours(5)),
        ];
        let status = run(ResourceKind::Cluster, &rows, T0, None).status;
        assert_eq!(
            status.message,
            "Controllers are provisioning resources (10 minutes remaining) (2 controllers working)"
        );
    }

    #[test]
    fn exactly_at_grace_is_past_grace() {
        let first = T0 - DEFAULT_GRACE;
        // Reported 4 minutes ago: showing progress.
        let rows = [row(false, false).at(first, T0 - Duration::minutes(4))];
        let result = run(ResourceKind::NodePool, &rows, T0, None);
        assert_eq!(result.status.reason, "ControllersShowingProgress");
        assert_eq!(result.recheck_at, Some(T0 + Duration::minutes(1)));
        // One nanosecond earlier it is still provisioning.
        let result = run(
            ResourceKind::NodePool,
            &rows,
            T0 - Duration::nanoseconds(1),
            None,
        );
        assert_eq!(result.status.reason, "ControllersProvisioning");
    }

    #[test]
    fn row_showing_progress_by_recent_report_or_error() {
        let first = T0 - Duration::minutes(40);
        let expected = [
            "Progressing",
            "ControllersShowingProgress",
            "Controllers are actively working but not yet ready (2 controllers showing progress)",
            PROVISIONING[3],
            PROVISIONING[4],
            PROVISIONING[5],
            PROVISIONING[6],
        ];
        let recent = [
            row(false, false).at(first, T0 - Duration::minutes(1)),
            row(false, false).at(first, first),
        ];
        check(&recent, T0, expected, false);
        // Silent for an hour, but one has an error: still showing progress, no timer.
        let erroring = [
            row(false, true).at(first, first),
            row(false, false).at(first, first),
        ];
        check(&erroring, T0, expected, false);
        assert_eq!(
            run(ResourceKind::Cluster, &erroring, T0, None).recheck_at,
            None
        );
    }

    #[test]
    fn row_timeout() {
        let first = T0 - Duration::seconds(45 * 60 + 59);
        // The last report is exactly 5 minutes old: no longer "in the last 5 min".
        let rows = [
            row(false, false).at(first, T0 - PROGRESS_WINDOW),
            row(false, false).at(first, first),
        ];
        check(
            &rows,
            T0,
            [
                "Failed",
                "ControllerTimeout",
                "Controllers failed to become ready after 45 minutes with no progress (2 controllers timed out)",
                "ControllersTimedOut",
                "Controllers timed out after 45 minutes",
                "ControllersTimedOut",
                "No controllers became available after 45 minutes",
            ],
            false,
        );
        assert_eq!(run(ResourceKind::Cluster, &rows, T0, None).recheck_at, None);
    }

    #[test]
    fn stale_generation_rows_are_ignored() {
        // Ready at generation 1, but the resource is at generation 2: no current rows.
        let controllers = [row(true, false).build(0).summary()];
        let result = aggregate(&AggregationInput {
            kind: ResourceKind::Cluster,
            generation: 2,
            controllers: &controllers,
            previous: None,
            now: T0,
            grace: DEFAULT_GRACE,
            progress_window: PROGRESS_WINDOW,
        });
        assert_eq!(result.status.phase, Phase::Pending);
        assert_eq!(result.status.reason, "NoControllers");
        assert_eq!(result.status.observed_generation, 2);
    }

    #[test]
    fn transition_times_are_kept_while_condition_status_is_unchanged() {
        let earlier = T0 - Duration::hours(1);
        let pending = run(ResourceKind::Cluster, &[], earlier, None).status;
        assert!(
            pending
                .conditions
                .iter()
                .all(|c| c.last_transition_time == earlier)
        );

        // Pending -> Progressing: both conditions stay False, so their times are kept.
        let progressing = run(
            ResourceKind::Cluster,
            &[row(false, false)],
            T0,
            Some(&pending),
        )
        .status;
        assert_eq!(progressing.phase, Phase::Progressing);
        assert!(
            progressing
                .conditions
                .iter()
                .all(|c| c.last_transition_time == earlier)
        );
        assert_eq!(progressing.last_update_time, T0);

        // Progressing -> Ready: both flip to True, so their times move.
        let later = T0 + Duration::minutes(3);
        let ready = run(
            ResourceKind::Cluster,
            &[row(true, false)],
            later,
            Some(&progressing),
        )
        .status;
        assert!(
            ready
                .conditions
                .iter()
                .all(|c| c.last_transition_time == later)
        );
    }

    #[test]
    fn initial_status_is_pending() {
        let status = initial_status(ResourceKind::NodePool, 3, T0);
        assert_eq!(
            (status.phase, status.observed_generation),
            (Phase::Pending, 3)
        );
    }
}
