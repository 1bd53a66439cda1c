//! The reconcile schedule (SPEC §6): one row per live cluster and nodepool with its next due
//! time, claimed by scheduler replicas.
//!
//! A claim ([`claim_due`]) is a lease: it stamps the row with the replica and moves
//! `next_due_at` to the lease's expiry, so rows being worked on are not due and a claim that
//! is never completed (the replica died) makes the row due again when it expires. The due time
//! the claim serves is kept in `claimed_due_at` until the claim completes, so a re-claim after
//! a lost acknowledgement serves the same due item (and emits the same event id).
//! [`complete`] and [`release`] only touch rows still held by the same claim; a reactive
//! [`trigger`] moves the due time even under a claim, and completion then keeps it, so the
//! change a trigger announces is never lost.

use cls_domain::event::ResourceRef;
use cls_domain::reconcile::{ReconcileFacts, ReconcileReason};
use cls_domain::resource::ResourceKind;
use cls_domain::status::Phase;
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::StorageError;
use crate::prepared::sql;
use crate::rows::decode;
use crate::truncate_to_micros;

/// A claimed schedule row with what the policy needs to decide on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    pub resource: ResourceRef,
    /// The due time this claim serves (stable across re-claims of the same item).
    pub due_at: OffsetDateTime,
    /// The facts for the policy; `None` when the resource (or its cluster) is deleted.
    pub facts: Option<ReconcileFacts>,
}

impl DueItem {
    pub fn last_reconciled_at(&self) -> Option<OffsetDateTime> {
        self.facts.and_then(|f| f.last_reconciled_at)
    }
}

/// A claim on a batch of rows: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub replica: String,
    pub until: OffsetDateTime,
}

#[derive(diesel::QueryableByName)]
struct DueRow {
    #[diesel(sql_type = SqlUuid)]
    cluster_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    nodepool_id: Option<Uuid>,
    #[diesel(sql_type = Timestamptz)]
    due_at: OffsetDateTime,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_reconciled_at: Option<OffsetDateTime>,
    #[diesel(sql_type = Nullable<Text>)]
    pending_reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<OffsetDateTime>,
    #[diesel(sql_type = Nullable<BigInt>)]
    generation: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    phase: Option<String>,
    #[diesel(sql_type = Bool)]
    gone: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    min_observed_generation: Option<i64>,
}

/// Claims up to `limit` rows due at `now` (oldest due first), skipping rows another replica
/// is claiming right now, and returns them with their facts. One statement: the rows are
/// committed as claimed when it returns (outside a transaction) or with the caller's
/// transaction.
#[tracing::instrument(
    name = "UPDATE reconcile_schedule",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "reconcile_schedule")
)]
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<DueItem>, StorageError> {
    let rows: Vec<DueRow> = sql("WITH due AS (
             SELECT resource_id FROM reconcile_schedule
              WHERE next_due_at <= $1
              ORDER BY next_due_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE reconcile_schedule s
                SET claimed_by = $3, claim_expires_at = $4, next_due_at = $4,
                    claimed_due_at = COALESCE(s.claimed_due_at, s.next_due_at),
                    -- The claim serves the pending trigger: a trigger from now on opens a
                    -- new debounce window.
                    pending_since = NULL
               FROM due WHERE s.resource_id = due.resource_id
             RETURNING s.cluster_id, s.nodepool_id, s.claimed_due_at, s.last_reconciled_at,
                       s.pending_reason
         )
         SELECT cl.cluster_id, cl.nodepool_id, cl.claimed_due_at AS due_at,
                cl.last_reconciled_at, cl.pending_reason,
                COALESCE(np.created_at, c.created_at) AS created_at,
                COALESCE(np.generation, c.generation) AS generation,
                CASE WHEN cl.nodepool_id IS NULL THEN c.phase ELSE np.phase END AS phase,
                (c.id IS NULL OR c.deleted_at IS NOT NULL
                 OR cl.nodepool_id IS NOT NULL AND (np.id IS NULL OR np.deleted_at IS NOT NULL))
                    AS gone,
                CASE WHEN cl.nodepool_id IS NULL
                     THEN (SELECT min(observed_generation) FROM cluster_controller_status
                            WHERE cluster_id = cl.cluster_id)
                     ELSE (SELECT min(observed_generation) FROM nodepool_controller_status
                            WHERE nodepool_id = cl.nodepool_id)
                END AS min_observed_generation
           FROM claimed cl
           -- No foreign keys: a row whose resource is gone altogether comes back as gone too.
           LEFT JOIN clusters c ON c.id = cl.cluster_id
           LEFT JOIN nodepools np ON np.id = cl.nodepool_id
          ORDER BY cl.claimed_due_at")
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .bind::<BigInt, _>(limit)
    .bind::<Text, _>(&claim.replica)
    .bind::<Timestamptz, _>(truncate_to_micros(claim.until))
    .load(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let resource = match row.nodepool_id {
                None => ResourceRef::Cluster {
                    cluster_id: row.cluster_id,
                },
                Some(nodepool_id) => ResourceRef::NodePool {
                    cluster_id: row.cluster_id,
                    nodepool_id,
                },
            };
            let facts = match (row.gone, row.created_at, row.generation) {
                (false, Some(created_at), Some(generation)) => {
                    let phase: Phase =
                        decode("phase", row.phase.map_or(Value::Null, Value::String))?;
                    Some(ReconcileFacts {
                        created_at,
                        last_reconciled_at: row.last_reconciled_at,
                        generation,
                        phase,
                        min_observed_generation: row.min_observed_generation,
                        pending_reason: row
                            .pending_reason
                            .as_deref()
                            .and_then(ReconcileReason::parse),
                    })
                }
                // Gone: deleted, or (the schedule has no foreign keys) no longer stored.
                _ => None,
            };
            Ok(DueItem {
                resource,
                due_at: row.due_at,
                facts,
            })
        })
        .collect()
}

/// The outcome of one claimed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub resource_id: Uuid,
    pub next_due_at: OffsetDateTime,
}

/// Records that the claimed items were reconciled at `now` (their events are durable) and sets
/// their next due times; clears pending triggers. Rows no longer held by `claim` (it expired
/// and another replica took over, or a trigger arrived meanwhile) are left alone. Returns how
/// many rows were updated.
#[tracing::instrument(
    name = "UPDATE reconcile_schedule",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "reconcile_schedule")
)]
pub async fn complete(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    now: OffsetDateTime,
    done: &[Completion],
) -> Result<usize, StorageError> {
    let ids: Vec<Uuid> = done.iter().map(|c| c.resource_id).collect();
    let next: Vec<OffsetDateTime> = done
        .iter()
        .map(|c| truncate_to_micros(c.next_due_at))
        .collect();
    Ok(sql(
        // `next_due_at = claim_expires_at`: no trigger arrived during the claim (a trigger
        // moves the due time), so the policy's next due time applies and the pending trigger,
        // if any, was served. Otherwise the newer trigger's due time and reason stay.
        "UPDATE reconcile_schedule s
            SET last_reconciled_at = $1,
                next_due_at = CASE WHEN s.next_due_at = s.claim_expires_at
                                   THEN u.next_due_at ELSE s.next_due_at END,
                pending_reason = CASE WHEN s.next_due_at = s.claim_expires_at
                                      THEN NULL ELSE s.pending_reason END,
                pending_since = CASE WHEN s.next_due_at = s.claim_expires_at
                                     THEN NULL ELSE s.pending_since END,
                claimed_by = NULL, claim_expires_at = NULL, claimed_due_at = NULL
           FROM unnest($2::uuid[], $3::timestamptz[]) AS u(id, next_due_at)
          WHERE s.resource_id = u.id AND s.claimed_by = $4 AND s.claim_expires_at = $5",
    )
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(next)
    .bind::<Text, _>(&claim.replica)
    .bind::<Timestamptz, _>(truncate_to_micros(claim.until))
    .execute(conn)
    .await?)
}

/// Gives claimed rows back without reconciling them (the publish failed): they are due again
/// at `retry_at`, still serving the same due item. Rows no longer held by `claim` are left
/// alone.
pub async fn release(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    ids: &[Uuid],
    retry_at: OffsetDateTime,
) -> Result<usize, StorageError> {
    Ok(sql("UPDATE reconcile_schedule
            SET next_due_at = CASE WHEN next_due_at = claim_expires_at
                                   THEN $1 ELSE next_due_at END,
                claimed_by = NULL, claim_expires_at = NULL
          WHERE resource_id = ANY($2) AND claimed_by = $3 AND claim_expires_at = $4")
    .bind::<Timestamptz, _>(truncate_to_micros(retry_at))
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Text, _>(&claim.replica)
    .bind::<Timestamptz, _>(truncate_to_micros(claim.until))
    .execute(conn)
    .await?)
}

/// Drops the schedule rows of resources found deleted while claimed (normally deletion removes
/// them in its own transaction; this covers rows that slipped through).
pub async fn forget(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<usize, StorageError> {
    Ok(
        sql("DELETE FROM reconcile_schedule WHERE resource_id = ANY($1)")
            .bind::<Array<SqlUuid>, _>(ids)
            .execute(conn)
            .await?,
    )
}

/// Registers a reactive trigger with a trailing-edge debounce: the resource becomes due at
/// `now + debounce`, pushed out by every further trigger but never past the first unserved
/// trigger's time + `max_wait`. The latest reason wins. A claim in flight keeps its row (its
/// completion records the reconcile) but no longer owns the due time: [`complete`] sees the
/// moved due time and leaves this trigger pending, and the next claim serves it as a new due
/// item (a new event id). Returns the new due time, or `None` if the
/// resource has no schedule (it does not exist or is deleted).
#[tracing::instrument(
    name = "UPDATE reconcile_schedule",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "reconcile_schedule")
)]
pub async fn trigger(
    conn: &mut AsyncPgConnection,
    kind: ResourceKind,
    id: Uuid,
    reason: ReconcileReason,
    now: OffsetDateTime,
    debounce: Duration,
    max_wait: Duration,
) -> Result<Option<OffsetDateTime>, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = Timestamptz)]
        next_due_at: OffsetDateTime,
    }
    let now = truncate_to_micros(now);
    let due: Option<Due> = sql(
        // A creation trigger on a resource not yet reconciled changes nothing: its schedule
        // row, committed with it, is already due and its first event comes promptly.
        "UPDATE reconcile_schedule
            SET pending_reason = CASE WHEN last_reconciled_at IS NULL AND $3 = 'cluster_created'
                                      THEN pending_reason ELSE $3 END,
                pending_since = CASE WHEN last_reconciled_at IS NULL AND $3 = 'cluster_created'
                                     THEN pending_since ELSE COALESCE(pending_since, $4) END,
                next_due_at = CASE WHEN last_reconciled_at IS NULL AND $3 = 'cluster_created'
                                   THEN next_due_at
                                   ELSE LEAST($5, COALESCE(pending_since, $4) + make_interval(secs => $6)) END,
                claimed_due_at = CASE WHEN last_reconciled_at IS NULL AND $3 = 'cluster_created'
                                      THEN claimed_due_at ELSE NULL END
          WHERE resource_id = $1 AND resource_kind = $2
        RETURNING next_due_at",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(kind.as_str())
    .bind::<Text, _>(reason.as_str())
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(truncate_to_micros(now + debounce))
    .bind::<Double, _>(max_wait.as_seconds_f64())
    .get_result(conn)
    .await
    .optional()?;
    Ok(due.map(|d| d.next_due_at))
}

/// Counts for operators (`Stats`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScheduleStats {
    /// Rows due now (including expired claims).
    pub due: i64,
    /// Rows due for longer than the overdue threshold.
    pub overdue: i64,
    /// Rows claimed by a replica right now.
    pub claimed: i64,
    /// All scheduled (live) resources.
    pub scheduled: i64,
    /// Seconds since the oldest due row became due (0 when none is due).
    pub oldest_due_seconds: f64,
}

pub async fn stats(
    conn: &mut AsyncPgConnection,
    now: OffsetDateTime,
    overdue_after: Duration,
) -> Result<ScheduleStats, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        due: i64,
        #[diesel(sql_type = BigInt)]
        overdue: i64,
        #[diesel(sql_type = BigInt)]
        claimed: i64,
        #[diesel(sql_type = BigInt)]
        scheduled: i64,
        #[diesel(sql_type = Double)]
        oldest_due_seconds: f64,
    }
    let row: Row = sql(
        "SELECT count(*) FILTER (WHERE next_due_at <= $1) AS due,
                count(*) FILTER (WHERE next_due_at <= $2) AS overdue,
                count(*) FILTER (WHERE claimed_by IS NOT NULL AND claim_expires_at > $1) AS claimed,
                count(*) AS scheduled,
                COALESCE(EXTRACT(EPOCH FROM $1 - min(next_due_at) FILTER (WHERE next_due_at <= $1)), 0)::float8
                    AS oldest_due_seconds
           FROM reconcile_schedule",
    )
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .bind::<Timestamptz, _>(truncate_to_micros(now - overdue_after))
    .get_result(conn)
    .await?;
    Ok(ScheduleStats {
        due: row.due,
        overdue: row.overdue,
        claimed: row.claimed,
        scheduled: row.scheduled,
        oldest_due_seconds: row.oldest_due_seconds,
    })
}

/// Hard-deletes up to `limit` clusters and up to `limit` nodepools soft-deleted before
/// `cutoff` (SPEC §3.5), cascading to their nodepools and status rows (their schedule rows
/// went when they were soft-deleted). Rows another replica is purging are skipped, so replicas
/// share the work. Returns how many resources were purged.
pub async fn purge_deleted(
    conn: &mut AsyncPgConnection,
    cutoff: OffsetDateTime,
    limit: i64,
) -> Result<usize, StorageError> {
    let mut purged = 0;
    for table in ["nodepools", "clusters"] {
        purged += sql(format!(
            "WITH doomed AS (
                 SELECT id FROM {table} WHERE deleted_at < $1
                  ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED
             )
             DELETE FROM {table} t USING doomed WHERE t.id = doomed.id"
        ))
        .bind::<Timestamptz, _>(truncate_to_micros(cutoff))
        .bind::<BigInt, _>(limit)
        .execute(conn)
        .await?;
    }
    Ok(purged)
}
