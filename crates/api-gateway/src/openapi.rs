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
        description = "Clusters and nodepools of a managed-Kubernetes offering. Identity comes from `X-User-Email` (header mode) or a bearer JWT (jwt mode).",
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
    modifiers(&Security, &CommonErrors),
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
