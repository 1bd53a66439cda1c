//! Row types and their mapping to domain types.

use cls_domain::resource::{Cluster, NodePool};
use diesel::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::schema::{clusters, nodepools};

/// A statement's single `count(*) AS n`.
#[derive(diesel::QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) n: i64,
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    value: Value,
) -> Result<T, StorageError> {
    serde_json::from_value(value).map_err(|source| StorageError::Corrupt { what, source })
}

/// A `jsonb` column's JSON text, undecoded: read into its domain type directly
/// ([`JsonText::decode`]) instead of through a `serde_json::Value` tree, whose maps and
/// strings were most of the CPU of a list (measured: the gateway spent about 1 ms per page of
/// 100 clusters). Every `jsonb` column read into a domain type goes through it.
///
/// The text is checked to be UTF-8 once, as a whole, when it is read: decoding from a `&str`
/// lets `serde_json` skip the check it makes on every string of a byte slice, which was about
/// 8 % of the gateway's instructions per page of a list (counted with callgrind).
#[derive(Debug, diesel::deserialize::FromSqlRow)]
pub(crate) struct JsonText(String);

impl diesel::deserialize::FromSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonText {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        // jsonb's binary format: a version byte (1), then the JSON text.
        match value.as_bytes() {
            [1, text @ ..] => Ok(JsonText(std::str::from_utf8(text)?.to_owned())),
            _ => Err("unsupported jsonb encoding version".into()),
        }
    }
}

impl JsonText {
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
    ) -> Result<T, StorageError> {
        serde_json::from_str(&self.0).map_err(|source| StorageError::Corrupt { what, source })
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Value {
    // Domain types serialise to JSON infallibly (string keys, no non-finite floats).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = clusters, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ClusterRow {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) target_project_id: Option<String>,
    pub(crate) labels: JsonText,
    pub(crate) created_by: String,
    pub(crate) generation: i64,
    pub(crate) resource_version: i64,
    pub(crate) spec: JsonText,
    pub(crate) status: JsonText,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) deleted_at: Option<OffsetDateTime>,
}

impl ClusterRow {
    pub(crate) fn into_domain(self) -> Result<Cluster, StorageError> {
        Ok(Cluster {
            id: self.id,
            name: self.name,
            description: self.description,
            target_project_id: self.target_project_id,
            labels: self.labels.decode("cluster labels")?,
            created_by: self.created_by,
            generation: self.generation,
            resource_version: self.resource_version.to_string(),
            spec: self.spec.decode("cluster spec")?,
            status: self.status.decode("cluster status")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        })
    }
}

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = nodepools, check_for_backend(diesel::pg::Pg))]
pub(crate) struct NodePoolRow {
    pub(crate) id: Uuid,
    pub(crate) cluster_id: Uuid,
    pub(crate) name: String,
    pub(crate) labels: JsonText,
    pub(crate) created_by: String,
    pub(crate) generation: i64,
    pub(crate) resource_version: i64,
    pub(crate) spec: JsonText,
    pub(crate) status: JsonText,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) deleted_at: Option<OffsetDateTime>,
}

impl NodePoolRow {
    pub(crate) fn into_domain(self) -> Result<NodePool, StorageError> {
        Ok(NodePool {
            id: self.id,
            cluster_id: self.cluster_id,
            name: self.name,
            labels: self.labels.decode("nodepool labels")?,
            created_by: self.created_by,
            generation: self.generation,
            resource_version: self.resource_version.to_string(),
            spec: self.spec.decode("nodepool spec")?,
            status: self.status.decode("nodepool status")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        })
    }
}

pub(crate) fn all<R, T>(
    rows: Vec<R>,
    into_domain: impl Fn(R) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    rows.into_iter().map(into_domain).collect()
}
