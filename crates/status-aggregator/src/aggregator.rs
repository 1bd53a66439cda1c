//! Reports, reads and the sweep: storage calls composed into transactions around the pure
//! domain functions (`validate_report`, `aggregate`).

use std::sync::Arc;

use cls_domain::aggregate::{Aggregate, AggregationInput, aggregate};
use cls_domain::error::{ErrorCode, FieldError};
use cls_domain::identity::Caller;
use cls_domain::parse::{ParseError, parse_json};
use cls_domain::resource::ResourceKind;
use cls_domain::status::{
    ControllerReport, ControllerStatus, ControllerSummary, Phase, Status, ValidReport,
    validate_report,
};
use cls_storage::{PgPool, StorageError, status};
use diesel_async::AsyncConnection as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Called after a report or the sweep changed a resource's aggregated phase (after commit).
pub trait PhaseChangeHook: Send + Sync + std::fmt::Debug {
    fn phase_changed(&self, kind: ResourceKind, id: Uuid, cluster_id: Uuid, phase: Phase);
}

/// The default hook: a log line.
#[derive(Debug)]
pub struct LogPhaseChanges;

impl PhaseChangeHook for LogPhaseChanges {
    fn phase_changed(&self, kind: ResourceKind, id: Uuid, cluster_id: Uuid, phase: Phase) {
        tracing::info!(kind = kind.as_str(), %id, %cluster_id, phase = phase.as_str(), "aggregated phase changed");
    }
}

/// The deployed hook: a log line and a `status_change` reconcile trigger to the
/// reconcile-scheduler (fire-and-forget; the periodic reconcile covers a lost trigger).
#[derive(Debug)]
pub struct ReconcileOnPhaseChange(pub cls_rpc::client::ReconcileTriggers);

impl PhaseChangeHook for ReconcileOnPhaseChange {
    fn phase_changed(&self, kind: ResourceKind, id: Uuid, cluster_id: Uuid, phase: Phase) {
        LogPhaseChanges.phase_changed(kind, id, cluster_id, phase);
        self.0.fire(
            kind,
            id,
            cls_domain::reconcile::ReconcileReason::StatusChange,
        );
    }
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub cluster_id: Uuid,
    pub controller_name: String,
    pub observed_generation: i64,
}

/// Why a report was not stored (an API error with a stable code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: ErrorCode,
    pub message: String,
    pub errors: Vec<FieldError>,
}

impl Rejected {
    fn new(code: ErrorCode, message: impl Into<String>) -> Rejected {
        Rejected {
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

/// A report either stored, rejected, or not processed because the database failed.
#[derive(Debug)]
pub enum ReportError {
    Rejected(Rejected),
    Storage(StorageError),
}

impl From<StorageError> for ReportError {
    fn from(e: StorageError) -> ReportError {
        ReportError::Storage(e)
    }
}

impl From<diesel::result::Error> for ReportError {
    fn from(e: diesel::result::Error) -> ReportError {
        ReportError::Storage(StorageError::Database(e))
    }
}

/// A status as read: the aggregate and every controller row.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub cluster_id: Uuid,
    pub status: Status,
    pub controllers: Vec<ControllerStatus>,
}

#[derive(Debug, Clone)]
pub struct Aggregator {
    pub(crate) pool: PgPool,
    pub(crate) grace: time::Duration,
    pub(crate) progress_window: time::Duration,
    pub(crate) metrics: Metrics,
    pub(crate) hook: Arc<dyn PhaseChangeHook>,
}

fn not_found(kind: ResourceKind) -> Rejected {
    match kind {
        ResourceKind::Cluster => Rejected::new(ErrorCode::ClusterNotFound, "cluster not found"),
        ResourceKind::NodePool => Rejected::new(ErrorCode::NodePoolNotFound, "nodepool not found"),
    }
}

impl Aggregator {
    pub fn new(
        pool: PgPool,
        grace: std::time::Duration,
        progress_window: std::time::Duration,
        metrics: Metrics,
        hook: Arc<dyn PhaseChangeHook>,
    ) -> Aggregator {
        Aggregator {
            pool,
            grace: time::Duration::try_from(grace).unwrap_or(cls_domain::aggregate::DEFAULT_GRACE),
            progress_window: time::Duration::try_from(progress_window)
                .unwrap_or(cls_domain::aggregate::PROGRESS_WINDOW),
            metrics,
            hook,
        }
    }

    /// Stores a controller's report and recomputes the aggregate, in one transaction holding
    /// the resource's row lock (SPEC §4.1, §4.3).
    pub async fn report(
        &self,
        kind: ResourceKind,
        id: Uuid,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Accepted, ReportError> {
        let started = std::time::Instant::now();
        let result = self.report_inner(kind, id, body, now).await;
        let label = match &result {
            Ok(_) => "accepted",
            Err(ReportError::Rejected(r)) => match r.code {
                ErrorCode::StaleStatusReport => "stale",
                ErrorCode::ClusterNotFound | ErrorCode::NodePoolNotFound => "not_found",
                _ => "invalid",
            },
            Err(ReportError::Storage(_)) => "unavailable",
        };
        self.metrics.reports.with_label_values(&[label]).inc();
        if result.is_ok() {
            self.metrics
                .aggregation
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn report_inner(
        &self,
        kind: ResourceKind,
        id: Uuid,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Accepted, ReportError> {
        let report: ControllerReport = parse_json(body, &[]).map_err(|e| {
            ReportError::Rejected(match e {
                ParseError::Syntax(m) => Rejected::new(ErrorCode::InvalidJson, m),
                ParseError::Shape(errors) => Rejected {
                    code: ErrorCode::ValidationFailed,
                    message: "the status report is invalid".into(),
                    errors,
                },
            })
        })?;
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| ReportError::Storage(StorageError::Connect(e.to_string())))?;
        let windows = (self.grace, self.progress_window);
        let (accepted, change) = conn
            .transaction::<_, ReportError, _>(async |conn| {
                let reporter = report.controller_name.as_deref().map(str::trim);
                let Some((target, rows)) = status::lock_with_rows(conn, kind, id, reporter).await?
                else {
                    return Err(ReportError::Rejected(not_found(kind)));
                };
                let decision = decide(&report, reporter, &target, rows, now, windows)?;
                decision.save(conn, &target, now).await?;
                Ok(decision.outcome(&target))
            })
            .await?;
        if let Some(phase) = change {
            self.phase_changed(kind, id, accepted.cluster_id, phase);
        }
        Ok(accepted)
    }

    fn phase_changed(&self, kind: ResourceKind, id: Uuid, cluster_id: Uuid, phase: Phase) {
        self.metrics
            .transitions
            .with_label_values(&[phase.as_str()])
            .inc();
        self.hook.phase_changed(kind, id, cluster_id, phase);
    }

    /// The status of a resource `caller` may see (`None` otherwise). Never writes.
    pub async fn get(
        &self,
        kind: ResourceKind,
        id: Uuid,
        caller: &Caller,
    ) -> Result<Option<StatusView>, StorageError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| StorageError::Connect(e.to_string()))?;
        let found = match kind {
            ResourceKind::Cluster => cls_storage::clusters::get(&mut conn, caller, id)
                .await?
                .map(|c| c.into_domain().map(|c| (c.id, c.status)))
                .transpose()?,
            ResourceKind::NodePool => cls_storage::nodepools::get(&mut conn, caller, id)
                .await?
                .map(|n| n.into_domain().map(|n| (n.cluster_id, n.status)))
                .transpose()?,
        };
        let Some((cluster_id, status)) = found else {
            return Ok(None);
        };
        let controllers = status::controller_rows(&mut conn, kind, id).await?;
        Ok(Some(StatusView {
            cluster_id,
            status,
            controllers,
        }))
    }

    /// One pass of the sweep: re-evaluates up to `batch` resources per kind whose status can
    /// change with time alone. Safe with several replicas (`SKIP LOCKED`). Returns how many.
    pub async fn sweep_once(&self, now: OffsetDateTime, batch: i64) -> Result<usize, StorageError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| StorageError::Connect(e.to_string()))?;
        let windows = (self.grace, self.progress_window);
        let mut total = 0;
        for kind in [ResourceKind::Cluster, ResourceKind::NodePool] {
            let changes = conn
                .transaction::<_, StorageError, _>(async |conn| {
                    let mut changes = Vec::new();
                    for id in status::due_for_recheck(conn, kind, now, batch).await? {
                        let Some((target, rows)) =
                            status::lock_with_rows(conn, kind, id, None).await?
                        else {
                            continue;
                        };
                        let rows: Vec<_> = rows.iter().map(|r| r.summary).collect();
                        let change = recompute(conn, &target, &rows, now, windows).await?;
                        changes.push((id, target.cluster_id, change));
                    }
                    Ok(changes)
                })
                .await?;
            total += changes.len();
            for (id, cluster_id, change) in changes {
                if let Some(phase) = change {
                    self.phase_changed(kind, id, cluster_id, phase);
                }
            }
        }
        self.metrics.swept.inc_by(total as u64);
        Ok(total)
    }
}

/// What an accepted report stores, decided from the resource and its controller rows.
struct Decision {
    valid: ValidReport,
    first_reported_at: OffsetDateTime,
    result: Aggregate,
}

/// Checks `report` against the resource and its rows (stale, invalid) and recomputes the
/// aggregate with the report's row in place of the controller's previous one. `reporter` is
/// the report's controller name as the rows were read for (trimmed).
fn decide(
    report: &ControllerReport,
    reporter: Option<&str>,
    target: &status::StatusTarget,
    rows: Vec<status::SummaryRow>,
    now: OffsetDateTime,
    windows: (time::Duration, time::Duration),
) -> Result<Decision, ReportError> {
    let previous = rows
        .iter()
        .position(|r| Some(r.controller_name.as_str()) == reporter);
    if let (Some(i), Some(reported)) = (previous, report.observed_generation)
        && reported < rows[i].summary.observed_generation
    {
        return Err(ReportError::Rejected(Rejected::new(
            ErrorCode::StaleStatusReport,
            format!(
                "this controller already reported on generation {}; a report on generation {reported} is stale",
                rows[i].summary.observed_generation
            ),
        )));
    }
    let valid = validate_report(
        report.clone(),
        target.generation,
        previous.and_then(|i| rows[i].conditions.as_deref()),
        now,
    )
    .map_err(|errors| {
        ReportError::Rejected(Rejected {
            code: ErrorCode::ValidationFailed,
            message: "the status report is invalid".into(),
            errors,
        })
    })?;
    let first_reported_at = previous
        .map(|i| &rows[i].summary)
        .filter(|r| r.observed_generation == valid.observed_generation)
        .map_or(now, |r| r.first_reported_at);
    let mut summaries: Vec<ControllerSummary> = rows.iter().map(|r| r.summary).collect();
    let row = valid.summary(
        cls_storage::truncate_to_micros(first_reported_at),
        cls_storage::truncate_to_micros(now),
    );
    match previous {
        Some(i) => summaries[i] = row,
        None => summaries.push(row),
    }
    let result = aggregate_now(target, &summaries, now, windows);
    Ok(Decision {
        valid,
        first_reported_at,
        result,
    })
}

impl Decision {
    /// Stores the report and the aggregate (in the transaction holding the resource's lock).
    async fn save(
        &self,
        conn: &mut cls_storage::AsyncPgConnection,
        target: &status::StatusTarget,
        now: OffsetDateTime,
    ) -> Result<(), StorageError> {
        status::save_report(
            conn,
            target.kind,
            target.id,
            &self.valid,
            self.first_reported_at,
            now,
            &self.result.status,
            self.result.recheck_at,
        )
        .await
    }

    /// The caller's answer and the phase change, once stored.
    fn outcome(self, target: &status::StatusTarget) -> (Accepted, Option<Phase>) {
        let change = phase_change(target, &self.result);
        (
            Accepted {
                cluster_id: target.cluster_id,
                controller_name: self.valid.controller_name,
                observed_generation: self.valid.observed_generation,
            },
            change,
        )
    }
}

/// The aggregate of `rows` for `target` at `now` (the pure domain function).
fn aggregate_now(
    target: &status::StatusTarget,
    rows: &[ControllerSummary],
    now: OffsetDateTime,
    (grace, progress_window): (time::Duration, time::Duration),
) -> Aggregate {
    aggregate(&AggregationInput {
        kind: target.kind,
        generation: target.generation,
        controllers: rows,
        previous: Some(&target.status),
        now,
        grace,
        progress_window,
    })
}

/// The new phase, if the aggregate changed it.
fn phase_change(target: &status::StatusTarget, result: &Aggregate) -> Option<Phase> {
    (result.status.phase != target.status.phase).then_some(result.status.phase)
}

/// Recomputes and stores the aggregate; returns the new phase if it changed.
async fn recompute(
    conn: &mut cls_storage::AsyncPgConnection,
    target: &status::StatusTarget,
    rows: &[ControllerSummary],
    now: OffsetDateTime,
    windows: (time::Duration, time::Duration),
) -> Result<Option<Phase>, StorageError> {
    let result = aggregate_now(target, rows, now, windows);
    status::store(
        conn,
        target.kind,
        target.id,
        &result.status,
        result.recheck_at,
    )
    .await?;
    Ok(phase_change(target, &result))
}
