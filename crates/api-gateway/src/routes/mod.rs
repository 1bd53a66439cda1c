//! Route table and the helpers handlers share.

mod clusters;
mod nodepools;
mod status;
mod system;

use actix_cors::Cors;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use cls_domain::ErrorCode;
use cls_domain::FieldError;
use cls_domain::event::{Envelope, LifecycleAction, LifecycleEvent, ResourceRef};
use cls_domain::parse::{ParseError, parse_json_checked};
use cls_domain::resource::Labels;
use cls_domain::status::Phase;
use cls_storage::ListQuery;
use cls_storage::idempotency::{self, Claim, KeyedRequest, StoredResponse};
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

pub(crate) mod paths {
    pub(crate) use super::clusters::{
        __path_create_cluster, __path_create_cluster_nodepool, __path_delete_cluster,
        __path_get_cluster, __path_list_cluster_nodepools, __path_list_clusters,
        __path_update_cluster,
    };
    pub(crate) use super::nodepools::{
        __path_create_nodepool, __path_delete_nodepool, __path_get_nodepool, __path_list_nodepools,
        __path_update_nodepool,
    };
    pub(crate) use super::status::{
        __path_get_cluster_status, __path_get_nodepool_status, __path_put_cluster_status,
        __path_put_nodepool_status,
    };
    pub(crate) use super::system::{__path_health, __path_healthz, __path_info, __path_readyz};
}

/// Request bodies above this are refused with 413.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

pub(crate) fn json_payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY)
}

/// The public routes. Every known path answers a wrong method with 405 and `Allow`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    fn not_allowed(allow: &'static str) -> actix_web::Route {
        web::to(move || async move { Err::<HttpResponse, _>(ApiError::method_not_allowed(allow)) })
    }
    cfg.service(
        web::resource("/api/v1/clusters")
            .route(web::get().to(clusters::list_clusters))
            .route(web::post().to(clusters::create_cluster))
            .default_service(not_allowed("GET, POST")),
    )
    .service(
        web::resource("/api/v1/clusters/{id}")
            .route(web::get().to(clusters::get_cluster))
            .route(web::put().to(clusters::update_cluster))
            .route(web::delete().to(clusters::delete_cluster))
            .default_service(not_allowed("GET, PUT, DELETE")),
    )
    .service(
        web::resource("/api/v1/clusters/{id}/nodepools")
            .route(web::get().to(clusters::list_cluster_nodepools))
            .route(web::post().to(clusters::create_cluster_nodepool))
            .default_service(not_allowed("GET, POST")),
    )
    .service(
        web::resource("/api/v1/clusters/{id}/status")
            .route(web::get().to(status::get_cluster_status))
            .route(web::put().to(status::put_cluster_status))
            .default_service(not_allowed("GET, PUT")),
    )
    .service(
        web::resource("/api/v1/nodepools/{id}/status")
            .route(web::get().to(status::get_nodepool_status))
            .route(web::put().to(status::put_nodepool_status))
            .default_service(not_allowed("GET, PUT")),
    )
    .service(
        web::resource("/api/v1/nodepools")
            .route(web::get().to(nodepools::list_nodepools))
            .route(web::post().to(nodepools::create_nodepool))
            .default_service(not_allowed("GET, POST")),
    )
    .service(
        web::resource("/api/v1/nodepools/{id}")
            .route(web::get().to(nodepools::get_nodepool))
            .route(web::put().to(nodepools::update_nodepool))
            .route(web::delete().to(nodepools::delete_nodepool))
            .default_service(not_allowed("GET, PUT, DELETE")),
    );
    for (path, handler) in [
        ("/health", web::get().to(system::health)),
        ("/healthz", web::get().to(system::healthz)),
        ("/readyz", web::get().to(system::readyz)),
        ("/info", web::get().to(system::info)),
        ("/openapi.json", web::get().to(crate::openapi::document)),
    ] {
        cfg.service(
            web::resource(path)
                .route(handler)
                .default_service(not_allowed("GET")),
        );
    }
    cfg.service(crate::openapi::swagger_ui());
    cfg.default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::new(ErrorCode::RouteNotFound, "no such route"))
    }));
}

/// The admin port: metrics and probes.
pub(crate) fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(system::metrics))
        .route("/healthz", web::get().to(system::healthz))
        .route("/readyz", web::get().to(system::readyz));
}

/// CORS from `CORS_ALLOWED_ORIGINS`: off when empty; `*` allows any origin without
/// credentials; explicit origins may send credentials. Preflights need no authentication.
pub(crate) fn cors(origins: &[String]) -> Cors {
    let methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS"];
    let exposed = [
        header::ETAG,
        header::LOCATION,
        header::HeaderName::from_static(crate::request_id::HEADER),
    ];
    let base = Cors::default()
        .allowed_methods(methods)
        .allow_any_header()
        .expose_headers(exposed)
        .max_age(3600);
    match origins {
        [] => Cors::default(),
        [any] if any == "*" => base.allow_any_origin().send_wildcard(),
        explicit => explicit
            .iter()
            .fold(base.supports_credentials(), |cors, origin| {
                cors.allowed_origin(origin)
            }),
    }
}

/// Requires a JSON content type and parses the body into `T`, reporting unknown fields, keys
/// given twice and shape errors with their paths. Top-level `dropped` keys are ignored. When
/// the body has shape errors, `check` (the request's validation) runs on the rest, so every
/// violation is reported at once.
pub(crate) fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
    dropped: &[&str],
    check: impl FnOnce(T) -> Vec<FieldError>,
) -> Result<T, ApiError> {
    // The type without its parameters; media types compare case-insensitively.
    let content_type = req.content_type().to_ascii_lowercase();
    if content_type != "application/json" && !content_type.ends_with("+json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ));
    }
    parse_json_checked(body, dropped, check).map_err(|e| match e {
        ParseError::Syntax(message) => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {message}"),
        ),
        ParseError::Shape(errors) => ApiError::validation(errors),
    })
}

/// A UUID in its canonical 36-character form (either case): one spelling per resource.
pub(crate) fn canonical_uuid(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok().filter(|_| raw.len() == 36)
}

/// A path id: a canonical UUID ([`canonical_uuid`]).
pub(crate) fn path_id(raw: &str) -> Result<Uuid, ApiError> {
    canonical_uuid(raw)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidId, format!("'{raw}' is not a valid UUID")))
}

/// The strong ETag of a resource version.
pub(crate) fn etag(resource_version: &str) -> String {
    format!("\"{resource_version}\"")
}

/// Evaluates `If-Match` against the stored version (412 on mismatch). `*` matches any
/// existing resource; weak tags never match (strong comparison).
pub(crate) fn check_if_match(
    if_match: Option<&str>,
    resource_version: &str,
) -> Result<(), ApiError> {
    let Some(value) = if_match else { return Ok(()) };
    let matches = value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag(resource_version));
    if matches {
        Ok(())
    } else {
        Err(ApiError::from(
            cls_storage::StorageError::PreconditionFailed,
        ))
    }
}

/// The raw `If-Match` header (an unreadable one matches nothing).
pub(crate) fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
}

/// The lifecycle event of a change to `resource`, carrying the request's trace context.
pub(crate) fn lifecycle_event(
    resource: ResourceRef,
    generation: i64,
    action: LifecycleAction,
    now: time::OffsetDateTime,
) -> Envelope {
    LifecycleEvent {
        id: Uuid::now_v7(),
        resource,
        action,
        generation,
        timestamp: now,
        traceparent: cls_rpc::trace::current_traceparent(),
    }
    .envelope()
}

/// A POST sent with an `Idempotency-Key`: the key, what was asked (method and path) and a
/// hash of the body, so a retry can be recognised and a different request with the same key
/// refused.
pub(crate) struct Idempotent {
    key: String,
    scope: String,
    hash: String,
}

impl Idempotent {
    /// The request's idempotency details if it sent a key (1–255 visible ASCII characters).
    /// `body` must already have been parsed as JSON.
    pub(crate) fn from_request(
        req: &HttpRequest,
        body: &[u8],
    ) -> Result<Option<Idempotent>, ApiError> {
        let Some(value) = req.headers().get("idempotency-key") else {
            return Ok(None);
        };
        let key = match value.to_str() {
            Ok(key)
                if !key.is_empty()
                    && key.len() <= 255
                    && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                key
            }
            _ => {
                return Err(ApiError::field(
                    "Idempotency-Key",
                    "must be 1-255 visible ASCII characters",
                ));
            }
        };
        let scope = format!("POST {}", req.path());
        // The canonical JSON of the body, so whitespace and key order do not matter.
        let canonical = serde_json::from_slice::<serde_json::Value>(body)
            .unwrap_or_default()
            .to_string();
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update([0]);
        hasher.update(canonical.as_bytes());
        let hash = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Some(Idempotent {
            key: key.to_owned(),
            scope,
            hash,
        }))
    }

    /// Claims the key inside the request's transaction: `Some` is the stored response of an
    /// earlier identical request, to be replayed; a different request with the key is 422.
    pub(crate) async fn claim(
        &self,
        conn: &mut cls_storage::AsyncPgConnection,
        caller: &str,
        now: time::OffsetDateTime,
        ttl: time::Duration,
    ) -> Result<Option<StoredResponse>, ApiError> {
        let keyed = KeyedRequest {
            caller,
            key: &self.key,
            scope: &self.scope,
            hash: &self.hash,
        };
        match idempotency::claim(conn, keyed, now, ttl).await? {
            Claim::New => Ok(None),
            Claim::Replay(stored) => Ok(Some(stored)),
            Claim::Mismatch => Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request",
            )),
        }
    }

    /// Records the 201 response for `resource`, created under the claimed key (same
    /// transaction as [`Idempotent::claim`]), and returns it: the request answers with the
    /// very body its retries replay.
    pub(crate) async fn complete<T: CreatedResource>(
        &self,
        conn: &mut cls_storage::AsyncPgConnection,
        caller: &str,
        resource: T,
    ) -> Result<Created<T>, ApiError> {
        let response = StoredResponse {
            status: actix_web::http::StatusCode::CREATED.as_u16(),
            body: serde_json::to_string(&resource).map_err(|_| ApiError::internal())?,
            resource_id: Some(resource.id()),
        };
        idempotency::complete(conn, caller, &self.key, &response).await?;
        Ok(Created::Recorded {
            resource,
            body: response.body,
        })
    }
}

/// A resource a `POST` creates: what its 201 response needs besides the body.
pub(crate) trait CreatedResource: serde::Serialize {
    fn id(&self) -> Uuid;
    fn resource_version(&self) -> &str;
}

impl CreatedResource for cls_domain::resource::Cluster {
    fn id(&self) -> Uuid {
        self.id
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

impl CreatedResource for cls_domain::resource::NodePool {
    fn id(&self) -> Uuid {
        self.id
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// What a `POST` answers: the resource it just created, or, for a retry with the same
/// `Idempotency-Key`, the response stored by the first request.
pub(crate) enum Created<T> {
    /// Created without a key: encoded once, straight into the response body.
    New(T),
    /// Created under a key: `body` is the encoding stored with the key, sent as it is.
    Recorded { resource: T, body: String },
    /// A retry: the first request's response, byte for byte.
    Replay(StoredResponse),
}

/// The one field of a stored response that its replay needs for the `ETag`.
#[derive(serde::Deserialize)]
struct StoredVersion {
    resource_version: Option<String>,
}

impl<T: CreatedResource> Created<T> {
    /// The resource this request created; `None` for a replay, which created nothing.
    pub(crate) fn created(&self) -> Option<&T> {
        match self {
            Created::New(resource) | Created::Recorded { resource, .. } => Some(resource),
            Created::Replay(_) => None,
        }
    }

    /// The 201 response with `Location` (under `collection`) and `ETag`.
    pub(crate) fn respond(self, collection: &str) -> HttpResponse {
        use actix_web::http::StatusCode;
        use std::borrow::Cow;
        let (status, id, version) = match &self {
            Created::New(resource) | Created::Recorded { resource, .. } => (
                StatusCode::CREATED,
                Some(resource.id()),
                Some(Cow::Borrowed(resource.resource_version())),
            ),
            Created::Replay(stored) => (
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED),
                stored.resource_id,
                serde_json::from_str::<StoredVersion>(&stored.body)
                    .ok()
                    .and_then(|stored| stored.resource_version)
                    .map(Cow::Owned),
            ),
        };
        let mut response = HttpResponse::build(status);
        if let Some(id) = id {
            response.insert_header((header::LOCATION, format!("{collection}/{id}")));
        }
        if let Some(version) = version {
            response.insert_header((header::ETAG, etag(&version)));
        }
        match self {
            Created::New(resource) => response.json(&resource),
            Created::Recorded { body, .. } | Created::Replay(StoredResponse { body, .. }) => {
                response
                    .insert_header(header::ContentType::json())
                    .body(body)
            }
        }
    }
}

/// The list endpoints' query parameters, as the OpenAPI document states them
/// ([`Query::list_query`] parses them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "declares the parameters for the OpenAPI document only"
)]
pub(crate) struct ListParams {
    /// Page size, 1-100 (default 50); a larger value, however large, is clamped to 100, and
    /// the response says which was used.
    // No `format` in the document: see `openapi::AnyInteger`.
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Only resources in this aggregated phase (empty: any).
    #[param(pattern = "^(Pending|Progressing|Ready|Failed)?$")]
    status: Option<String>,
    /// `k=v,k2=v2`: every label must match.
    #[param(pattern = r"^([^,=]*[^,=\s][^,=]*=[^,]*)?(,([^,=]*[^,=\s][^,=]*=[^,]*)?)*$")]
    labels: Option<String>,
    /// Exact name (empty: any).
    name: Option<String>,
    /// Controllers only: include soft-deleted resources.
    include_deleted: Option<bool>,
}

/// The create endpoints' `Idempotency-Key` header, as the OpenAPI document states it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "declares the header for the OpenAPI document only"
)]
pub(crate) struct IdempotencyParams {
    /// retry-safe creation, scoped to the caller, kept 24 h: 1-255 visible ASCII characters
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// Query parameters, each allowed name at most once.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("malformed query string: {e}"),
                )
            })?
            .into_inner();
        for (name, value) in &pairs {
            if value.contains('\0') {
                // Postgres stores and compares no NUL in text: refused, never a 500.
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "query parameter '{name}' {}",
                        cls_domain::parse::NUL_MESSAGE
                    ),
                ));
            }
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "unknown query parameter '{name}' (allowed: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter '{name}' given more than once"),
                ));
            }
        }
        Ok(Query(pairs))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `force=true` (only the literal `true`).
    pub(crate) fn force(&self) -> bool {
        self.get("force") == Some("true")
    }

    /// The list parameters shared by clusters and nodepools (SPEC §3.3, §3.4).
    pub(crate) fn list_query(&self) -> Result<ListQuery, ApiError> {
        let bad = |message: String| ApiError::new(ErrorCode::InvalidQuery, message);
        let limit = match self.get("limit") {
            None => 50,
            // Any positive integer, however large, is clamped to 100 (SPEC §3.4).
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n >= 1 => n.min(100) as i64,
                Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => 100,
                _ => {
                    return Err(bad(format!(
                        "limit must be a positive integer; values above 100 are clamped to 100 (got '{raw}')"
                    )));
                }
            },
        };
        let offset = match self.get("offset") {
            None => 0,
            // Beyond 64 bits is refused too: answering with a smaller offset than was asked
            // for would misreport the page.
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    return Err(bad(format!(
                        "offset must be an integer from 0 to {} (got '{raw}')",
                        i64::MAX
                    )));
                }
            },
        };
        let phase = match self.get("status") {
            None | Some("") => None,
            Some(raw) => Some(Phase::parse(raw).ok_or_else(|| {
                bad(format!(
                    "status must be one of Pending, Progressing, Ready, Failed (got '{raw}')"
                ))
            })?),
        };
        let mut labels = Labels::new();
        for pair in self
            .get("labels")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    labels.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                _ => {
                    return Err(bad(format!(
                        "labels must be k=v pairs separated by commas (got '{pair}')"
                    )));
                }
            }
        }
        let include_deleted = match self.get("include_deleted") {
            None | Some("false") => false,
            Some("true") => true,
            Some(raw) => {
                return Err(bad(format!(
                    "include_deleted must be true or false (got '{raw}')"
                )));
            }
        };
        Ok(ListQuery {
            phase,
            labels,
            name: self
                .get("name")
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            include_deleted,
            limit,
            offset,
        })
    }
}

/// A JSON response with a strong ETag.
pub(crate) fn with_etag(
    mut response: actix_web::HttpResponseBuilder,
    resource_version: &str,
    body: &impl serde::Serialize,
) -> HttpResponse {
    response
        .insert_header((header::ETAG, etag(resource_version)))
        .json(body)
}
