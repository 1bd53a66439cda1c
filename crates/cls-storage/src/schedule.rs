//! The reconcile schedule (SPEC §6): one row per live cluster and nodepool with its next due
//! time, worked through by scheduler replicas.
//!
//! A round locks its due rows ([`lock_due`]: `FOR UPDATE SKIP LOCKED`, in a transaction that
//! lasts the whole round) and ends by storing the next due times once the round's events are
//! durable ([`LockedDue::complete`]) or by making the rows due again later
//! ([`LockedDue::release`]); either commits. Other replicas skip locked rows, so each due item
//! is emitted by one replica. A replica that dies loses its connection and Postgres releases
//! its rows at once; one that hangs loses them after `hold` (the transaction's
//! `idle_in_transaction_session_timeout`). The due item a round serves (`claimed_due_at`, kept
//! when a failed round releases it) names the event, so a re-emission after a lost
//! acknowledgement carries the same id. One write per item: the completion (a lease written
//! by the claim itself doubled the schedule's writes).
//!
//! A reactive [`trigger`] on a row in a round waits for the round to end and then applies to
//! the completed row, so the change it announces is never lost.

use cls_domain::event::ResourceRef;
use cls_domain::reconcile::{ReconcileFacts, ReconcileReason};
use cls_domain::resource::ResourceKind;
use cls_domain::status::Phase;
use diesel::OptionalExtension as _;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, TransactionManager};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::StorageError;
use crate::prepared::sql;
use crate::rows::decode;
use crate::truncate_to_micros;

/// A due schedule row with what the policy needs to decide on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    pub resource: ResourceRef,
    /// The due time this round serves (stable across released rounds of the same item).
    pub due_at: OffsetDateTime,
    /// The facts for the policy; `None` when the resource (or its cluster) is deleted.
    pub facts: Option<ReconcileFacts>,
}

impl DueItem {
    pub fn last_reconciled_at(&self) -> Option<OffsetDateTime> {
        self.facts.and_then(|f| f.last_reconciled_at)
    }
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

impl DueRow {
    fn into_item(self) -> Result<DueItem, StorageError> {
        let resource = match self.nodepool_id {
            None => ResourceRef::Cluster {
                cluster_id: self.cluster_id,
            },
            Some(nodepool_id) => ResourceRef::NodePool {
                cluster_id: self.cluster_id,
                nodepool_id,
            },
        };
        let facts = match (self.gone, self.created_at, self.generation) {
            (false, Some(created_at), Some(generation)) => {
                let phase: Phase = decode("phase", self.phase.map_or(Value::Null, Value::String))?;
                Some(ReconcileFacts {
                    created_at,
                    last_reconciled_at: self.last_reconciled_at,
                    generation,
                    phase,
                    min_observed_generation: self.min_observed_generation,
                    pending_reason: self
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
            due_at: self.due_at,
            facts,
        })
    }
}

/// A round's due items, locked until the round ends. End it with [`LockedDue::complete`] or
/// [`LockedDue::release`]; dropped instead (the round was cancelled), its connection is left
/// in a transaction, which the pool discards, so Postgres rolls back and the rows are due for
/// the other replicas at once.
pub struct LockedDue<'c> {
    conn: &'c mut AsyncPgConnection,
    /// Oldest due first. Items whose resource is gone are in the list (with no facts) but no
    /// longer scheduled: their rows were removed with the lock.
    pub items: Vec<DueItem>,
}

impl std::fmt::Debug for LockedDue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedDue")
            .field("items", &self.items)
            .finish_non_exhaustive()
    }
}

/// The outcome of one item of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub resource_id: Uuid,
    pub next_due_at: OffsetDateTime,
}

/// Starts a round: locks up to `limit` rows due at `now` (oldest due first), skipping rows in
/// another replica's round, and reads their facts. Rows whose resource is gone are removed
/// (deletion normally removes them itself; this covers any that slipped through). The locks
/// hold until the round ends, or for at most `hold` while the connection is idle (a hung
/// replica). `None`: nothing is due (and no transaction is left open).
#[tracing::instrument(
    name = "SELECT reconcile_schedule",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "SELECT", db.collection.name = "reconcile_schedule")
)]
pub async fn lock_due(
    conn: &mut AsyncPgConnection,
    now: OffsetDateTime,
    limit: i64,
    hold: Duration,
) -> Result<Option<LockedDue<'_>>, StorageError> {
    AnsiTransactionManager::begin_transaction(conn).await?;
    match lock_rows(conn, now, limit, hold).await {
        Ok(items) if items.is_empty() => commit(conn, Ok(0)).await.map(|_| None),
        Ok(items) => Ok(Some(LockedDue { conn, items })),
        Err(e) => Err(rolled_back(conn, e).await),
    }
}

async fn lock_rows(
    conn: &mut AsyncPgConnection,
    now: OffsetDateTime,
    limit: i64,
    hold: Duration,
) -> Result<Vec<DueItem>, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        #[allow(dead_code, reason = "set_config returns the value it set")]
        set_config: String,
    }
    let hold_ms = hold.whole_milliseconds().max(1).to_string();
    let _: Setting = sql("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
        .bind::<Text, _>(hold_ms)
        .get_result(conn)
        .await?;
    let rows: Vec<DueRow> = sql("WITH due AS MATERIALIZED (
             SELECT cluster_id, nodepool_id, COALESCE(claimed_due_at, next_due_at) AS due_at,
                    last_reconciled_at, pending_reason
               FROM reconcile_schedule
              WHERE next_due_at <= $1
              ORDER BY next_due_at
              LIMIT $2
              FOR UPDATE SKIP LOCKED
         )
         SELECT cl.cluster_id, cl.nodepool_id, cl.due_at, cl.last_reconciled_at, cl.pending_reason,
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
           FROM due cl
           -- No foreign keys: a row whose resource is gone altogether comes back as gone too.
           LEFT JOIN clusters c ON c.id = cl.cluster_id
           LEFT JOIN nodepools np ON np.id = cl.nodepool_id
          ORDER BY cl.due_at")
    .bind::<Timestamptz, _>(truncate_to_micros(now))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    let items = rows
        .into_iter()
        .map(DueRow::into_item)
        .collect::<Result<Vec<_>, _>>()?;
    let gone: Vec<Uuid> = items
        .iter()
        .filter(|i| i.facts.is_none())
        .map(|i| i.resource.id())
        .collect();
    if !gone.is_empty() {
        sql("DELETE FROM reconcile_schedule WHERE resource_id = ANY($1)")
            .bind::<Array<SqlUuid>, _>(gone)
            .execute(conn)
            .await?;
    }
    Ok(items)
}

impl LockedDue<'_> {
    /// Ends the round: the items were reconciled at `now` (their events are durable), so
    /// their next due times are stored and their pending triggers cleared. Returns how many
    /// rows were updated.
    #[tracing::instrument(
        name = "UPDATE reconcile_schedule",
        level = "info",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "reconcile_schedule")
    )]
    pub async fn complete(
        self,
        now: OffsetDateTime,
        done: &[Completion],
    ) -> Result<usize, StorageError> {
        let ids: Vec<Uuid> = done.iter().map(|c| c.resource_id).collect();
        let next: Vec<OffsetDateTime> = done
            .iter()
            .map(|c| truncate_to_micros(c.next_due_at))
            .collect();
        let updated = sql("UPDATE reconcile_schedule s
                SET last_reconciled_at = $1, next_due_at = u.next_due_at,
                    pending_reason = NULL, pending_since = NULL, claimed_due_at = NULL
               FROM unnest($2::uuid[], $3::timestamptz[]) AS u(id, next_due_at)
              WHERE s.resource_id = u.id")
        .bind::<Timestamptz, _>(truncate_to_micros(now))
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<Timestamptz>, _>(next)
        .execute(&mut *self.conn)
        .await;
        commit(self.conn, updated).await
    }

    /// Ends the round without reconciling `ids` (the publish failed): they are due again at
    /// `retry_at`, still serving the same due items (the same event ids).
    pub async fn release(
        self,
        ids: &[Uuid],
        retry_at: OffsetDateTime,
    ) -> Result<usize, StorageError> {
        let updated = sql("UPDATE reconcile_schedule
                SET claimed_due_at = COALESCE(claimed_due_at, next_due_at), next_due_at = $1
              WHERE resource_id = ANY($2)")
        .bind::<Timestamptz, _>(truncate_to_micros(retry_at))
        .bind::<Array<SqlUuid>, _>(ids)
        .execute(&mut *self.conn)
        .await;
        commit(self.conn, updated).await
    }
}

/// Commits after `outcome`, or rolls back if it failed.
async fn commit(
    conn: &mut AsyncPgConnection,
    outcome: diesel::QueryResult<usize>,
) -> Result<usize, StorageError> {
    match outcome {
        Ok(n) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(n)
        }
        Err(e) => Err(rolled_back(conn, e.into()).await),
    }
}

/// Rolls the round's transaction back after `error`. If even that fails, the transaction
/// manager is left broken and the pool discards the connection (Postgres then rolls back).
async fn rolled_back(conn: &mut AsyncPgConnection, error: StorageError) -> StorageError {
    if let Err(e) = AnsiTransactionManager::rollback_transaction(conn).await {
        tracing::debug!(error = %e, "rollback failed; the connection is discarded");
    }
    error
}

/// Registers a reactive trigger with a trailing-edge debounce: the resource becomes due at
/// `now + debounce`, pushed out by every further trigger but never past the first unserved
/// trigger's time + `max_wait`. The latest reason wins. On a row in a round, it waits for the
/// round to end and applies to the completed row, so it is served by a later round as a new
/// due item (a new event id). Returns the new due time, or `None` if the resource has no
/// schedule (it does not exist or is deleted).
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
    /// Rows due now (including those in a round).
    pub due: i64,
    /// Rows due for longer than the overdue threshold.
    pub overdue: i64,
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
        scheduled: i64,
        #[diesel(sql_type = Double)]
        oldest_due_seconds: f64,
    }
    let row: Row = sql(
        "SELECT count(*) FILTER (WHERE next_due_at <= $1) AS due,
                count(*) FILTER (WHERE next_due_at <= $2) AS overdue,
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
