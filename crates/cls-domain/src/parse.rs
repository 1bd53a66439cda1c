//! Parsing request bodies: every unknown field is reported with its JSON path (typos must not
//! vanish silently), and a type error names the field it occurred in.

use serde::de::DeserializeOwned;

use crate::error::FieldError;

/// Why a request body could not be turned into a request value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (`INVALID_JSON`).
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not the expected shape (`VALIDATION_FAILED`), with every problem found.
    #[error("request body does not match the expected shape")]
    Shape(Vec<FieldError>),
}

/// Parses a JSON object body into `T`.
///
/// Top-level keys listed in `dropped` (server-owned fields) are removed first and ignored.
/// All unknown fields are collected, each as "unknown field" at its path; a type error or a
/// missing required field is reported at its path too.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], dropped: &[&str]) -> Result<T, ParseError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError::Syntax(e.to_string()))?;
    parse_value(&mut value, dropped)
}

/// Like [`parse_json`] for an already parsed value (the dropped keys are removed from it).
pub fn parse_value<T: DeserializeOwned>(
    value: &mut serde_json::Value,
    dropped: &[&str],
) -> Result<T, ParseError> {
    let Some(object) = value.as_object_mut() else {
        return Err(ParseError::Shape(vec![FieldError::new(
            "body",
            "request body must be a JSON object",
        )]));
    };
    for key in dropped {
        object.remove(*key);
    }
    let mut errors = Vec::new();
    let parsed = {
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            errors.push(FieldError::new(ignored_path(&path), "unknown field"));
        };
        let ignored = serde_ignored::Deserializer::new(value.take(), &mut on_unknown);
        serde_path_to_error::deserialize::<_, T>(ignored)
    };
    match parsed {
        Ok(parsed) if errors.is_empty() => Ok(parsed),
        Ok(_) => Err(ParseError::Shape(errors)),
        Err(err) => {
            let field = match err.path().to_string() {
                path if path == "." => "body".to_owned(),
                path => path,
            };
            errors.push(FieldError::new(field, err.into_inner().to_string()));
            Err(ParseError::Shape(errors))
        }
    }
}

/// Formats a path as `spec.platform.gcp.taints[0].key`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => match ignored_path(parent) {
            prefix if prefix.is_empty() => key.clone(),
            prefix => format!("{prefix}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{
        CreateClusterRequest, CreateNodePoolRequest, SERVER_OWNED_FIELDS, UpdateClusterRequest,
    };
    use serde_json::json;

    fn shape_errors<T: DeserializeOwned + std::fmt::Debug>(body: serde_json::Value) -> Vec<String> {
        match parse_json::<T>(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS) {
            Err(ParseError::Shape(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected shape errors, got {other:?}"),
        }
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_path() {
        let errors = shape_errors::<CreateClusterRequest>(json!({
            "name": "c1",
            "nmae": "typo",
            "spec": {
                "infraId": "wrong-case",
                "platform": {"type": "gcp", "gcp": {
                    "projectID": "p", "region": "r", "network": "n", "subnet": "s",
                    "workloadIdentity": {"projectNumber": "1", "poolID": "p", "providerID": "x",
                        "extra": true}
                }},
                "networking": {"clusterNetwork": [{"cidr": "10.0.0.0/14", "hostprefix": 23}]}
            }
        }));
        assert_eq!(
            errors,
            vec![
                "nmae: unknown field",
                "spec.infraId: unknown field",
                "spec.networking.clusterNetwork[0].hostprefix: unknown field",
                "spec.platform.gcp.workloadIdentity.extra: unknown field",
            ]
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let errors = shape_errors::<CreateNodePoolRequest>(json!({
            "name": "np", "spec": {"replicas": "three", "platform": {"type": "gcp"}}
        }));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("spec.replicas: invalid type: string \"three\""),
            "{errors:?}"
        );

        let errors = shape_errors::<CreateClusterRequest>(json!({
            "name": "c", "spec": {"platform": {"type": "gcp", "gcp": {"projectID": "p"}}}
        }));
        assert_eq!(errors, vec!["spec.platform.gcp: missing field `region`"]);
    }

    #[test]
    fn server_owned_fields_are_dropped_and_nulls_mean_absent() {
        let body = json!({
            "id": "x", "status": {"phase": "Ready"}, "generation": 9, "created_by": "evil@x.io",
            "created_at": "now", "updated_at": 1, "deleted_at": null, "resource_version": "7",
            "name": "c1", "description": null, "labels": null,
            "spec": {"platform": {"type": "GCP", "gcp": null}, "issuerURL": null}
        });
        let req: CreateClusterRequest =
            parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
        assert_eq!(req.name.as_deref(), Some("c1"));
        assert_eq!(req.description, None);
        let spec = req.spec.unwrap();
        assert_eq!(spec.issuer_url, None);
        assert_eq!(spec.platform_type().as_deref(), Some("gcp"));
    }

    #[test]
    fn update_keeps_resource_version_and_rejects_non_objects() {
        let req: UpdateClusterRequest =
            parse_json(br#"{"spec": {}, "resource_version": "3"}"#, &[]).unwrap();
        assert_eq!(req.resource_version.as_deref(), Some("3"));
        assert_eq!(
            parse_json::<UpdateClusterRequest>(b"[1]", &[]),
            Err(ParseError::Shape(vec![FieldError::new(
                "body",
                "request body must be a JSON object"
            )]))
        );
        assert!(matches!(
            parse_json::<UpdateClusterRequest>(b"{\"spec\": ", &[]),
            Err(ParseError::Syntax(_))
        ));
    }
}
