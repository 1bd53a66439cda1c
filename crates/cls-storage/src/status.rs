//! Controller status rows and the stored aggregate (SPEC §4), for clusters and nodepools alike.
//!
//! The status-aggregator runs a report as one transaction: [`lock_target`] (row lock on the
//! resource), [`controller_rows`], [`upsert_controller`], then [`store`] with the aggregate
//! recomputed from the rows, so concurrent reports serialise on the resource and never leave
//! a stale aggregate. The sweep uses [`due_for_recheck`] (`SKIP LOCKED`) the same way.

use cls_domain::resource::ResourceKind;
use cls_domain::status::{ControllerStatus, Status, ValidReport};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::rows::{decode, encode};
use crate::truncate_to_micros;

/// The resource and controller-row tables of a kind (constants: never caller input).
fn tables(kind: ResourceKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ResourceKind::Cluster => ("clusters", "cluster_controller_status", "cluster_id"),
        ResourceKind::NodePool => ("nodepools", "nodepool_controller_status", "nodepool_id"),
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
    status: Value,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
}

/// Locks the resource row (`FOR UPDATE`) and returns it, deleted or not (controllers may
/// still report on a deleted resource). Call inside a transaction.
pub async fn lock_target(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
) -> Result<Option<StatusTarget>, StorageError> {
    let (table, _, _) = tables(kind);
    let cluster_column = match kind {
        ResourceKind::Cluster => "id",
        ResourceKind::NodePool => "cluster_id",
    };
    let row: Option<TargetRow> = diesel::sql_query(format!(
        "SELECT {cluster_column} AS cluster_id, generation, status, deleted_at IS NOT NULL AS deleted
           FROM {table} WHERE id = $1 FOR UPDATE"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .map(Some)
    .or_else(|e| match e {
        diesel::result::Error::NotFound => Ok(None),
        e => Err(e),
    })?;
    row.map(|row| {
        Ok(StatusTarget {
            kind,
            id,
            cluster_id: row.cluster_id,
            generation: row.generation,
            status: decode("status", row.status)?,
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
    conditions: Value,
    #[diesel(sql_type = Jsonb)]
    metadata: Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    last_error: Option<Value>,
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
    let rows: Vec<ControllerRow> = diesel::sql_query(format!(
        "SELECT controller_name, observed_generation, conditions, metadata, last_error,
                first_reported_at, last_reported_at
           FROM {rows_table} WHERE {key} = $1 ORDER BY controller_name"
    ))
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ControllerStatus {
                controller_name: row.controller_name,
                observed_generation: row.observed_generation,
                conditions: decode("controller conditions", row.conditions)?,
                metadata: decode("controller metadata", row.metadata)?,
                last_error: row
                    .last_error
                    .map(|e| decode("controller last_error", e))
                    .transpose()?,
                first_reported_at: row.first_reported_at,
                last_reported_at: row.last_reported_at,
            })
        })
        .collect()
}

/// Replaces this controller's row with `report`. `first_reported_at` is when the controller
/// first reported on `report.observed_generation` (kept across reports on one generation).
pub async fn upsert_controller(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    report: &ValidReport,
    first_reported_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), StorageError> {
    let (_, rows_table, key) = tables(kind);
    diesel::sql_query(format!(
        "INSERT INTO {rows_table} ({key}, controller_name, observed_generation, conditions,
                                   metadata, last_error, first_reported_at, last_reported_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT ({key}, controller_name) DO UPDATE SET
             observed_generation = EXCLUDED.observed_generation,
             conditions = EXCLUDED.conditions,
             metadata = EXCLUDED.metadata,
             last_error = EXCLUDED.last_error,
             first_reported_at = EXCLUDED.first_reported_at,
             last_reported_at = EXCLUDED.last_reported_at"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(&report.controller_name)
    .bind::<BigInt, _>(report.observed_generation)
    .bind::<Jsonb, _>(encode(&report.conditions))
    .bind::<Jsonb, _>(Value::Object(report.metadata.clone()))
    .bind::<Nullable<Jsonb>, _>(report.last_error.as_ref().map(encode))
    .bind::<Timestamptz, _>(truncate_to_micros(first_reported_at))
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .execute(conn)
    .await?;
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
    let updated = diesel::sql_query(format!(
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
    let rows: Vec<IdRow> = diesel::sql_query(format!(
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
