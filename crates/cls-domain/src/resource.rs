//! Clusters, nodepools and their specs (SPEC §3.1), with the wire shapes clients depend on.
//!
//! Inside specs fields are camelCase exactly as existing clients send them; at the top level
//! they are snake_case. An optional field that is `null` is the same as an absent one, and
//! absent optional fields are omitted on output. Unknown fields are detected by
//! [`crate::parse`], which reports every one of them with its path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::status::Status;
use crate::timefmt::rfc3339_utc;

/// User-supplied key/value labels.
pub type Labels = BTreeMap<String, String>;

/// The two kinds of resource CLS manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Cluster,
    NodePool,
}

impl ResourceKind {
    /// The word used in aggregated status messages ("Cluster is ready …").
    pub fn display_name(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "Cluster",
            ResourceKind::NodePool => "NodePool",
        }
    }

    /// The lower-case name used in event types and storage (`cluster`, `nodepool`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "cluster",
            ResourceKind::NodePool => "nodepool",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceKind> {
        match s {
            "cluster" => Some(ResourceKind::Cluster),
            "nodepool" => Some(ResourceKind::NodePool),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster spec

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterSpec {
    /// Required on GCP: 1–15 characters, a lowercase letter first, then lowercase letters,
    /// digits or hyphens.
    #[serde(rename = "infraID", default, skip_serializing_if = "Option::is_none")]
    pub infra_id: Option<String>,
    /// Required.
    // Optional in the type so that validation reports it with every other problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = ClusterPlatform)]
    pub platform: Option<ClusterPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ClusterRelease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(
        rename = "serviceAccountSigningKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_signing_key: Option<String>,
    #[serde(rename = "issuerURL", default, skip_serializing_if = "Option::is_none")]
    pub issuer_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterPlatform {
    /// Required; compared case-insensitively and stored lower-cased.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = String, min_length = 1)]
    pub platform_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpClusterPlatform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcpClusterPlatform {
    #[serde(rename = "projectID")]
    pub project_id: String,
    pub region: String,
    pub network: String,
    pub subnet: String,
    #[serde(
        rename = "endpointAccess",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_access: Option<String>,
    #[serde(
        rename = "workloadIdentity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_identity: Option<WorkloadIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadIdentity {
    #[serde(rename = "projectNumber")]
    pub project_number: String,
    #[serde(rename = "poolID")]
    pub pool_id: String,
    #[serde(rename = "providerID")]
    pub provider_id: String,
    #[serde(
        rename = "serviceAccountsRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_accounts_ref: Option<ServiceAccountsRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceAccountsRef {
    #[serde(rename = "nodePoolEmail")]
    pub node_pool_email: String,
    #[serde(rename = "controlPlaneEmail")]
    pub control_plane_email: String,
    #[serde(rename = "cloudControllerEmail")]
    pub cloud_controller_email: String,
    #[serde(
        rename = "storageEmail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_email: Option<String>,
    #[serde(
        rename = "imageRegistryEmail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub image_registry_email: Option<String>,
    #[serde(
        rename = "networkEmail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterRelease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Defaults to `DEFAULT_CLUSTER_VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Defaults to `DEFAULT_CHANNEL_GROUP` (when absent or blank); one of [`CHANNEL_GROUPS`].
    #[serde(
        rename = "channelGroup",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(pattern = r"^(stable|fast|candidate|eus|\s*)$")]
    pub channel_group: Option<String>,
}

/// The allowed values of `release.channelGroup`.
pub const CHANNEL_GROUPS: [&str; 4] = ["stable", "fast", "candidate", "eus"];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Networking {
    #[serde(
        rename = "clusterNetwork",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_network: Option<Vec<ClusterNetworkEntry>>,
    #[serde(
        rename = "serviceNetwork",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_network: Option<Vec<String>>,
    #[serde(rename = "podCIDR", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(
        rename = "serviceCIDR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cidr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterNetworkEntry {
    pub cidr: String,
    #[serde(
        rename = "hostPrefix",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(maximum = 255)]
    pub host_prefix: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dns {
    #[serde(rename = "baseDomain")]
    pub base_domain: String,
    #[serde(
        rename = "publicZone",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_zone: Option<String>,
    #[serde(
        rename = "privateZone",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_zone: Option<String>,
}

impl ClusterSpec {
    /// The platform type, lower-cased, if given.
    pub fn platform_type(&self) -> Option<String> {
        self.platform
            .as_ref()?
            .platform_type
            .as_deref()
            .map(str::to_ascii_lowercase)
    }

    /// The release version after defaults have been applied.
    pub fn release_version(&self) -> Option<&str> {
        self.release.as_ref()?.version.as_deref()
    }
}

// ---------------------------------------------------------------------------------------------
// NodePool spec

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePoolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Management>,
    /// Required.
    // Optional in the type so that validation reports it with every other problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = NodePoolPlatform)]
    pub platform: Option<NodePoolPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<NodePoolRelease>,
    #[serde(
        rename = "nodeDrainTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_drain_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Management {
    /// `Replace` or `InPlace`.
    #[serde(
        rename = "upgradeType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(pattern = "^(Replace|InPlace)$")]
    pub upgrade_type: Option<String>,
    #[serde(rename = "autoRepair")]
    pub auto_repair: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<ReplaceStrategy>,
}

/// The allowed values of `management.upgradeType`.
pub const UPGRADE_TYPES: [&str; 2] = ["Replace", "InPlace"];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplaceStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(
        rename = "rollingUpdate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollingUpdate {
    #[serde(
        rename = "maxUnavailable",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_unavailable: Option<IntOrString>,
    #[serde(rename = "maxSurge", default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

/// A Kubernetes-style count or percentage (`1` or `"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePoolPlatform {
    /// Required.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, value_type = String, min_length = 1)]
    pub platform_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpNodePoolPlatform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcpNodePoolPlatform {
    #[serde(rename = "instanceType")]
    #[schema(pattern = r"\S")]
    pub instance_type: String,
    #[serde(
        rename = "rootVolume",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub root_volume: Option<RootVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(
        rename = "serviceAccount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RootVolume {
    /// Size in GiB.
    #[schema(minimum = 1)]
    pub size: i64,
    #[serde(rename = "type")]
    pub volume_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Taint {
    #[schema(pattern = r"\S")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[schema(pattern = "^(NoSchedule|PreferNoSchedule|NoExecute)$")]
    pub effect: String,
}

/// The allowed values of a taint's `effect`.
pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePoolRelease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Inherited from the cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Stored resources, as returned by the API

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_project_id: Option<String>,
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Labels,
    pub created_by: String,
    pub generation: i64,
    pub resource_version: String,
    pub spec: ClusterSpec,
    pub status: Status,
    #[serde(with = "rfc3339_utc")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    pub updated_at: OffsetDateTime,
    #[serde(
        with = "rfc3339_utc::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodePool {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Labels,
    pub created_by: String,
    pub generation: i64,
    pub resource_version: String,
    pub spec: NodePoolSpec,
    pub status: Status,
    #[serde(with = "rfc3339_utc")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    pub updated_at: OffsetDateTime,
    #[serde(
        with = "rfc3339_utc::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// `POST /api/v1/clusters`. Server-owned fields a client echoes from a GET are ignored.
// They are dropped before parsing: [`SERVER_OWNED_FIELDS`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct CreateClusterRequest {
    /// A lowercase DNS label, unique among the owner's live clusters.
    #[serde(default)]
    #[schema(required = true, value_type = String, max_length = 63, pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_length = 255)]
    pub target_project_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    #[serde(default)]
    #[schema(required = true, value_type = ClusterSpec)]
    pub spec: Option<ClusterSpec>,
}

/// `PUT /api/v1/clusters/{id}`. Immutable fields may be sent back unchanged.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateClusterRequest {
    /// Replaces the stored spec.
    #[serde(default)]
    #[schema(required = true, value_type = ClusterSpec)]
    pub spec: Option<ClusterSpec>,
    /// Absent or `null`: the stored labels are kept.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    /// Absent or `null`: the stored description is kept.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// When given, must equal the stored one (409 `VERSION_CONFLICT` otherwise).
    #[serde(default)]
    pub resource_version: Option<String>,
    /// Immutable: may be sent back, unchanged (400 otherwise).
    #[serde(default)]
    #[schema(read_only)]
    pub name: Option<String>,
    /// Immutable: may be sent back, unchanged (400 otherwise).
    #[serde(default)]
    #[schema(read_only)]
    pub target_project_id: Option<String>,
}

/// `POST /api/v1/nodepools` (and `POST /clusters/{id}/nodepools`, where `cluster_id` comes
/// from the path).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct CreateNodePoolRequest {
    /// The cluster, one the caller may see (400 `INVALID_CLUSTER_ID` otherwise). Under
    /// `/clusters/{id}/nodepools` it comes from the path and may be left out.
    #[serde(default)]
    #[schema(required = true, value_type = Uuid)]
    pub cluster_id: Option<String>,
    /// A lowercase DNS label, unique among the cluster's live nodepools.
    #[serde(default)]
    #[schema(required = true, value_type = String, max_length = 63, pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    #[serde(default)]
    #[schema(required = true, value_type = NodePoolSpec)]
    pub spec: Option<NodePoolSpec>,
}

/// `PUT /api/v1/nodepools/{id}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateNodePoolRequest {
    /// Replaces the stored spec.
    #[serde(default)]
    #[schema(required = true, value_type = NodePoolSpec)]
    pub spec: Option<NodePoolSpec>,
    /// Absent or `null`: the stored labels are kept.
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_labels)]
    pub labels: Option<Labels>,
    /// When given, must equal the stored one (409 `VERSION_CONFLICT` otherwise).
    #[serde(default)]
    pub resource_version: Option<String>,
    /// Immutable: may be sent back, unchanged (400 otherwise).
    #[serde(default)]
    #[schema(read_only)]
    pub name: Option<String>,
    /// Immutable: may be sent back, unchanged (400 otherwise).
    #[serde(default)]
    #[schema(read_only)]
    pub cluster_id: Option<String>,
}

/// Top-level fields the server owns. A client may send them (for example by echoing a GET
/// response) on create; they are dropped before parsing, never stored or echoed.
pub const SERVER_OWNED_FIELDS: [&str; 8] = [
    "id",
    "status",
    "generation",
    "created_by",
    "created_at",
    "updated_at",
    "deleted_at",
    "resource_version",
];

/// The server-owned fields dropped from an update body: all of [`SERVER_OWNED_FIELDS`] but
/// `resource_version`, which an update uses as its optimistic-concurrency check.
pub const SERVER_OWNED_ON_UPDATE: [&str; 7] = [
    "id",
    "status",
    "generation",
    "created_by",
    "created_at",
    "updated_at",
    "deleted_at",
];
