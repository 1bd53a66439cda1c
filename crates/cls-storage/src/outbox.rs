//! The transactional outbox (SPEC §5.2): events are inserted in the transaction of the change
//! that causes them; the event-publisher relays them to Pub/Sub.

use cls_domain::event::Envelope;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::schema::outbox;

/// The advisory lock class that serialises outbox writers per cluster ("CLSO").
const OUTBOX_LOCK_CLASS: i32 = 0x434c_534f;

/// An outbox row as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub seq: i64,
    pub id: Uuid,
    pub shard: i16,
    pub cluster_id: Uuid,
    pub ordering_key: String,
    pub topic: String,
    pub event_type: String,
    pub body: Value,
    pub attributes: Value,
    pub traceparent: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
}

/// Inserts events into the outbox. Call it in the transaction of the change that causes them,
/// so the events commit (or roll back) with the change.
///
/// Before inserting, it takes a transaction-scoped advisory lock per cluster (in id order, so
/// writers cannot deadlock), so that writers for one cluster commit one after another and
/// `seq` order is commit order for each cluster.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    envelopes: &[Envelope],
) -> Result<(), StorageError> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut cluster_ids: Vec<Uuid> = envelopes.iter().map(|e| e.resource.cluster_id()).collect();
    cluster_ids.sort_unstable();
    cluster_ids.dedup();
    conn.transaction(async |conn| {
        for cluster_id in &cluster_ids {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind::<Integer, _>(OUTBOX_LOCK_CLASS)
                .bind::<Text, _>(cluster_id.to_string())
                .execute(conn)
                .await?;
        }
        let rows: Vec<_> = envelopes
            .iter()
            .map(|e| {
                (
                    outbox::id.eq(e.id),
                    outbox::shard.eq(e.shard),
                    outbox::cluster_id.eq(e.resource.cluster_id()),
                    outbox::ordering_key.eq(&e.ordering_key),
                    outbox::topic.eq(e.topic.as_str()),
                    outbox::event_type.eq(e.event_type.as_str()),
                    outbox::body.eq(&e.body),
                    outbox::attributes.eq(crate::rows::encode(&e.attributes)),
                    outbox::traceparent.eq(e.traceparent.as_deref()),
                )
            })
            .collect();
        diesel::insert_into(outbox::table)
            .values(rows)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Pending rows in `seq` order (oldest first), at most `limit`.
pub async fn pending(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(outbox::table
        .filter(outbox::state.eq("pending"))
        .order(outbox::seq.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)
        .await?)
}
