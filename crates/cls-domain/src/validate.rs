//! Request validation (SPEC §3.2) and defaults. Every function returns **all** violations,
//! each with the JSON path of the field and a message saying which rule failed.

use crate::error::FieldError;
use crate::resource::{
    CHANNEL_GROUPS, ClusterRelease, ClusterSpec, CreateClusterRequest, CreateNodePoolRequest,
    Labels, NodePoolRelease, NodePoolSpec, TAINT_EFFECTS, UPGRADE_TYPES, UpdateClusterRequest,
    UpdateNodePoolRequest,
};

/// Release defaults for clusters, from `DEFAULT_CLUSTER_VERSION` / `DEFAULT_CHANNEL_GROUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseDefaults<'a> {
    pub version: &'a str,
    pub channel_group: &'a str,
}

pub const MAX_NAME_LEN: usize = 63;
pub const MAX_INFRA_ID_LEN: usize = 15;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
pub const MAX_TARGET_PROJECT_ID_LEN: usize = 255;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_LEN: usize = 63;
pub const MAX_REPLICAS: i64 = 1000;

/// A validated cluster creation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCluster {
    pub name: String,
    pub description: Option<String>,
    pub target_project_id: Option<String>,
    pub labels: Labels,
    pub spec: ClusterSpec,
}

/// A validated cluster update. `None` keeps the stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterUpdate {
    pub spec: ClusterSpec,
    pub labels: Option<Labels>,
    pub description: Option<String>,
    pub resource_version: Option<String>,
}

/// A validated nodepool creation (the cluster id is resolved by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNodePool {
    pub name: String,
    pub labels: Labels,
    pub spec: NodePoolSpec,
}

/// A validated nodepool update. `None` keeps the stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePoolUpdate {
    pub spec: NodePoolSpec,
    pub labels: Option<Labels>,
    pub resource_version: Option<String>,
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Applies the cluster release defaults and normalises the platform type to lower case.
pub fn apply_cluster_defaults(spec: &mut ClusterSpec, defaults: ReleaseDefaults<'_>) {
    let release = spec.release.get_or_insert_with(ClusterRelease::default);
    if release
        .version
        .as_deref()
        .is_none_or(|v| v.trim().is_empty())
    {
        release.version = Some(defaults.version.to_owned());
    }
    if release
        .channel_group
        .as_deref()
        .is_none_or(|v| v.trim().is_empty())
    {
        release.channel_group = Some(defaults.channel_group.to_owned());
    }
    if let Some(platform) = &mut spec.platform {
        platform.platform_type = platform
            .platform_type
            .as_deref()
            .map(str::to_ascii_lowercase);
    }
}

/// Applies nodepool defaults: a missing `release.version` inherits the cluster's version.
pub fn apply_nodepool_defaults(spec: &mut NodePoolSpec, cluster_version: Option<&str>) {
    if let Some(version) = cluster_version {
        let release = spec.release.get_or_insert_with(NodePoolRelease::default);
        if release
            .version
            .as_deref()
            .is_none_or(|v| v.trim().is_empty())
        {
            release.version = Some(version.to_owned());
        }
    }
    if let Some(platform) = &mut spec.platform {
        platform.platform_type = platform
            .platform_type
            .as_deref()
            .map(str::to_ascii_lowercase);
    }
}

/// Validates `POST /clusters`, applying defaults.
pub fn validate_cluster_create(
    req: CreateClusterRequest,
    defaults: ReleaseDefaults<'_>,
) -> Result<NewCluster, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_name("name", req.name.as_deref(), &mut errors);
    check_description(req.description.as_deref(), &mut errors);
    if let Some(project) = &req.target_project_id
        && project.chars().count() > MAX_TARGET_PROJECT_ID_LEN
    {
        errors.push(FieldError::new(
            "target_project_id",
            format!("must be {MAX_TARGET_PROJECT_ID_LEN} characters or less"),
        ));
    }
    let labels = req.labels.unwrap_or_default();
    check_labels("labels", &labels, &mut errors);
    let spec = cluster_spec(req.spec, defaults, &mut errors);
    match (req.name, spec) {
        (Some(name), Some(spec)) if errors.is_empty() => Ok(NewCluster {
            name,
            description: req.description,
            target_project_id: req.target_project_id,
            labels,
            spec,
        }),
        _ => Err(errors),
    }
}

/// The immutable fields of a stored cluster, to check an update against.
#[derive(Debug, Clone, Copy)]
pub struct ClusterIdentity<'a> {
    pub name: &'a str,
    pub target_project_id: Option<&'a str>,
}

/// Validates `PUT /clusters/{id}`, applying defaults. Immutable fields may be sent only with
/// their stored values.
pub fn validate_cluster_update(
    req: UpdateClusterRequest,
    stored: ClusterIdentity<'_>,
    defaults: ReleaseDefaults<'_>,
) -> Result<ClusterUpdate, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_immutable("name", req.name.as_deref(), Some(stored.name), &mut errors);
    if req.target_project_id.is_some() {
        check_immutable(
            "target_project_id",
            req.target_project_id.as_deref(),
            stored.target_project_id,
            &mut errors,
        );
    }
    check_description(req.description.as_deref(), &mut errors);
    if let Some(labels) = &req.labels {
        check_labels("labels", labels, &mut errors);
    }
    let spec = cluster_spec(req.spec, defaults, &mut errors);
    match spec {
        Some(spec) if errors.is_empty() => Ok(ClusterUpdate {
            spec,
            labels: req.labels,
            description: req.description,
            resource_version: req.resource_version,
        }),
        _ => Err(errors),
    }
}

/// What [`validate_cluster_create`] finds, to report beside a body's structural problems.
pub fn cluster_create_violations(
    req: CreateClusterRequest,
    defaults: ReleaseDefaults<'_>,
) -> Vec<FieldError> {
    validate_cluster_create(req, defaults)
        .err()
        .unwrap_or_default()
}

/// What [`validate_cluster_update`] finds without the stored cluster (the immutable fields
/// are checked once it is loaded), to report beside a body's structural problems.
pub fn cluster_update_violations(
    req: UpdateClusterRequest,
    defaults: ReleaseDefaults<'_>,
) -> Vec<FieldError> {
    let (name, project) = (req.name.clone(), req.target_project_id.clone());
    let as_sent = ClusterIdentity {
        name: name.as_deref().unwrap_or_default(),
        target_project_id: project.as_deref(),
    };
    validate_cluster_update(req, as_sent, defaults)
        .err()
        .unwrap_or_default()
}

/// Validates a nodepool creation, applying defaults from the cluster's release version.
pub fn validate_nodepool_create(
    req: CreateNodePoolRequest,
    cluster_version: Option<&str>,
) -> Result<NewNodePool, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_name("name", req.name.as_deref(), &mut errors);
    let labels = req.labels.unwrap_or_default();
    check_labels("labels", &labels, &mut errors);
    let spec = nodepool_spec(req.spec, cluster_version, &mut errors);
    match (req.name, spec) {
        (Some(name), Some(spec)) if errors.is_empty() => Ok(NewNodePool { name, labels, spec }),
        _ => Err(errors),
    }
}

/// The immutable fields of a stored nodepool, to check an update against.
#[derive(Debug, Clone, Copy)]
pub struct NodePoolIdentity<'a> {
    pub name: &'a str,
    pub cluster_id: &'a str,
}

/// What [`validate_nodepool_create`] finds without the cluster, to report beside a body's
/// structural problems.
pub fn nodepool_create_violations(req: CreateNodePoolRequest) -> Vec<FieldError> {
    validate_nodepool_create(req, None)
        .err()
        .unwrap_or_default()
}

/// What [`validate_nodepool_update`] finds without the stored nodepool and its cluster, to
/// report beside a body's structural problems.
pub fn nodepool_update_violations(req: UpdateNodePoolRequest) -> Vec<FieldError> {
    let (name, cluster_id) = (req.name.clone(), req.cluster_id.clone());
    let as_sent = NodePoolIdentity {
        name: name.as_deref().unwrap_or_default(),
        cluster_id: cluster_id.as_deref().unwrap_or_default(),
    };
    validate_nodepool_update(req, as_sent, None)
        .err()
        .unwrap_or_default()
}

/// Validates `PUT /nodepools/{id}`, applying defaults from the cluster's release version.
pub fn validate_nodepool_update(
    req: UpdateNodePoolRequest,
    stored: NodePoolIdentity<'_>,
    cluster_version: Option<&str>,
) -> Result<NodePoolUpdate, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_immutable("name", req.name.as_deref(), Some(stored.name), &mut errors);
    check_immutable(
        "cluster_id",
        req.cluster_id.as_deref(),
        Some(stored.cluster_id),
        &mut errors,
    );
    if let Some(labels) = &req.labels {
        check_labels("labels", labels, &mut errors);
    }
    let spec = nodepool_spec(req.spec, cluster_version, &mut errors);
    match spec {
        Some(spec) if errors.is_empty() => Ok(NodePoolUpdate {
            spec,
            labels: req.labels,
            resource_version: req.resource_version,
        }),
        _ => Err(errors),
    }
}

fn cluster_spec(
    spec: Option<ClusterSpec>,
    defaults: ReleaseDefaults<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<ClusterSpec> {
    let Some(mut spec) = spec else {
        errors.push(FieldError::new("spec", "is required"));
        return None;
    };
    apply_cluster_defaults(&mut spec, defaults);
    check_cluster_spec(&spec, errors);
    Some(spec)
}

fn nodepool_spec(
    spec: Option<NodePoolSpec>,
    cluster_version: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<NodePoolSpec> {
    let Some(mut spec) = spec else {
        errors.push(FieldError::new("spec", "is required"));
        return None;
    };
    apply_nodepool_defaults(&mut spec, cluster_version);
    check_nodepool_spec(&spec, errors);
    Some(spec)
}

/// Checks a cluster spec after defaults have been applied.
pub fn check_cluster_spec(spec: &ClusterSpec, errors: &mut Vec<FieldError>) {
    let platform_type = spec.platform_type();
    match platform_type.as_deref() {
        None | Some("") => errors.push(FieldError::new("spec.platform.type", "is required")),
        Some("gcp") => check_infra_id(spec.infra_id.as_deref(), errors),
        Some(_) => {}
    }
    let release = spec.release.as_ref();
    match release.and_then(|r| r.version.as_deref()) {
        Some(v) if !v.trim().is_empty() => {}
        _ => errors.push(FieldError::new("spec.release.version", "is required")),
    }
    match release.and_then(|r| r.channel_group.as_deref()) {
        None => errors.push(FieldError::new("spec.release.channelGroup", "is required")),
        Some(group) if !CHANNEL_GROUPS.contains(&group) => errors.push(FieldError::new(
            "spec.release.channelGroup",
            format!(
                "must be one of {} (got '{group}')",
                CHANNEL_GROUPS.join(", ")
            ),
        )),
        Some(_) => {}
    }
}

fn check_infra_id(infra_id: Option<&str>, errors: &mut Vec<FieldError>) {
    const FIELD: &str = "spec.infraID";
    let Some(infra_id) = infra_id.filter(|s| !s.is_empty()) else {
        errors.push(FieldError::new(FIELD, "is required"));
        return;
    };
    let len = infra_id.chars().count();
    if len > MAX_INFRA_ID_LEN {
        errors.push(FieldError::new(
            FIELD,
            format!("must be {MAX_INFRA_ID_LEN} characters or less (got {len})"),
        ));
    }
    let bytes = infra_id.as_bytes();
    let pattern_ok = bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !pattern_ok {
        errors.push(FieldError::new(
            FIELD,
            "must start with a lowercase letter and contain only lowercase letters, digits, or hyphens",
        ));
    }
}

/// Checks a nodepool spec after defaults have been applied.
pub fn check_nodepool_spec(spec: &NodePoolSpec, errors: &mut Vec<FieldError>) {
    if let Some(replicas) = spec.replicas
        && !(0..=MAX_REPLICAS).contains(&replicas)
    {
        errors.push(FieldError::new(
            "spec.replicas",
            format!("must be between 0 and {MAX_REPLICAS} (got {replicas})"),
        ));
    }
    if let Some(upgrade_type) = spec
        .management
        .as_ref()
        .and_then(|m| m.upgrade_type.as_deref())
        && !UPGRADE_TYPES.contains(&upgrade_type)
    {
        errors.push(FieldError::new(
            "spec.management.upgradeType",
            format!(
                "must be one of {} (got '{upgrade_type}')",
                UPGRADE_TYPES.join(", ")
            ),
        ));
    }
    let platform = spec.platform.as_ref();
    match platform.and_then(|p| p.platform_type.as_deref()) {
        None | Some("") => errors.push(FieldError::new("spec.platform.type", "is required")),
        Some(_) => {}
    }
    let Some(gcp) = platform.and_then(|p| p.gcp.as_ref()) else {
        return;
    };
    if gcp.instance_type.trim().is_empty() {
        errors.push(FieldError::new(
            "spec.platform.gcp.instanceType",
            "must not be empty",
        ));
    }
    if let Some(volume) = &gcp.root_volume
        && volume.size <= 0
    {
        errors.push(FieldError::new(
            "spec.platform.gcp.rootVolume.size",
            format!("must be a positive number of GiB (got {})", volume.size),
        ));
    }
    if let Some(labels) = &gcp.labels {
        check_labels("spec.platform.gcp.labels", labels, errors);
    }
    for (i, taint) in gcp.taints.iter().flatten().enumerate() {
        if taint.key.trim().is_empty() {
            errors.push(FieldError::new(
                format!("spec.platform.gcp.taints[{i}].key"),
                "must not be empty",
            ));
        }
        if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
            errors.push(FieldError::new(
                format!("spec.platform.gcp.taints[{i}].effect"),
                format!(
                    "must be one of {} (got '{}')",
                    TAINT_EFFECTS.join(", "),
                    taint.effect
                ),
            ));
        }
    }
}

fn check_name(field: &str, name: Option<&str>, errors: &mut Vec<FieldError>) {
    match name {
        None | Some("") => errors.push(FieldError::new(field, "is required")),
        Some(name) if name.chars().count() > MAX_NAME_LEN => errors.push(FieldError::new(
            field,
            format!("must be {MAX_NAME_LEN} characters or less (got {})", name.chars().count()),
        )),
        Some(name) if !is_dns_label(name) => errors.push(FieldError::new(
            field,
            "must be a lowercase DNS label: start with a lowercase letter, contain only lowercase letters, digits, or hyphens, and end with a letter or digit",
        )),
        Some(_) => {}
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(description) = description
        && description.chars().count() > MAX_DESCRIPTION_LEN
    {
        errors.push(FieldError::new(
            "description",
            format!("must be {MAX_DESCRIPTION_LEN} characters or less"),
        ));
    }
}

fn check_immutable(
    field: &str,
    sent: Option<&str>,
    stored: Option<&str>,
    errors: &mut Vec<FieldError>,
) {
    if let Some(sent) = sent
        && Some(sent) != stored
    {
        errors.push(FieldError::new(field, "is immutable and cannot be changed"));
    }
}

/// A label key or value character: letters, digits, `-`, `_`, `.`, `/`.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn check_labels(field: &str, labels: &Labels, errors: &mut Vec<FieldError>) {
    if labels.len() > MAX_LABELS {
        errors.push(FieldError::new(
            field,
            format!("must have at most {MAX_LABELS} entries"),
        ));
    }
    for (key, value) in labels {
        let path = format!("{field}.{key}");
        if key.is_empty() || key.len() > MAX_LABEL_LEN || !key.chars().all(is_label_char) {
            errors.push(FieldError::new(
                &path,
                format!("key must be 1-{MAX_LABEL_LEN} characters of letters, digits, '-', '_', '.' or '/'"),
            ));
        }
        if value.len() > MAX_LABEL_LEN || !value.chars().all(is_label_char) {
            errors.push(FieldError::new(
                &path,
                format!("value must be at most {MAX_LABEL_LEN} characters of letters, digits, '-', '_', '.' or '/'"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_json;
    use crate::resource::SERVER_OWNED_FIELDS;
    use serde_json::{Value, json};

    const DEFAULTS: ReleaseDefaults<'static> = ReleaseDefaults {
        version: "4.16.0",
        channel_group: "stable",
    };

    fn create_cluster(body: Value) -> Result<NewCluster, Vec<String>> {
        let req = parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
        validate_cluster_create(req, DEFAULTS)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    fn create_nodepool(body: Value) -> Result<NewNodePool, Vec<String>> {
        let req = parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
        validate_nodepool_create(req, Some("4.16.0"))
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    fn gcp_cluster(name: &str, infra_id: &str) -> Value {
        json!({"name": name, "spec": {"infraID": infra_id, "platform": {"type": "GCP"}}})
    }

    #[test]
    fn defaults_are_applied_from_arguments() {
        let cluster = create_cluster(gcp_cluster("c1", "infra-1")).unwrap();
        let release = cluster.spec.release.unwrap();
        assert_eq!(release.version.as_deref(), Some("4.16.0"));
        assert_eq!(release.channel_group.as_deref(), Some("stable"));
        assert_eq!(
            cluster.spec.platform.unwrap().platform_type.as_deref(),
            Some("gcp")
        );
        let mut spec = ClusterSpec::default();
        apply_cluster_defaults(
            &mut spec,
            ReleaseDefaults {
                version: "9",
                channel_group: "eus",
            },
        );
        assert_eq!(spec.release.unwrap().channel_group.as_deref(), Some("eus"));
    }

    #[test]
    fn given_release_values_win_over_defaults() {
        let mut body = gcp_cluster("c1", "infra");
        body["spec"]["release"] = json!({"version": "4.17.1", "channelGroup": "fast"});
        let release = create_cluster(body).unwrap().spec.release.unwrap();
        assert_eq!(
            (release.version.as_deref(), release.channel_group.as_deref()),
            (Some("4.17.1"), Some("fast"))
        );
    }

    #[test]
    fn infra_id_rules_say_which_rule_failed() {
        assert_eq!(
            create_cluster(gcp_cluster("c1", "abcdefghijklmnop")).unwrap_err(),
            vec!["spec.infraID: must be 15 characters or less (got 16)"]
        );
        assert_eq!(
            create_cluster(gcp_cluster("c1", "1abc")).unwrap_err(),
            vec![
                "spec.infraID: must start with a lowercase letter and contain only lowercase letters, digits, or hyphens"
            ]
        );
        assert_eq!(
            create_cluster(gcp_cluster("c1", "Abcdefghijklmnopq"))
                .unwrap_err()
                .len(),
            2,
            "both infraID rules reported"
        );
        assert_eq!(
            create_cluster(gcp_cluster("c1", "")).unwrap_err(),
            vec!["spec.infraID: is required"]
        );
        // Exactly 15 is fine; a non-GCP platform has no infraID rule.
        assert!(create_cluster(gcp_cluster("c1", "abcdefghijklmno")).is_ok());
        assert!(
            create_cluster(json!({"name": "c1", "spec": {"platform": {"type": "aws"}}})).is_ok()
        );
    }

    #[test]
    fn all_violations_are_reported_together() {
        let errors = create_cluster(json!({
            "name": "Bad_Name",
            "labels": {"ok": "fine", "bad key": "v"},
            "spec": {"infraID": "9x", "platform": {"type": "gcp"},
                     "release": {"channelGroup": "nightly"}}
        }))
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                "name: must be a lowercase DNS label: start with a lowercase letter, contain only lowercase letters, digits, or hyphens, and end with a letter or digit",
                "labels.bad key: key must be 1-63 characters of letters, digits, '-', '_', '.' or '/'",
                "spec.infraID: must start with a lowercase letter and contain only lowercase letters, digits, or hyphens",
                "spec.release.channelGroup: must be one of stable, fast, candidate, eus (got 'nightly')",
            ]
        );
        assert_eq!(
            create_cluster(json!({})).unwrap_err(),
            vec!["name: is required", "spec: is required"]
        );
        assert_eq!(
            create_cluster(json!({"name": "c", "spec": {}})).unwrap_err(),
            vec!["spec.platform.type: is required"]
        );
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "a1", "a-b", &"a".repeat(63)] {
            assert!(create_cluster(gcp_cluster(ok, "x")).is_ok(), "{ok}");
        }
        for bad in ["1a", "-a", "a-", "A", "a.b", "a_b"] {
            assert!(create_cluster(gcp_cluster(bad, "x")).is_err(), "{bad}");
        }
        assert_eq!(
            create_cluster(gcp_cluster(&"a".repeat(64), "x")).unwrap_err(),
            vec!["name: must be 63 characters or less (got 64)"]
        );
    }

    #[test]
    fn update_checks_immutables_and_keeps_absent_fields() {
        let stored = ClusterIdentity {
            name: "c1",
            target_project_id: Some("proj"),
        };
        let update = |body: Value| {
            let req = parse_json(body.to_string().as_bytes(), &[]).unwrap();
            validate_cluster_update(req, stored, DEFAULTS)
                .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let ok = update(
            json!({"name": "c1", "target_project_id": "proj", "resource_version": "4",
            "spec": {"infraID": "x", "platform": {"type": "gcp"}}}),
        )
        .unwrap();
        assert_eq!(ok.labels, None);
        assert_eq!(ok.description, None);
        assert_eq!(ok.resource_version.as_deref(), Some("4"));
        assert_eq!(
            update(json!({"name": "c2", "target_project_id": "other"})).unwrap_err(),
            vec![
                "name: is immutable and cannot be changed",
                "target_project_id: is immutable and cannot be changed",
                "spec: is required",
            ]
        );
    }

    #[test]
    fn nodepool_rules_and_version_inheritance() {
        let np = create_nodepool(json!({"name": "np1", "spec": {"replicas": 3,
            "platform": {"type": "gcp", "gcp": {"instanceType": "n2-standard-4"}}}}))
        .unwrap();
        assert_eq!(np.spec.release.unwrap().version.as_deref(), Some("4.16.0"));
        let np = create_nodepool(
            json!({"name": "np1", "spec": {"release": {"version": "4.15.2"},
            "platform": {"type": "gcp"}}}),
        )
        .unwrap();
        assert_eq!(np.spec.release.unwrap().version.as_deref(), Some("4.15.2"));

        let errors = create_nodepool(json!({"name": "np-", "spec": {"replicas": 1001,
            "management": {"autoRepair": true, "upgradeType": "Rolling"},
            "platform": {"gcp": {"instanceType": " ", "rootVolume": {"size": 0, "type": "pd-ssd"},
                "taints": [{"key": "k", "effect": "Never"}]}}}}))
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                "name: must be a lowercase DNS label: start with a lowercase letter, contain only lowercase letters, digits, or hyphens, and end with a letter or digit",
                "spec.replicas: must be between 0 and 1000 (got 1001)",
                "spec.management.upgradeType: must be one of Replace, InPlace (got 'Rolling')",
                "spec.platform.type: is required",
                "spec.platform.gcp.instanceType: must not be empty",
                "spec.platform.gcp.rootVolume.size: must be a positive number of GiB (got 0)",
                "spec.platform.gcp.taints[0].effect: must be one of NoSchedule, PreferNoSchedule, NoExecute (got 'Never')",
            ]
        );
        assert!(
            create_nodepool(
                json!({"name": "np", "spec": {"replicas": 0, "platform": {"type": "gcp"}}})
            )
            .is_ok()
        );
        assert!(
            create_nodepool(
                json!({"name": "np", "spec": {"replicas": -1, "platform": {"type": "gcp"}}})
            )
            .is_err()
        );
    }

    #[test]
    fn nodepool_update_checks_immutables() {
        let stored = NodePoolIdentity {
            name: "np",
            cluster_id: "c-id",
        };
        let req = parse_json(
            json!({"name": "np", "cluster_id": "other", "spec": {"platform": {"type": "gcp"}}})
                .to_string()
                .as_bytes(),
            &[],
        )
        .unwrap();
        let errors = validate_nodepool_update(req, stored, None).unwrap_err();
        assert_eq!(
            errors,
            vec![FieldError::new(
                "cluster_id",
                "is immutable and cannot be changed"
            )]
        );
    }
}
