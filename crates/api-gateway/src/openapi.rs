//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the domain types' schemas, and Swagger UI at `/docs`.

use actix_web::HttpResponse;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::paths::*;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "CLS — Cluster Lifecycle Service",
        description = "Clusters and nodepools of a managed-Kubernetes offering. Identity comes from `X-User-Email` (header mode) or a bearer JWT (jwt mode). No string, in a body or a query, may contain a NUL character (400).",
        version = env!("CARGO_PKG_VERSION"),
    ),
    paths(
        list_clusters, create_cluster, get_cluster, update_cluster, delete_cluster,
        list_cluster_nodepools, create_cluster_nodepool,
        list_nodepools, create_nodepool, get_nodepool, update_nodepool, delete_nodepool,
        get_cluster_status, put_cluster_status, get_nodepool_status, put_nodepool_status,
        health, healthz, readyz, info,
    ),
    components(schemas(cls_domain::resource::ClusterSpec, cls_domain::resource::NodePoolSpec)),
    modifiers(&Security, &CommonErrors, &ClosedObjects, &NestedNodePoolBody, &AnyInteger),
    tags(
        (name = "clusters", description = "Cluster lifecycle"),
        (name = "nodepools", description = "Nodepool lifecycle"),
        (name = "status", description = "Controller status reports and aggregated status"),
        (name = "system", description = "Health and service information"),
    )
)]
pub struct ApiDoc;

/// Declares the identity header (header mode) and bearer JWT (jwt mode) schemes.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "userEmail",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-User-Email"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Declares the failures any operation can answer with: 500 (a bug; nothing internal is
/// returned), 503 (a dependency such as Postgres is unavailable; `Retry-After` is set) and,
/// on the authenticated API, 429 (the caller's quota is used up; `Retry-After` is set).
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::error::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            let limited = path.starts_with("/api/");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("500".to_owned())
                    .or_insert_with(|| problem("Internal error").into());
                responses.entry("503".to_owned()).or_insert_with(|| {
                    problem("A dependency is unavailable; retry after Retry-After seconds").into()
                });
                if limited {
                    responses.entry("429".to_owned()).or_insert_with(|| {
                        problem("This caller's request quota is used up (RATE_LIMIT_PER_CALLER); retry after Retry-After seconds").into()
                    });
                }
            }
        }
    }
}

/// Says what the parser enforces: an object's fields are exactly those documented, so an unknown
/// field is a 400 (SPEC §3.1) and a response carries no undocumented one. Create bodies also
/// list the server-owned fields a client may echo from a GET, which are ignored.
struct ClosedObjects;

impl utoipa::Modify for ClosedObjects {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, schema) in &mut components.schemas {
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            if object.properties.is_empty() || object.additional_properties.is_some() {
                continue;
            }
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            if matches!(
                name.as_str(),
                "CreateClusterRequest" | "CreateNodePoolRequest"
            ) {
                for field in cls_domain::resource::SERVER_OWNED_FIELDS {
                    object
                        .properties
                        .entry(field.to_owned())
                        .or_insert_with(|| {
                            ObjectBuilder::new()
                                .schema_type(SchemaType::AnyValue)
                                .read_only(true)
                                .description(Some("Server-owned: accepted and ignored."))
                                .into()
                        });
                }
            }
        }
    }
}

/// `POST /clusters/{id}/nodepools` takes the cluster from its path: its body is the
/// `POST /nodepools` body where `cluster_id` is not required and, when sent, must name the same
/// cluster (400 otherwise), so the document marks it server-owned. (Runs after
/// [`ClosedObjects`], so the copy is closed too.)
struct NestedNodePoolBody;

impl utoipa::Modify for NestedNodePoolBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
        use utoipa::openapi::{Ref, RefOr};
        const NAME: &str = "CreateClusterNodePoolRequest";
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(mut body))) =
            components.schemas.get("CreateNodePoolRequest").cloned()
        else {
            return;
        };
        body.description = Some(
            "`POST /api/v1/clusters/{id}/nodepools`: the cluster comes from the path.".to_owned(),
        );
        body.required.retain(|field| field != "cluster_id");
        body.properties.insert(
            "cluster_id".to_owned(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .read_only(true)
                .description(Some("From the path; if sent, it must be the same cluster."))
                .into(),
        );
        components
            .schemas
            .insert(NAME.to_owned(), RefOr::T(Schema::Object(body)));
        let operation = openapi
            .paths
            .paths
            .get_mut("/api/v1/clusters/{id}/nodepools")
            .and_then(|item| item.post.as_mut());
        if let Some(RefOr::T(content)) =
            operation
                .and_then(|op| op.request_body.as_mut())
                .and_then(|body| match body {
                    RefOr::T(body) => body.content.get_mut("application/json"),
                    RefOr::Ref(_) => None,
                })
        {
            content.schema = Some(RefOr::Ref(Ref::from_schema_name(NAME)));
        }
    }
}

/// `limit` accepts any positive integer, beyond 64 bits too (clamped to 100): no `int64`
/// format, which would tell clients and fuzzers that larger values are refused.
struct AnyInteger;

impl utoipa::Modify for AnyInteger {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        for item in openapi.paths.paths.values_mut() {
            let parameters = item
                .get
                .iter_mut()
                .flat_map(|op| op.parameters.iter_mut().flatten());
            for parameter in parameters {
                if let RefOr::T(parameter) = parameter
                    && parameter.name == "limit"
                    && let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut()
                {
                    object.format = None;
                }
            }
        }
    }
}

/// The document as served at `/openapi.json`.
pub fn document_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

/// Swagger UI at `/docs/` (reading `/openapi.json`).
pub(crate) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}
