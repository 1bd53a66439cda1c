//! Row types and their mapping to domain types.

use cls_domain::resource::{Cluster, NodePool};
use cls_domain::timefmt::rfc3339_utc;
use diesel::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// A `json` or `jsonb` column's JSON text, undecoded: written into a response as it is, or
/// read into its domain type directly ([`JsonText::decode`]) instead of through a
/// `serde_json::Value` tree, whose maps and strings were most of the CPU of a list (measured:
/// the gateway spent about 1 ms per page of 100 clusters). Every JSON column read goes through
/// it. Resources' documents are read from their `json` copies (migration
/// `2026-12-07-000002_documents_as_json_for_reads`), which Postgres sends as stored instead of
/// printing a `jsonb` value again.
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

/// Written into a response as it is: the document is not decoded into its domain type and
/// encoded again, which was most of the gateway's CPU per page of a list. Postgres printed
/// the text from a `jsonb` value, so it is one JSON value; `serde_json` checks that again
/// (a scan, no allocation) before writing it. Its objects' keys are in `jsonb`'s order
/// (shorter keys first) and it has a space after each `:` and `,`: the same JSON value as the
/// domain type's serialization, not the same text.
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Json, diesel::pg::Pg> for JsonText {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        // json's binary format is the text itself.
        Ok(JsonText(std::str::from_utf8(value.as_bytes())?.to_owned()))
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

/// A value to write to a `jsonb` column or compare with one: its JSON text, encoded once
/// (by [`encode`]) and sent as it is.
///
/// A `serde_json::Value` bound as `jsonb` is a tree built from the domain type (a map and a
/// string per field) and serialized again while the statement's values are collected: about a
/// sixth of the gateway's instructions per create, counted with callgrind (2026-12-07).
#[derive(Debug, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Jsonb)]
pub(crate) struct JsonbText(String);

impl diesel::serialize::ToSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonbText {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write as _;
        // jsonb's binary format: a version byte (1), then the JSON text.
        out.write_all(&[1])?;
        out.write_all(self.0.as_bytes())?;
        Ok(diesel::serialize::IsNull::No)
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> JsonbText {
    // Domain types serialise to JSON infallibly (string keys, no non-finite floats).
    JsonbText(serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()))
}

/// A cluster's row. It serializes as [`Cluster`] does (the same fields, in the same order,
/// with the same formats; a test compares the two), writing its documents as they are.
#[derive(Debug, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = clusters, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ClusterRow {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target_project_id: Option<String>,
    #[diesel(column_name = labels_json)]
    pub(crate) labels: JsonText,
    pub(crate) created_by: String,
    pub(crate) generation: i64,
    #[serde(serialize_with = "as_string")]
    pub(crate) resource_version: i64,
    #[diesel(column_name = spec_json)]
    pub(crate) spec: JsonText,
    #[diesel(column_name = status_json)]
    pub(crate) status: JsonText,
    #[serde(with = "rfc3339_utc")]
    pub(crate) created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    pub(crate) updated_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc::option", skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_at: Option<OffsetDateTime>,
}

/// `resource_version` is a string in the API (SPEC §3.4) and a `bigint` in the table.
fn as_string<S: Serializer>(version: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(version)
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

/// A nodepool's row; it serializes as [`NodePool`] does (see [`ClusterRow`]).
#[derive(Debug, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = nodepools, check_for_backend(diesel::pg::Pg))]
pub(crate) struct NodePoolRow {
    pub(crate) id: Uuid,
    pub(crate) cluster_id: Uuid,
    pub(crate) name: String,
    #[diesel(column_name = labels_json)]
    pub(crate) labels: JsonText,
    pub(crate) created_by: String,
    pub(crate) generation: i64,
    #[serde(serialize_with = "as_string")]
    pub(crate) resource_version: i64,
    #[diesel(column_name = spec_json)]
    pub(crate) spec: JsonText,
    #[diesel(column_name = status_json)]
    pub(crate) status: JsonText,
    #[serde(with = "rfc3339_utc")]
    pub(crate) created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    pub(crate) updated_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc::option", skip_serializing_if = "Option::is_none")]
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

/// A cluster as read, its documents undecoded: it serializes as [`Cluster`] does, writing
/// its `labels`, `spec` and `status` into the output as Postgres printed them (for responses,
/// which need no domain type); [`StoredCluster::into_domain`] decodes it.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct StoredCluster(pub(crate) ClusterRow);

impl StoredCluster {
    /// As [`Cluster::resource_version`] has it.
    pub fn resource_version(&self) -> String {
        self.0.resource_version.to_string()
    }

    pub fn into_domain(self) -> Result<Cluster, StorageError> {
        self.0.into_domain()
    }
}

/// A nodepool as read, its documents undecoded (see [`StoredCluster`]).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct StoredNodePool(pub(crate) NodePoolRow);

impl StoredNodePool {
    /// As [`NodePool::resource_version`] has it.
    pub fn resource_version(&self) -> String {
        self.0.resource_version.to_string()
    }

    pub fn into_domain(self) -> Result<NodePool, StorageError> {
        self.0.into_domain()
    }
}
