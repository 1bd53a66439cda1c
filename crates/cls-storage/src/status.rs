//! Controller status rows and the stored aggregate (SPEC §4), for clusters and nodepools alike.
//!
//! A report is stored with the aggregate recomputed from the rows it was read with, in one
//! transaction: [`lock_with_rows`] locks the resource row and reads what the aggregate needs of
//! its controller rows, then [`save_report`] writes the controller row and the aggregate in one
//! statement. Concurrent reports on a resource serialise on its row lock, so none leaves a
//! stale aggregate. The sweep finds its work with [`due_for_recheck`] (`SKIP LOCKED`), then
//! does the same with [`store`].

use cls_domain::resource::ResourceKind;
use cls_domain::status::{
    ControllerCondition, ControllerStatus, ControllerSummary, READY_CONDITION, Status, ValidReport,
};
use diesel::OptionalExtension as _;
use diesel::sql_types::{BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::prepared::sql;
use crate::rows::{Count, JsonText, JsonbText, encode};
use crate::truncate_to_micros;

/// The resource and controller-row tables of a kind (constants: never caller input).
fn tables(kind: ResourceKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ResourceKind::Cluster => ("clusters", "cluster_controller_status", "cluster_id"),
        ResourceKind::NodePool => ("nodepools", "nodepool_controller_status", "nodepool_id"),
    }
}

/// The resource table's column holding the cluster id.
fn cluster_column(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Cluster => "id",
        ResourceKind::NodePool => "cluster_id",
    }
}

/// The resource a report is about, locked for the rest of the transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub kind: ResourceKind,
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub generation: i64,
    pub status: Status,
    pub deleted: bool,
}

#[derive(diesel::QueryableByName)]
struct TargetRow {
    #[diesel(sql_type = SqlUuid)]
    cluster_id: Uuid,
    #[diesel(sql_type = BigInt)]
    generation: i64,
    #[diesel(sql_type = Jsonb)]
    status: JsonText,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
}

/// A controller row as a report's transaction reads it: what the aggregate needs of it, and
/// for the reporting controller's own row its conditions (whose transition times a report
/// keeps while their status is unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub controller_name: String,
    pub summary: ControllerSummary,
    /// The row's conditions, if it is the reporter's ([`lock_with_rows`]).
    pub conditions: Option<Vec<ControllerCondition>>,
}

/// Locks the resource row and reads its controller rows' summaries: `lock_target` then
/// `summary_rows`, pipelined (both statements sent at once, one round trip). Postgres runs
/// them in the order sent, and in `READ COMMITTED` the second statement's snapshot is taken
/// after the first has the lock, so the rows include every report committed before it. Only
/// `reporter`'s row (if any) comes with its conditions. Call inside a transaction.
pub async fn lock_with_rows(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    reporter: Option<&str>,
) -> Result<Option<(StatusTarget, Vec<SummaryRow>)>, StorageError> {
    let conn: &AsyncPgConnection = conn;
    // `try_join` polls the lock first, so its statement is sent first.
    let (target, rows) = futures_util::future::try_join(
        lock_target(conn, kind, id),
        summary_rows(conn, kind, id, reporter),
    )
    .await?;
    Ok(target.map(|target| (target, rows)))
}

#[derive(diesel::QueryableByName)]
struct SummaryColumns {
    #[diesel(sql_type = Text)]
    controller_name: String,
    #[diesel(sql_type = BigInt)]
    observed_generation: i64,
    #[diesel(sql_type = Bool)]
    ready: bool,
    #[diesel(sql_type = Bool)]
    has_error: bool,
    #[diesel(sql_type = Timestamptz)]
    first_reported_at: OffsetDateTime,
    #[diesel(sql_type = Timestamptz)]
    last_reported_at: OffsetDateTime,
    #[diesel(sql_type = Nullable<Jsonb>)]
    conditions: Option<JsonText>,
}

/// `[{"type": …, "status": …}]` of [`READY_CONDITION`]: a row whose conditions contain it
/// (`@>`, which matches an array holding an object with those two members) is ready, as
/// [`ControllerStatus::is_ready`] decides.
static READY_CONDITIONS: std::sync::LazyLock<JsonbText> = std::sync::LazyLock::new(|| {
    let (condition_type, status) = READY_CONDITION;
    encode(&serde_json::json!([{ "type": condition_type, "status": status }]))
});

/// Every controller row of a resource as the aggregate reads it. The rows' documents are
/// neither sent nor decoded (with 16 controllers, printing and decoding their `conditions`,
/// `metadata` and `last_error` was most of a report's cost): readiness is tested by Postgres
/// against [`READY_CONDITIONS`], and only `reporter`'s conditions are read.
async fn summary_rows(
    mut conn: &AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    reporter: Option<&str>,
) -> Result<Vec<SummaryRow>, StorageError> {
    let (_, rows_table, key) = tables(kind);
    let rows: Vec<SummaryColumns> = sql(format!(
        "SELECT controller_name, observed_generation, conditions @> $2 AS ready,
                last_error IS NOT NULL AS has_error, first_reported_at, last_reported_at,
                CASE WHEN controller_name = $3 THEN conditions END AS conditions
           FROM {rows_table} WHERE {key} = $1 ORDER BY controller_name"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Jsonb, _>(&*READY_CONDITIONS)
    .bind::<Nullable<Text>, _>(reporter)
    .load(&mut conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(SummaryRow {
                summary: ControllerSummary {
                    observed_generation: row.observed_generation,
                    ready: row.ready,
                    has_error: row.has_error,
                    first_reported_at: row.first_reported_at,
                    last_reported_at: row.last_reported_at,
                },
                conditions: row
                    .conditions
                    .map(|c| c.decode("controller conditions"))
                    .transpose()?,
                controller_name: row.controller_name,
            })
        })
        .collect()
}

/// Locks the resource row (`FOR UPDATE`) and returns it, deleted or not (controllers may
/// still report on a deleted resource). Call inside a transaction.
async fn lock_target(
    mut conn: &AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
) -> Result<Option<StatusTarget>, StorageError> {
    let (table, _, _) = tables(kind);
    let cluster_column = cluster_column(kind);
    let row: Option<TargetRow> = sql(format!(
        "SELECT {cluster_column} AS cluster_id, generation, status, deleted_at IS NOT NULL AS deleted
           FROM {table} WHERE id = $1 FOR UPDATE"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(&mut conn)
    .await
    .optional()?;
    row.map(|row| {
        Ok(StatusTarget {
            kind,
            id,
            cluster_id: row.cluster_id,
            generation: row.generation,
            status: row.status.decode("status")?,
            deleted: row.deleted,
        })
    })
    .transpose()
}

#[derive(diesel::QueryableByName)]
struct ControllerRow {
    #[diesel(sql_type = Text)]
    controller_name: String,
    #[diesel(sql_type = BigInt)]
    observed_generation: i64,
    #[diesel(sql_type = Jsonb)]
    conditions: JsonText,
    #[diesel(sql_type = Jsonb)]
    metadata: JsonText,
    #[diesel(sql_type = Nullable<Jsonb>)]
    last_error: Option<JsonText>,
    #[diesel(sql_type = Timestamptz)]
    first_reported_at: OffsetDateTime,
    #[diesel(sql_type = Timestamptz)]
    last_reported_at: OffsetDateTime,
}

/// Every controller row of a resource, by `controller_name`.
pub async fn controller_rows(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
) -> Result<Vec<ControllerStatus>, StorageError> {
    let (_, rows_table, key) = tables(kind);
    let rows: Vec<ControllerRow> = sql(format!(
        "SELECT controller_name, observed_generation, conditions, metadata, last_error,
                first_reported_at, last_reported_at
           FROM {rows_table} WHERE {key} = $1 ORDER BY controller_name"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    rows.into_iter().map(controller_status).collect()
}

fn controller_status(row: ControllerRow) -> Result<ControllerStatus, StorageError> {
    Ok(ControllerStatus {
        controller_name: row.controller_name,
        observed_generation: row.observed_generation,
        conditions: row.conditions.decode("controller conditions")?,
        metadata: row.metadata.decode("controller metadata")?,
        last_error: row
            .last_error
            .map(|e| e.decode("controller last_error"))
            .transpose()?,
        first_reported_at: row.first_reported_at,
        last_reported_at: row.last_reported_at,
    })
}

/// Stores an accepted report: replaces this controller's row with `report` and stores the
/// resource's recomputed aggregate (and when it must be rechecked at the latest), in one
/// statement. `first_reported_at` is when the controller first reported on
/// `report.observed_generation` (kept across reports on one generation). Call in the
/// transaction that locked the resource ([`lock_with_rows`]).
#[allow(clippy::too_many_arguments)]
pub async fn save_report(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    report: &ValidReport,
    first_reported_at: OffsetDateTime,
    now: OffsetDateTime,
    status: &Status,
    recheck_at: Option<OffsetDateTime>,
) -> Result<(), StorageError> {
    let (table, rows_table, key) = tables(kind);
    // The controller row is written from the updated resource row, so a missing resource
    // writes nothing (rather than failing on the foreign key).
    let saved: Count = sql(format!(
        "WITH target AS (
             UPDATE {table} SET status = $1, status_recheck_at = $2 WHERE id = $3 RETURNING id
         ), controller AS (
             INSERT INTO {rows_table} ({key}, controller_name, observed_generation, conditions,
                                       metadata, last_error, first_reported_at, last_reported_at)
             SELECT id, $4, $5, $6, $7, $8, $9, $10 FROM target
             ON CONFLICT ({key}, controller_name) DO UPDATE SET
                 observed_generation = EXCLUDED.observed_generation,
                 conditions = EXCLUDED.conditions,
                 metadata = EXCLUDED.metadata,
                 last_error = EXCLUDED.last_error,
                 first_reported_at = EXCLUDED.first_reported_at,
                 last_reported_at = EXCLUDED.last_reported_at
         )
         SELECT count(*) AS n FROM target"
    ))
    .bind::<Jsonb, _>(encode(status))
    .bind::<Nullable<Timestamptz>, _>(recheck_at.map(truncate_to_micros))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(&report.controller_name)
    .bind::<BigInt, _>(report.observed_generation)
    .bind::<Jsonb, _>(encode(&report.conditions))
    .bind::<Jsonb, _>(encode(&report.metadata))
    .bind::<Nullable<Jsonb>, _>(report.last_error.as_ref().map(encode))
    .bind::<Timestamptz, _>(truncate_to_micros(first_reported_at))
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .get_result(conn)
    .await?;
    if saved.n == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// Stores a recomputed aggregate and when it must be rechecked at the latest, without
/// touching `resource_version` (status is not desired state).
pub async fn store(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    status: &Status,
    recheck_at: Option<OffsetDateTime>,
) -> Result<(), StorageError> {
    let (table, _, _) = tables(kind);
    let updated = sql(format!(
        "UPDATE {table} SET status = $2, status_recheck_at = $3 WHERE id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Jsonb, _>(encode(status))
    .bind::<Nullable<Timestamptz>, _>(recheck_at.map(truncate_to_micros))
    .execute(conn)
    .await?;
    if updated == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Live resources whose status may have changed with time alone (`status_recheck_at` due),
/// oldest first, locked and skipping rows another replica holds. Call inside a transaction.
pub async fn due_for_recheck(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<Uuid>, StorageError> {
    let (table, _, _) = tables(kind);
    let rows: Vec<IdRow> = sql(format!(
        "SELECT id FROM {table}
          WHERE status_recheck_at IS NOT NULL AND status_recheck_at <= $1 AND deleted_at IS NULL
          ORDER BY status_recheck_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}
