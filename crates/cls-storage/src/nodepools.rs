//! Nodepool repository functions. A user sees the live nodepools of the clusters it created;
//! a controller sees all (SPEC §2.2).

use std::sync::LazyLock;

use cls_domain::aggregate::initial_status;
use cls_domain::event::Envelope;
use cls_domain::identity::Caller;
use cls_domain::resource::{Cluster, NodePool, NodePoolSpec, ResourceKind};
use cls_domain::validate::{NewNodePool, NodePoolUpdate};
use diesel::dsl::count_star;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::outbox;
use crate::prepared::sql;
use crate::rows::{NodePoolRow, StoredNodePool, encode};
use crate::schema::{clusters, nodepools, reconcile_schedule};
use crate::{ListQuery, Page, Updated, check_versions, next_generation, truncate_to_micros};

/// The unique index that keeps live nodepool names unique per cluster.
const NAME_INDEX: &str = "nodepools_cluster_name_live";

/// Inserts a nodepool under `cluster` (which the caller has locked with
/// [`crate::clusters::lock_live`] in the same transaction, so it cannot be deleted
/// concurrently), at generation 1 with a `Pending` status, and its reconcile schedule. See
/// [`create_announced`] to write its creation event with it.
pub async fn create(
    conn: &mut AsyncPgConnection,
    cluster: &Cluster,
    created_by: &str,
    new: &NewNodePool,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<NodePool, StorageError> {
    create_announced(conn, cluster, created_by, new, id, now, &[])
        .await
        .map(|(created, _)| created)
}

/// [`create`], writing `events` (the nodepool's creation event) to the outbox with it, in one
/// statement: data-modifying CTEs insert the nodepool, its schedule row and its events, which
/// take the cluster's outbox lock first, as [`crate::outbox::insert`] does. Pass the returned
/// [`outbox::Written`] to an [`outbox::Waker`] once the caller's transaction has committed.
///
/// As in [`crate::clusters::create_announced`], the statement returns no columns: the
/// returned nodepool is built from the values bound here, which are all of the new row's.
#[tracing::instrument(
    name = "INSERT nodepools",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "INSERT", db.collection.name = "nodepools")
)]
pub async fn create_announced(
    conn: &mut AsyncPgConnection,
    cluster: &Cluster,
    created_by: &str,
    new: &NewNodePool,
    id: Uuid,
    now: OffsetDateTime,
    events: &[Envelope],
) -> Result<(NodePool, outbox::Written), StorageError> {
    static STATEMENT: LazyLock<outbox::WithEvents> = LazyLock::new(|| {
        outbox::WithEvents::new(11, |events| {
            format!(
                "WITH {locks}, nodepool AS (
                     INSERT INTO nodepools (id, cluster_id, name, labels, created_by, generation,
                                            resource_version, spec, status, created_at, updated_at)
                     VALUES ($3, $4, $5, $6, $7, 1, 1, $8, $9, $10, $10)
                     RETURNING id, cluster_id, created_at
                 ), schedule AS (
                     INSERT INTO reconcile_schedule (resource_id, resource_kind, cluster_id, nodepool_id, next_due_at)
                     SELECT id, '{kind}', cluster_id, id, created_at FROM nodepool
                 ), events AS (
                     {events} {after_locks}
                 )
                 SELECT id FROM nodepool",
                locks = outbox::locks_cte(1),
                kind = ResourceKind::NodePool.as_str(),
                after_locks = outbox::AFTER_LOCKS,
            )
        })
    });
    let now = truncate_to_micros(now);
    let status = initial_status(ResourceKind::NodePool, 1, now);
    let labels = encode(&new.labels);
    let spec = encode(&new.spec);
    let status_json = encode(&status);
    STATEMENT
        .run(conn, events, |text| {
            outbox::bind_locks(sql(text), events)
                .bind::<SqlUuid, _>(id)
                .bind::<SqlUuid, _>(cluster.id)
                .bind::<Text, _>(&new.name)
                .bind::<Jsonb, _>(&labels)
                .bind::<Text, _>(created_by)
                .bind::<Jsonb, _>(&spec)
                .bind::<Jsonb, _>(&status_json)
                .bind::<Timestamptz, _>(now)
        })
        .await
        .map_err(|e| StorageError::on_create(e, NAME_INDEX, "nodepool", &new.name))?;
    let nodepool = NodePool {
        id,
        cluster_id: cluster.id,
        name: new.name.clone(),
        labels: new.labels.clone(),
        created_by: created_by.to_owned(),
        generation: 1,
        resource_version: "1".to_owned(),
        spec: new.spec.clone(),
        status,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    Ok((nodepool, outbox::Written::of(events)))
}

/// A nodepool by id, if the caller may see it (controllers also see deleted nodepools), its
/// documents undecoded ([`StoredNodePool::into_domain`] decodes them).
pub async fn get(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<StoredNodePool>, StorageError> {
    // Static queries (no boxing) so diesel caches them as prepared statements.
    let row = match caller.owner_filter() {
        Some(owner) => {
            nodepools::table
                .filter(nodepools::id.eq(id))
                .filter(nodepools::deleted_at.is_null())
                .filter(
                    nodepools::cluster_id.eq_any(
                        clusters::table
                            .filter(clusters::created_by.eq(owner))
                            .select(clusters::id),
                    ),
                )
                .select(NodePoolRow::as_select())
                .first(conn)
                .await
        }
        None => {
            nodepools::table
                .find(id)
                .select(NodePoolRow::as_select())
                .first(conn)
                .await
        }
    }
    .optional()?;
    Ok(row.map(StoredNodePool))
}

/// Nodepools the caller may see, optionally of one cluster, newest first, with the total;
/// their documents undecoded, as [`get`] returns them.
pub async fn list(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    cluster_id: Option<Uuid>,
    query: &ListQuery,
) -> Result<Page<StoredNodePool>, StorageError> {
    // The total and the page, pipelined: both statements sent at once, one round trip.
    let conn: &AsyncPgConnection = conn;
    let (mut for_total, mut for_page) = (conn, conn);
    let (total, rows) = futures_util::future::try_join(
        filtered(caller, cluster_id, query)
            .select(count_star())
            .get_result::<i64>(&mut for_total),
        filtered(caller, cluster_id, query)
            .order((nodepools::created_at.desc(), nodepools::id.desc()))
            .limit(query.limit)
            .offset(query.offset)
            .select(NodePoolRow::as_select())
            .load::<NodePoolRow>(&mut for_page),
    )
    .await?;
    Ok(Page {
        items: rows.into_iter().map(StoredNodePool).collect(),
        total,
    })
}

fn filtered<'a>(
    caller: &'a Caller,
    cluster_id: Option<Uuid>,
    query: &'a ListQuery,
) -> nodepools::BoxedQuery<'a, Pg> {
    let mut q = nodepools::table.into_boxed();
    if let Some(owner) = caller.owner_filter() {
        q = q.filter(
            nodepools::cluster_id.eq_any(
                clusters::table
                    .filter(clusters::created_by.eq(owner))
                    .select(clusters::id),
            ),
        );
    }
    if let Some(cluster_id) = cluster_id {
        q = q.filter(nodepools::cluster_id.eq(cluster_id));
    }
    if !(caller.is_controller() && query.include_deleted) {
        q = q.filter(nodepools::deleted_at.is_null());
    }
    if let Some(phase) = query.phase {
        q = q.filter(nodepools::phase.eq(phase.as_str()));
    }
    if let Some(name) = &query.name {
        q = q.filter(nodepools::name.eq(name));
    }
    if !query.labels.is_empty() {
        q = q.filter(nodepools::labels.contains(encode(&query.labels)));
    }
    q
}

/// Locks a live nodepool the caller may see (`FOR UPDATE`) until the transaction ends.
pub async fn lock_live(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<NodePool, StorageError> {
    lock_live_row(conn, caller, id).await?.into_domain()
}

async fn lock_live_row(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<NodePoolRow, StorageError> {
    let live = nodepools::table
        .filter(nodepools::id.eq(id))
        .filter(nodepools::deleted_at.is_null());
    let row = match caller.owner_filter() {
        Some(owner) => {
            live.filter(
                nodepools::cluster_id.eq_any(
                    clusters::table
                        .filter(clusters::created_by.eq(owner))
                        .select(clusters::id),
                ),
            )
            .for_update()
            .select(NodePoolRow::as_select())
            .first(conn)
            .await
        }
        None => {
            live.for_update()
                .select(NodePoolRow::as_select())
                .first(conn)
                .await
        }
    };
    row.optional()?.ok_or(StorageError::NotFound)
}

/// Applies a validated update to a live nodepool, with the same rules as
/// [`crate::clusters::update`].
#[tracing::instrument(
    name = "UPDATE nodepools",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "nodepools")
)]
pub async fn update(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
    change: &NodePoolUpdate,
    if_match: Option<&str>,
    now: OffsetDateTime,
) -> Result<Updated<NodePool>, StorageError> {
    let now = truncate_to_micros(now);
    atomically!(conn, async |conn| {
        let row = lock_live_row(conn, caller, id).await?;
        check_versions(
            row.resource_version,
            if_match,
            change.resource_version.as_deref(),
        )?;
        let stored = row.into_domain()?;
        let spec_changed = stored.spec != change.spec;
        let labels = change.labels.as_ref().unwrap_or(&stored.labels);
        let changed = spec_changed || *labels != stored.labels;
        if !changed {
            return Ok(Updated {
                resource: stored,
                spec_changed,
                changed,
            });
        }
        let (generation, status) = next_generation(
            ResourceKind::NodePool,
            stored.generation,
            &stored.status,
            spec_changed,
            now,
        );
        let row = diesel::update(nodepools::table.filter(nodepools::id.eq(id)))
            .set((
                nodepools::spec.eq(encode::<NodePoolSpec>(&change.spec)),
                nodepools::labels.eq(encode(labels)),
                nodepools::generation.eq(generation),
                nodepools::resource_version.eq(nodepools::resource_version + 1),
                nodepools::status.eq(encode(&status)),
                nodepools::updated_at.eq(now),
            ))
            .returning(NodePoolRow::as_returning())
            .get_result(conn)
            .await?;
        Ok(Updated {
            resource: row.into_domain()?,
            spec_changed,
            changed,
        })
    })
}

/// Soft-deletes a live nodepool and removes its reconcile schedule. The caller checks
/// visibility first, under [`lock_live`], in the same transaction.
#[tracing::instrument(
    name = "UPDATE nodepools",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "nodepools")
)]
pub async fn mark_deleted(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<NodePool, StorageError> {
    let now = truncate_to_micros(now);
    atomically!(conn, async |conn| {
        let row = diesel::update(
            nodepools::table
                .filter(nodepools::id.eq(id))
                .filter(nodepools::deleted_at.is_null()),
        )
        .set((
            nodepools::deleted_at.eq(now),
            nodepools::updated_at.eq(now),
            nodepools::resource_version.eq(nodepools::resource_version + 1),
            nodepools::status_recheck_at.eq(None::<OffsetDateTime>),
        ))
        .returning(NodePoolRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or(StorageError::NotFound)?;
        diesel::delete(reconcile_schedule::table.filter(reconcile_schedule::resource_id.eq(id)))
            .execute(conn)
            .await?;
        row.into_domain()
    })
}
