//! `/api/v1/nodepools…` handlers.

use actix_web::{HttpRequest, HttpResponse, web};
use cls_domain::ErrorCode;
use cls_domain::FieldError;
use cls_domain::event::{Envelope, LifecycleAction, ResourceRef};
use cls_domain::identity::Caller;
use cls_domain::reconcile::ReconcileReason;
use cls_domain::resource::{
    CreateNodePoolRequest, NodePool, ResourceKind, SERVER_OWNED_FIELDS, SERVER_OWNED_ON_UPDATE,
    UpdateNodePoolRequest,
};
use cls_domain::validate::{
    NodePoolIdentity, nodepool_create_violations, nodepool_update_violations,
    validate_nodepool_create, validate_nodepool_update,
};
use cls_storage::{StoredNodePool, clusters, nodepools, outbox};
use diesel_async::AsyncConnection as _;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::clusters::LIST_PARAMS;
use super::{
    Created, Idempotent, Query, check_if_match, if_match, json_body, lifecycle_event, path_id,
    with_etag,
};
use crate::AppState;
use crate::auth::Authenticated;
use crate::error::{ApiError, Problem};

/// `GET /api/v1/nodepools` response. Its nodepools are written as read ([`StoredNodePool`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodePoolList {
    #[schema(value_type = Vec<NodePool>)]
    pub(crate) nodepools: Vec<StoredNodePool>,
    pub(crate) total: i64,
    pub(crate) limit: i64,
    pub(crate) offset: i64,
}

/// `DELETE /api/v1/nodepools/{id}` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeleteNodePoolResponse {
    pub(crate) message: &'static str,
    pub(crate) nodepool_id: Uuid,
}

/// The lifecycle event of a nodepool change.
pub(crate) fn nodepool_event(
    nodepool: &NodePool,
    action: LifecycleAction,
    now: OffsetDateTime,
) -> Envelope {
    lifecycle_event(
        ResourceRef::NodePool {
            cluster_id: nodepool.cluster_id,
            nodepool_id: nodepool.id,
        },
        nodepool.generation,
        action,
        now,
    )
}

/// List nodepools the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/nodepools", tag = "nodepools",
    params(("clusterId" = Option<String>, Query, pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$", description = "only this cluster's nodepools: its canonical UUID (empty: any cluster)"), super::ListParams),
    responses((status = 200, description = "OK", body = NodePoolList), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_nodepools(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut allowed = LIST_PARAMS.to_vec();
    allowed.push("clusterId");
    let params = Query::parse(&req, &allowed)?;
    let query = params.list_query()?;
    let cluster_id = match params.get("clusterId") {
        None | Some("") => None,
        // Canonical, as in paths.
        Some(raw) => Some(super::canonical_uuid(raw).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("clusterId must be a canonical UUID (got '{raw}')"),
            )
        })?),
    };
    let mut conn = state.pool().get().await?;
    let page = nodepools::list(&mut conn, &caller.0, cluster_id, &query).await?;
    Ok(HttpResponse::Ok().json(NodePoolList {
        nodepools: page.items,
        total: page.total,
        limit: query.limit,
        offset: query.offset,
    }))
}

/// Create a nodepool; emits `nodepool.created`. A missing `release.version` inherits the
/// cluster's. Supports `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/nodepools", tag = "nodepools", request_body = CreateNodePoolRequest,
    params(super::IdempotencyParams),
    responses((status = 201, description = "Created", body = NodePool, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Idempotency-Key reused with a different request", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_nodepool(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request = creation_body(&req, &body)?;
    let cluster_id = match request.cluster_id.as_deref().map(Uuid::try_parse) {
        Some(Ok(id)) => id,
        problem => {
            let message = if problem.is_none() {
                "is required"
            } else {
                "must be a UUID"
            };
            let mut errors = vec![FieldError::new("cluster_id", message)];
            if let Err(more) = validate_nodepool_create(request, None) {
                errors.extend(more);
            }
            return Err(ApiError::validation(errors));
        }
    };
    let not_visible = || {
        ApiError::new(
            ErrorCode::InvalidClusterId,
            "cluster_id does not name a cluster you can add nodepools to",
        )
    };
    create_nodepool_in(
        &state,
        caller.0,
        &req,
        cluster_id,
        request,
        &body,
        not_visible,
    )
    .await
}

/// The body of a nodepool creation (both POST routes).
pub(crate) fn creation_body(
    req: &HttpRequest,
    body: &[u8],
) -> Result<CreateNodePoolRequest, ApiError> {
    json_body(req, body, &SERVER_OWNED_FIELDS, nodepool_create_violations)
}

/// Creates a nodepool under `cluster_id` (both POST routes). `not_visible` is the error when
/// the caller cannot see that live cluster.
pub(crate) async fn create_nodepool_in(
    state: &AppState,
    caller: Caller,
    req: &HttpRequest,
    cluster_id: Uuid,
    request: CreateNodePoolRequest,
    body: &[u8],
    not_visible: fn() -> ApiError,
) -> Result<HttpResponse, ApiError> {
    // Report every field problem before touching the database.
    validate_nodepool_create(request.clone(), None).map_err(ApiError::validation)?;
    let idempotent = Idempotent::from_request(req, body)?;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    let (outcome, written) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            if let Some(idempotent) = &idempotent
                && let Some(stored) = idempotent
                    .claim(conn, caller.email(), now, state.idempotency_ttl)
                    .await?
            {
                return Ok((Created::Replay(stored), outbox::Written::default()));
            }
            let cluster = clusters::lock_live(conn, &caller, cluster_id)
                .await
                .map_err(|e| match e {
                    cls_storage::StorageError::NotFound => not_visible(),
                    other => ApiError::from(other),
                })?;
            let new = validate_nodepool_create(request, cluster.spec.release_version())
                .map_err(ApiError::validation)?;
            let id = Uuid::now_v7();
            let event = lifecycle_event(
                ResourceRef::NodePool {
                    cluster_id: cluster.id,
                    nodepool_id: id,
                },
                1,
                LifecycleAction::Created,
                now,
            );
            let (nodepool, written) = nodepools::create_announced(
                conn,
                &cluster,
                caller.email(),
                &new,
                id,
                now,
                &[event],
            )
            .await?;
            let created = match &idempotent {
                Some(idempotent) => idempotent.complete(conn, caller.email(), nodepool).await?,
                None => Created::New(nodepool),
            };
            Ok((created, written))
        })
        .await?;
    state.waker.wake(written);
    Ok(outcome.respond("/api/v1/nodepools"))
}

/// Get a nodepool (with its aggregated status) and its `ETag`.
#[utoipa::path(get, path = "/api/v1/nodepools/{id}", tag = "nodepools", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = NodePool, headers(("ETag" = String))), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_nodepool(
    state: web::Data<AppState>,
    caller: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let mut conn = state.pool().get().await?;
    let nodepool = nodepools::get(&mut conn, &caller.0, id)
        .await?
        .ok_or_else(ApiError::nodepool_not_found)?;
    Ok(with_etag(
        HttpResponse::Ok(),
        &nodepool.resource_version(),
        &nodepool,
    ))
}

/// Replace a nodepool's spec (and optionally labels); emits `nodepool.updated` when the spec
/// changed.
#[utoipa::path(put, path = "/api/v1/nodepools/{id}", tag = "nodepools", request_body = UpdateNodePoolRequest,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "OK", body = NodePool, headers(("ETag" = String))), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflict: name taken, version mismatch or not deletable", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match the current ETag", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Content-Type is not application/json", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update_nodepool(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let request: UpdateNodePoolRequest = json_body(
        &req,
        &body,
        &SERVER_OWNED_ON_UPDATE,
        nodepool_update_violations,
    )?;
    let if_match = if_match(req.headers());
    let caller = caller.0;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    let (nodepool, written) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let stored = nodepools::lock_live(conn, &caller, id)
                .await
                .map_err(ApiError::from_nodepool_storage)?;
            check_if_match(if_match.as_deref(), &stored.resource_version)?;
            let cluster = clusters::get(conn, &caller, stored.cluster_id)
                .await?
                .ok_or_else(ApiError::nodepool_not_found)?
                .into_domain()?;
            let cluster_id = stored.cluster_id.to_string();
            let identity = NodePoolIdentity {
                name: &stored.name,
                cluster_id: &cluster_id,
            };
            let change =
                validate_nodepool_update(request, identity, cluster.spec.release_version())
                    .map_err(ApiError::validation)?;
            let updated = nodepools::update(conn, &caller, id, &change, None, now)
                .await
                .map_err(ApiError::from_nodepool_storage)?;
            let written = if updated.spec_changed {
                outbox::insert(
                    conn,
                    &[nodepool_event(
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
            .fire(ResourceKind::NodePool, id, ReconcileReason::SpecChange);
    }
    Ok(with_etag(
        HttpResponse::Ok(),
        &nodepool.resource_version,
        &nodepool,
    ))
}

/// Soft-delete a nodepool; emits `nodepool.deleted`. `force` is accepted (nodepools have no
/// phase guard); with `If-Match`, only the version it names is deleted.
#[utoipa::path(delete, path = "/api/v1/nodepools/{id}", tag = "nodepools",
    params(("id" = Uuid, Path), ("force" = Option<String>, Query, description = "accepted and ignored: nodepools have no phase guard"), ("If-Match" = Option<String>, Header, description = "delete only if the ETag matches (412 otherwise)")),
    responses((status = 202, description = "Accepted", body = DeleteNodePoolResponse), (status = 400, description = "Bad request: invalid id, query or body (`errors` lists every violation)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid identity", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match the current ETag", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_nodepool(
    state: web::Data<AppState>,
    caller: Authenticated,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    Query::parse(&req, &["force"])?;
    let if_match = if_match(req.headers());
    let caller = caller.0;
    let now = OffsetDateTime::now_utc();
    let mut conn = state.pool().get().await?;
    let written = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let stored = nodepools::lock_live(conn, &caller, id)
                .await
                .map_err(ApiError::from_nodepool_storage)?;
            check_if_match(if_match.as_deref(), &stored.resource_version)?;
            let deleted = nodepools::mark_deleted(conn, id, now)
                .await
                .map_err(ApiError::from_nodepool_storage)?;
            Ok(outbox::insert(
                conn,
                &[nodepool_event(&deleted, LifecycleAction::Deleted, now)],
            )
            .await?)
        })
        .await?;
    state.waker.wake(written);
    Ok(HttpResponse::Accepted().json(DeleteNodePoolResponse {
        message: "nodepool deletion initiated",
        nodepool_id: id,
    }))
}
