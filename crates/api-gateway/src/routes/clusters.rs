//! `/api/v1/clusters…` handlers.

use actix_web::{HttpRequest, HttpResponse, web};
use cls_domain::ErrorCode;
use cls_domain::event::{Envelope, LifecycleAction, ResourceRef};
use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::{
    Cluster, CreateClusterRequest, CreateNodePoolRequest, NodePool, ResourceKind,
    SERVER_OWNED_FIELDS, SERVER_OWNED_ON_UPDATE, UpdateClusterRequest,
};
use cls_domain::status::Phase;
use cls_domain::validate::{
    ClusterIdentity, cluster_create_violations, cluster_update_violations, validate_cluster_create,
    validate_cluster_update,
};
use cls_storage::{AsyncPgConnection, StoredCluster};
use cls_storage::{clusters, outbox};
use diesel_async::AsyncConnection as _;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::nodepools::{NodePoolList, create_nodepool_in, creation_body};
use super::{
    Created, Idempotent, Query, check_if_match, if_match, json_body, lifecycle_event, path_id,
    with_etag,
};
use crate::AppState;
use crate::auth::Authenticated;
use crate::error::{ApiError, Problem};

/// `GET /api/v1/clusters` response. Its clusters are written as read ([`StoredCluster`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ClusterList {
    #[schema(value_type = Vec<Cluster>)]
    pub(crate) clusters: Vec<StoredCluster>,
    pub(crate) total: i64,
    pub(crate) limit: i64,
    pub(crate) offset: i64,
}

/// `DELETE /api/v1/clusters/{id}` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeleteClusterResponse {
    pub(crate) message: &'static str,
    pub(crate) cluster_id: Uuid,
}

pub(crate) const LIST_PARAMS: [&str; 6] = [
    "limit",
    "offset",
    "status",
    "labels",
    "name",
    "include_deleted",
];

/// The lifecycle event of a cluster change.
pub(crate) fn cluster_event(
    cluster: &Cluster,
    action: LifecycleAction,
    now: OffsetDateTime,
) -> Envelope {
    lifecycle_event(
        ResourceRef::Cluster {
            cluster_id: cluster.id,
        },
        cluster.generation,
        action,
        now,
    )
}

/// List clusters the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters",
    params(super::ListParams),
    responses((status = 200, description = "OK", body = ClusterList), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_clusters(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &LIST_PARAMS)?.list_query()?;
    let mut conn = state.pool().get().await?;
    let page = clusters::list(&mut conn, &caller.0, &query).await?;
    Ok(HttpResponse::Ok().json(ClusterList {
        clusters: page.items,
        total: page.total,
        limit: query.limit,
        offset: query.offset,
    }))
}

/// Create a cluster; emits `cluster.created`. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", request_body = CreateClusterRequest,
    params(super::IdempotencyParams),
    responses((status = 201, description = "Created", body = Cluster, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Idempotency-Key reused with a different request", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_cluster(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CreateClusterRequest = json_body(&req, &body, &SERVER_OWNED_FIELDS, |rest| {
        cluster_create_violations(rest, state.release_defaults())
    })?;
    let idempotent = Idempotent::from_request(&req, &body)?;
    let new =
        validate_cluster_create(request, state.release_defaults()).map_err(ApiError::validation)?;
    let caller = caller.0;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    // Without a key the insert is a single statement (one round trip, atomic on its own); with
    // one, the key's claim and record share a transaction with it.
    let insert = async |conn: &mut AsyncPgConnection| {
        let id = Uuid::now_v7();
        let event = lifecycle_event(
            ResourceRef::Cluster { cluster_id: id },
            1,
            LifecycleAction::Created,
            now,
        );
        clusters::create_announced(conn, caller.email(), &new, id, now, &[event]).await
    };
    let (outcome, written) = match &idempotent {
        None => {
            let (cluster, written) = insert(&mut conn).await?;
            (Created::New(cluster), written)
        }
        Some(idempotent) => {
            conn.transaction::<_, ApiError, _>(async |conn| {
                if let Some(stored) = idempotent
                    .claim(conn, caller.email(), now, state.idempotency_ttl)
                    .await?
                {
                    return Ok((Created::Replay(stored), outbox::Written::default()));
                }
                let (cluster, written) = insert(conn).await?;
                Ok((
                    idempotent.complete(conn, caller.email(), cluster).await?,
                    written,
                ))
            })
            .await?
        }
    };
    state.waker.wake(written);
    // The schedule row committed with the cluster makes its first reconcile due at once; the
    // trigger records the creation with the scheduler (and carries the trace there). A replay
    // created nothing and wrote no event, so it wakes and announces nothing.
    if let Some(cluster) = outcome.created() {
        state.reconcile.fire(
            ResourceKind::Cluster,
            cluster.id,
            ReconcileReason::ClusterCreated,
        );
    }
    Ok(outcome.respond("/api/v1/clusters"))
}

/// Get a cluster (with its aggregated status) and its `ETag`.
#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = Cluster, headers(("ETag" = String))), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_cluster(
    state: web::Data<AppState>,
    caller: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let mut conn = state.pool().get().await?;
    let cluster = clusters::get(&mut conn, &caller.0, id)
        .await?
        .ok_or_else(ApiError::cluster_not_found)?;
    Ok(with_etag(
        HttpResponse::Ok(),
        &cluster.resource_version(),
        &cluster,
    ))
}

/// Replace a cluster's spec (and optionally labels/description); emits `cluster.updated`
/// when the spec changed.
#[utoipa::path(put, path = "/api/v1/clusters/{id}", tag = "clusters", request_body = UpdateClusterRequest,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "the ETag from GET")),
    responses((status = 200, description = "OK", body = Cluster, headers(("ETag" = String))), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match the current ETag", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update_cluster(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let request: UpdateClusterRequest = json_body(&req, &body, &SERVER_OWNED_ON_UPDATE, |rest| {
        cluster_update_violations(rest, state.release_defaults())
    })?;
    let if_match = if_match(req.headers());
    let caller = caller.0;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    let (cluster, written) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let stored = clusters::lock_live(conn, &caller, id)
                .await
                .map_err(ApiError::from_cluster_storage)?;
            check_if_match(if_match.as_deref(), &stored.resource_version)?;
            let identity = ClusterIdentity {
                name: &stored.name,
                target_project_id: stored.target_project_id.as_deref(),
            };
            let change = validate_cluster_update(request, identity, state.release_defaults())
                .map_err(ApiError::validation)?;
            let updated = clusters::update(conn, &caller, id, &change, None, now)
                .await
                .map_err(ApiError::from_cluster_storage)?;
            let written = if updated.spec_changed {
                outbox::insert(
                    conn,
                    &[cluster_event(
                        &updated.resource,
                        LifecycleAction::Updated,
                        now,
                    )],
                )
                .await?
            } else {
                outbox::Written::default()
            };
            Ok((updated.resource, written))
        })
        .await?;
    state.waker.wake(written);
    if !written.is_empty() {
        state
            .reconcile
            .fire(ResourceKind::Cluster, id, ReconcileReason::SpecChange);
    }
    Ok(with_etag(
        HttpResponse::Ok(),
        &cluster.resource_version,
        &cluster,
    ))
}

/// Soft-delete a cluster and its nodepools; emits `cluster.deleted` and one
/// `nodepool.deleted` per nodepool. Only `Pending` or `Failed` clusters unless `force=true`;
/// with `If-Match`, only the version it names.
#[utoipa::path(delete, path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = Uuid, Path), ("force" = Option<String>, Query, description = "`true`: delete whatever the phase (only the literal `true`; any other value does not force)"), ("If-Match" = Option<String>, Header, description = "delete only if the ETag matches (412 otherwise)")),
    responses((status = 202, description = "Accepted", body = DeleteClusterResponse), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match the current ETag", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_cluster(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let force = Query::parse(&req, &["force"])?.force();
    let if_match = if_match(req.headers());
    let caller = caller.0;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    let written = conn.transaction::<_, ApiError, _>(async |conn| {
        let cluster = clusters::lock_live(conn, &caller, id).await.map_err(ApiError::from_cluster_storage)?;
        // Evaluated before the method, as for PUT (RFC 9110 §13.1.1): a client deleting only
        // the version it saw must not delete one changed since.
        check_if_match(if_match.as_deref(), &cluster.resource_version)?;
        let phase = cluster.status.phase;
        if !force && !matches!(phase, Phase::Pending | Phase::Failed) {
            return Err(ApiError::new(
                ErrorCode::ClusterNotDeletable,
                format!(
                    "cluster '{}' is {}; only Pending or Failed clusters can be deleted, use ?force=true to delete it anyway",
                    cluster.name,
                    phase.as_str()
                ),
            ));
        }
        let deleted = clusters::mark_deleted(conn, id, now).await.map_err(ApiError::from_cluster_storage)?;
        let mut events = vec![cluster_event(&deleted.cluster, LifecycleAction::Deleted, now)];
        events.extend(
            deleted.nodepools.iter().map(|np| super::nodepools::nodepool_event(np, LifecycleAction::Deleted, now)),
        );
        Ok(outbox::insert(conn, &events).await?)
    })
    .await?;
    state.waker.wake(written);
    Ok(HttpResponse::Accepted().json(DeleteClusterResponse {
        message: "cluster deletion initiated",
        cluster_id: id,
    }))
}

/// List the nodepools of a cluster (like `GET /nodepools?clusterId=`).
#[utoipa::path(get, path = "/api/v1/clusters/{id}/nodepools", tag = "nodepools",
    params(("id" = Uuid, Path), super::ListParams),
    responses((status = 200, description = "OK", body = NodePoolList), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_cluster_nodepools(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let query = Query::parse(&req, &LIST_PARAMS)?.list_query()?;
    let mut conn = state.pool().get().await?;
    clusters::get(&mut conn, &caller.0, id)
        .await?
        .ok_or_else(ApiError::cluster_not_found)?;
    let page = cls_storage::nodepools::list(&mut conn, &caller.0, Some(id), &query).await?;
    Ok(HttpResponse::Ok().json(NodePoolList {
        nodepools: page.items,
        total: page.total,
        limit: query.limit,
        offset: query.offset,
    }))
}

/// Create a nodepool in this cluster (like `POST /nodepools` with `cluster_id` from the path).
#[utoipa::path(post, path = "/api/v1/clusters/{id}/nodepools", tag = "nodepools", request_body = CreateNodePoolRequest,
    params(("id" = Uuid, Path), super::IdempotencyParams),
    responses((status = 201, description = "Created", body = NodePool, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Idempotency-Key reused with a different request", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_cluster_nodepool(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let cluster_id = path_id(&id)?;
    let request = creation_body(&req, &body)?;
    if let Some(sent) = &request.cluster_id
        && Uuid::try_parse(sent).ok() != Some(cluster_id)
    {
        return Err(ApiError::field(
            "cluster_id",
            "must match the cluster in the path (or be omitted)",
        ));
    }
    create_nodepool_in(
        &state,
        caller.0,
        &req,
        cluster_id,
        request,
        &body,
        ApiError::cluster_not_found,
    )
    .await
}
