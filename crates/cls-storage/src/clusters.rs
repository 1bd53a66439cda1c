//! Cluster repository functions. Every read is scoped to what the caller may see
//! (SPEC §2.2): a user sees only live clusters it created; a controller sees all.

use std::sync::LazyLock;

use cls_domain::aggregate::initial_status;
use cls_domain::event::Envelope;
use cls_domain::identity::Caller;
use cls_domain::resource::{Cluster, ClusterSpec, NodePool, ResourceKind};
use cls_domain::validate::{ClusterUpdate, NewCluster};
use diesel::dsl::count_star;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::outbox;
use crate::prepared::sql;
use crate::rows::{ClusterRow, NodePoolRow, StoredCluster, all, encode};
use crate::schema::{cluster_live_counts, clusters, nodepools, reconcile_schedule};
use crate::{ListQuery, Page, Updated, check_versions, next_generation, truncate_to_micros};

/// The unique index that keeps live cluster names unique per owner.
const NAME_INDEX: &str = "clusters_owner_name_live";

/// Inserts a cluster owned by `created_by` at generation 1 with a `Pending` status, and its
/// reconcile schedule (due at once). Fails with [`StorageError::NameExists`] if the owner has
/// a live cluster of that name. See [`create_announced`] to write its creation event with it.
pub async fn create(
    conn: &mut AsyncPgConnection,
    created_by: &str,
    new: &NewCluster,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Cluster, StorageError> {
    create_announced(conn, created_by, new, id, now, &[])
        .await
        .map(|(created, _)| created)
}

/// [`create`], writing `events` (the cluster's creation event) to the outbox with it; pass the
/// returned [`outbox::Written`] to an [`outbox::Waker`] once it has committed.
///
/// One statement, so one round trip and atomic without a transaction of the caller's: the
/// cluster, its schedule row and its events are inserted by data-modifying CTEs. The events
/// take no per-cluster advisory lock (see [`crate::outbox::insert`]): nothing else can write
/// an event for a cluster that is not yet committed, so none can commit before these.
///
/// The statement returns no columns: every value of the new row is bound here (no column
/// default or trigger changes it), so the returned cluster is built from them instead of
/// sending the row, its three `jsonb` documents as text, back to be decoded again.
#[tracing::instrument(
    name = "INSERT clusters",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "INSERT", db.collection.name = "clusters")
)]
pub async fn create_announced(
    conn: &mut AsyncPgConnection,
    created_by: &str,
    new: &NewCluster,
    id: Uuid,
    now: OffsetDateTime,
    events: &[Envelope],
) -> Result<(Cluster, outbox::Written), StorageError> {
    static STATEMENT: LazyLock<outbox::WithEvents> = LazyLock::new(|| {
        outbox::WithEvents::new(10, |events| {
            format!(
                "WITH cluster AS (
                     INSERT INTO clusters (id, name, description, target_project_id, labels, created_by,
                                           generation, resource_version, spec, status, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, 1, $7, $8, $9, $9)
                     RETURNING id, created_at
                 ), schedule AS (
                     INSERT INTO reconcile_schedule (resource_id, resource_kind, cluster_id, next_due_at)
                     SELECT id, '{kind}', id, created_at FROM cluster
                 ), events AS (
                     {events}
                 )
                 SELECT id FROM cluster",
                kind = ResourceKind::Cluster.as_str(),
            )
        })
    });
    let now = truncate_to_micros(now);
    let status = initial_status(ResourceKind::Cluster, 1, now);
    let labels = encode(&new.labels);
    let spec = encode(&new.spec);
    let status_json = encode(&status);
    STATEMENT
        .run(conn, events, |text| {
            sql(text)
                .bind::<SqlUuid, _>(id)
                .bind::<Text, _>(&new.name)
                .bind::<Nullable<Text>, _>(new.description.as_deref())
                .bind::<Nullable<Text>, _>(new.target_project_id.as_deref())
                .bind::<Jsonb, _>(&labels)
                .bind::<Text, _>(created_by)
                .bind::<Jsonb, _>(&spec)
                .bind::<Jsonb, _>(&status_json)
                .bind::<Timestamptz, _>(now)
        })
        .await
        .map_err(|e| StorageError::on_create(e, NAME_INDEX, "cluster", &new.name))?;
    let cluster = Cluster {
        id,
        name: new.name.clone(),
        description: new.description.clone(),
        target_project_id: new.target_project_id.clone(),
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
    Ok((cluster, outbox::Written::of(events)))
}

/// A cluster by id, if the caller may see it (controllers also see deleted clusters), its
/// documents undecoded ([`StoredCluster::into_domain`] decodes them).
pub async fn get(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<StoredCluster>, StorageError> {
    // Static queries (no boxing) so diesel caches them as prepared statements.
    let row = match caller.owner_filter() {
        Some(owner) => {
            clusters::table
                .filter(clusters::id.eq(id))
                .filter(clusters::created_by.eq(owner))
                .filter(clusters::deleted_at.is_null())
                .select(ClusterRow::as_select())
                .first(conn)
                .await
        }
        None => {
            clusters::table
                .find(id)
                .select(ClusterRow::as_select())
                .first(conn)
                .await
        }
    }
    .optional()?;
    Ok(row.map(StoredCluster))
}

/// Clusters the caller may see, newest first (`created_at DESC, id DESC`), with the total;
/// their documents undecoded, as [`get`] returns them.
pub async fn list(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    query: &ListQuery,
) -> Result<Page<StoredCluster>, StorageError> {
    // The total and the page, pipelined: both statements sent at once, one round trip.
    let conn: &AsyncPgConnection = conn;
    let mut for_page = conn;
    let (total, rows) = futures_util::future::try_join(
        total(conn, caller, query),
        filtered(caller, query)
            .order((clusters::created_at.desc(), clusters::id.desc()))
            .limit(query.limit)
            .offset(query.offset)
            .select(ClusterRow::as_select())
            .load::<ClusterRow>(&mut for_page),
    )
    .await?;
    Ok(Page {
        items: rows.into_iter().map(StoredCluster).collect(),
        total,
    })
}

/// How many clusters match `query` for `caller`. Without a filter it is the sum of the
/// maintained per-owner counts (`cluster_live_counts`, at most 16 rows an owner); with one,
/// a `count(*)` of the matching rows. Both are exact in the statement's snapshot.
async fn total(
    mut conn: &AsyncPgConnection,
    caller: &Caller,
    query: &ListQuery,
) -> Result<i64, diesel::result::Error> {
    // Every field named, so a new filter cannot be forgotten here.
    let ListQuery {
        phase,
        labels,
        name,
        include_deleted,
        limit: _,
        offset: _,
    } = query;
    let unfiltered = phase.is_none()
        && name.is_none()
        && labels.is_empty()
        && !(caller.is_controller() && *include_deleted);
    if !unfiltered {
        return filtered(caller, query)
            .select(count_star())
            .get_result::<i64>(&mut conn)
            .await;
    }
    let mut counts = cluster_live_counts::table.into_boxed();
    if let Some(owner) = caller.owner_filter() {
        counts = counts.filter(cluster_live_counts::created_by.eq(owner));
    }
    counts
        .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "coalesce(sum(live), 0)::bigint",
        ))
        .get_result::<i64>(&mut conn)
        .await
}

fn filtered<'a>(caller: &'a Caller, query: &'a ListQuery) -> clusters::BoxedQuery<'a, Pg> {
    let mut q = clusters::table.into_boxed();
    if let Some(owner) = caller.owner_filter() {
        q = q.filter(clusters::created_by.eq(owner));
    }
    if !(caller.is_controller() && query.include_deleted) {
        q = q.filter(clusters::deleted_at.is_null());
    }
    if let Some(phase) = query.phase {
        q = q.filter(clusters::phase.eq(phase.as_str()));
    }
    if let Some(name) = &query.name {
        q = q.filter(clusters::name.eq(name));
    }
    if !query.labels.is_empty() {
        q = q.filter(clusters::labels.contains(encode(&query.labels)));
    }
    q
}

/// Locks a live cluster the caller may see (`FOR UPDATE`) until the caller's transaction
/// ends, so that a check on it (a deletion guard, a nodepool creation) cannot race a
/// concurrent change. Call it inside a transaction.
pub async fn lock_live(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<Cluster, StorageError> {
    lock_live_row(conn, caller, id).await?.into_domain()
}

async fn lock_live_row(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<ClusterRow, StorageError> {
    let live = clusters::table
        .filter(clusters::id.eq(id))
        .filter(clusters::deleted_at.is_null());
    let row = match caller.owner_filter() {
        Some(owner) => {
            live.filter(clusters::created_by.eq(owner))
                .for_update()
                .select(ClusterRow::as_select())
                .first(conn)
                .await
        }
        None => {
            live.for_update()
                .select(ClusterRow::as_select())
                .first(conn)
                .await
        }
    };
    row.optional()?.ok_or(StorageError::NotFound)
}

/// Applies a validated update to a live cluster (SPEC §3.4), compare-and-set under the row
/// lock: concurrent updates are serialised, so generations never repeat or skip.
///
/// - `if_match` (the `If-Match` version) must equal the stored `resource_version`, else
///   [`StorageError::PreconditionFailed`]; the body's `resource_version` likewise, else
///   [`StorageError::VersionConflict`].
/// - A spec equal to the stored one (after defaults) leaves the generation alone; if labels
///   and description are unchanged too, nothing is written.
/// - A spec change bumps the generation by one and stores the status recomputed for the new
///   generation (`Pending` until controllers report on it).
#[tracing::instrument(
    name = "UPDATE clusters",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "clusters")
)]
pub async fn update(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    id: Uuid,
    change: &ClusterUpdate,
    if_match: Option<&str>,
    now: OffsetDateTime,
) -> Result<Updated<Cluster>, StorageError> {
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
        let description = change.description.as_ref().or(stored.description.as_ref());
        let changed =
            spec_changed || *labels != stored.labels || description != stored.description.as_ref();
        if !changed {
            return Ok(Updated {
                resource: stored,
                spec_changed,
                changed,
            });
        }
        let (generation, status) = next_generation(
            ResourceKind::Cluster,
            stored.generation,
            &stored.status,
            spec_changed,
            now,
        );
        let row = diesel::update(clusters::table.filter(clusters::id.eq(id)))
            .set((
                clusters::spec.eq(encode::<ClusterSpec>(&change.spec)),
                clusters::labels.eq(encode(labels)),
                clusters::description.eq(description),
                clusters::generation.eq(generation),
                clusters::resource_version.eq(clusters::resource_version + 1),
                clusters::status.eq(encode(&status)),
                clusters::updated_at.eq(now),
            ))
            .returning(ClusterRow::as_returning())
            .get_result(conn)
            .await?;
        Ok(Updated {
            resource: row.into_domain()?,
            spec_changed,
            changed,
        })
    })
}

/// A soft-deleted cluster and the nodepools deleted with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedCluster {
    pub cluster: Cluster,
    pub nodepools: Vec<NodePool>,
}

/// Soft-deletes a live cluster and all its live nodepools in one transaction, and removes
/// their reconcile schedules (deleted resources are never reconciled). The caller checks
/// visibility and the deletion guard first, under [`lock_live`], in the same transaction.
#[tracing::instrument(
    name = "UPDATE clusters",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "UPDATE", db.collection.name = "clusters")
)]
pub async fn mark_deleted(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<DeletedCluster, StorageError> {
    let now = truncate_to_micros(now);
    atomically!(conn, async |conn| {
        let cluster = diesel::update(
            clusters::table
                .filter(clusters::id.eq(id))
                .filter(clusters::deleted_at.is_null()),
        )
        .set((
            clusters::deleted_at.eq(now),
            clusters::updated_at.eq(now),
            clusters::resource_version.eq(clusters::resource_version + 1),
            clusters::status_recheck_at.eq(None::<OffsetDateTime>),
        ))
        .returning(ClusterRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or(StorageError::NotFound)?;
        let nodepools = diesel::update(
            nodepools::table
                .filter(nodepools::cluster_id.eq(id))
                .filter(nodepools::deleted_at.is_null()),
        )
        .set((
            nodepools::deleted_at.eq(now),
            nodepools::updated_at.eq(now),
            nodepools::resource_version.eq(nodepools::resource_version + 1),
            nodepools::status_recheck_at.eq(None::<OffsetDateTime>),
        ))
        .returning(NodePoolRow::as_returning())
        .load(conn)
        .await?;
        // By primary key: the cluster's row and those of the nodepools deleted with it (a
        // nodepool deleted earlier took its row with it).
        let scheduled: Vec<Uuid> = std::iter::once(id)
            .chain(nodepools.iter().map(|np| np.id))
            .collect();
        diesel::delete(
            reconcile_schedule::table.filter(reconcile_schedule::resource_id.eq_any(scheduled)),
        )
        .execute(conn)
        .await?;
        let mut nodepools = all(nodepools, NodePoolRow::into_domain)?;
        nodepools.sort_by_key(|np| (np.created_at, np.id));
        Ok(DeletedCluster {
            cluster: cluster.into_domain()?,
            nodepools,
        })
    })
}

/// Stores a recomputed aggregated status (and when it must next be rechecked) on a cluster,
/// without touching `resource_version` (status is not part of the desired state).
pub async fn store_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &cls_domain::status::Status,
    recheck_at: Option<OffsetDateTime>,
) -> Result<(), StorageError> {
    crate::status::store(
        conn,
        cls_domain::resource::ResourceKind::Cluster,
        id,
        status,
        recheck_at,
    )
    .await
}
