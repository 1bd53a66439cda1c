//! The only CLS crate that speaks SQL: the diesel schema, the connection pool, the embedded
//! migrations and every query.
//!
//! Boundary: repository functions take a connection (`&mut AsyncPgConnection`), never a pool,
//! so the caller decides the transaction scope; a function that needs several statements runs
//! them in the caller's transaction, or in one of its own when the caller has none. Rows are
//! mapped to `cls-domain` types at this edge; no diesel type escapes except the connection and
//! pool.

/// Runs a block atomically: directly inside the caller's transaction when there is one (a
/// savepoint would cost two extra round trips), else in a transaction of its own.
macro_rules! atomically {
    ($conn:expr, async |$c:ident| $body:block) => {{
        if $crate::in_transaction($conn) {
            let $c = &mut *$conn;
            $body
        } else {
            diesel_async::AsyncConnection::transaction($conn, async |$c| $body).await
        }
    }};
}

pub mod clusters;
pub mod error;
pub mod idempotency;
pub mod migrate;
pub mod nodepools;
pub mod outbox;
pub mod pool;
pub mod schedule;
pub mod schema;
pub mod status;

mod prepared;
mod rows;

pub use diesel_async::AsyncPgConnection;
pub use error::StorageError;
pub use pool::{PgPool, connect, pool};
pub use rows::{StoredCluster, StoredNodePool};

use cls_domain::resource::Labels;
use cls_domain::status::Phase;
use time::OffsetDateTime;

/// Filters and paging for list queries (SPEC §3.3, §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only resources in this aggregated phase.
    pub phase: Option<Phase>,
    /// Only resources carrying every one of these labels.
    pub labels: Labels,
    /// Only the resource with exactly this name.
    pub name: Option<String>,
    /// Include soft-deleted resources; honoured for controllers only.
    pub include_deleted: bool,
    pub limit: i64,
    pub offset: i64,
}

impl Default for ListQuery {
    fn default() -> ListQuery {
        ListQuery {
            phase: None,
            labels: Labels::new(),
            name: None,
            include_deleted: false,
            limit: 50,
            offset: 0,
        }
    }
}

/// One page of a list and the number of matching resources the caller may see.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// The result of an update.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated<T> {
    pub resource: T,
    /// The spec changed, so the generation was bumped and status reset to the new generation.
    pub spec_changed: bool,
    /// Anything was stored (spec, labels or description); `resource_version` moved.
    pub changed: bool,
}

/// Whether `conn` is inside a transaction.
pub(crate) fn in_transaction(conn: &mut AsyncPgConnection) -> bool {
    use diesel_async::TransactionManager as _;
    diesel_async::AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .is_ok_and(|depth| depth.is_some())
}

/// A cheap readiness probe: can the database answer at all?
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), StorageError> {
    use diesel_async::RunQueryDsl as _;
    prepared::sql("SELECT 1").execute(conn).await?;
    Ok(())
}

/// Whether the pool can hand out a connection that answers: a readiness check's database
/// part, with a message for `/readyz`.
pub async fn ready(pool: &PgPool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| format!("database: {e}"))?;
    ping(&mut conn).await.map_err(|e| format!("database: {e}"))
}

/// Checks an update's version preconditions against the stored `resource_version`:
/// `If-Match` first (412), then the body's `resource_version` (409).
pub(crate) fn check_versions(
    stored_version: i64,
    if_match: Option<&str>,
    body_version: Option<&str>,
) -> Result<(), StorageError> {
    let stored = stored_version.to_string();
    if if_match.is_some_and(|v| v != stored) {
        return Err(StorageError::PreconditionFailed);
    }
    if body_version.is_some_and(|v| v != stored) {
        return Err(StorageError::VersionConflict);
    }
    Ok(())
}

/// What an update writes: the new generation and status when the spec changed.
pub(crate) fn next_generation(
    kind: cls_domain::resource::ResourceKind,
    stored_generation: i64,
    stored_status: &cls_domain::status::Status,
    spec_changed: bool,
    now: OffsetDateTime,
) -> (i64, cls_domain::status::Status) {
    if !spec_changed {
        return (stored_generation, stored_status.clone());
    }
    let generation = stored_generation + 1;
    let status = cls_domain::aggregate::aggregate(&cls_domain::aggregate::AggregationInput {
        kind,
        generation,
        controllers: &[],
        previous: Some(stored_status),
        now,
        grace: cls_domain::aggregate::DEFAULT_GRACE,
        progress_window: cls_domain::aggregate::PROGRESS_WINDOW,
    })
    .status;
    (generation, status)
}

/// Postgres keeps microseconds; timestamps are truncated before they are stored so that what
/// a caller holds equals what it reads back.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}
