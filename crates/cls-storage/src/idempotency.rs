//! `Idempotency-Key` records (SPEC §3.4), stored in Postgres so retries work across gateway
//! replicas. A key is claimed in the transaction that creates the resource, so the record
//! commits with the resource or not at all; a concurrent retry with the same key waits on the
//! unique index until the first transaction ends, then replays its stored response.
//!
//! A response is stored as the exact text that was sent (`response_text`), so a replay is
//! the same bytes. It is also written to `response_body` (`jsonb`), which the previous
//! release reads for its replays; a record that release wrote has only `response_body`, and
//! replays as that value's text (see migration `2026-12-07-000001_idempotency_response_text`).

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::StorageError;
use crate::schema::idempotency_keys;
use crate::truncate_to_micros;

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First use (or the previous use expired): go ahead, then [`complete`] in the same
    /// transaction.
    New,
    /// Same key, same request: answer with the stored response.
    Replay(StoredResponse),
    /// Same key, different request (`IDEMPOTENCY_KEY_REUSED`).
    Mismatch,
}

/// A response recorded for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    /// The response body, exactly as it was sent (JSON text).
    pub body: String,
    pub resource_id: Option<Uuid>,
}

/// What a key is claimed for.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRequest<'a> {
    pub caller: &'a str,
    pub key: &'a str,
    /// Method and path, e.g. `POST /api/v1/clusters`.
    pub scope: &'a str,
    /// A hash of the scope and the body.
    pub hash: &'a str,
}

/// Claims `request.key` for `request.caller` until `now + ttl`. Call it inside the
/// transaction that performs the request.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    request: KeyedRequest<'_>,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<Claim, StorageError> {
    let now = truncate_to_micros(now);
    // An expired record no longer counts.
    diesel::delete(
        idempotency_keys::table
            .filter(idempotency_keys::caller.eq(request.caller))
            .filter(idempotency_keys::key.eq(request.key))
            .filter(idempotency_keys::expires_at.le(now)),
    )
    .execute(conn)
    .await?;
    let inserted = diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::caller.eq(request.caller),
            idempotency_keys::key.eq(request.key),
            idempotency_keys::request_scope.eq(request.scope),
            idempotency_keys::request_hash.eq(request.hash),
            // Filled in by `complete` before the transaction commits.
            idempotency_keys::response_status.eq(0),
            idempotency_keys::response_body.eq(Value::Null),
            idempotency_keys::created_at.eq(now),
            idempotency_keys::expires_at.eq(now + ttl),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (scope, hash, status, body, resource_id): (String, String, i16, String, Option<Uuid>) =
        idempotency_keys::table
            .filter(idempotency_keys::caller.eq(request.caller))
            .filter(idempotency_keys::key.eq(request.key))
            .select((
                idempotency_keys::request_scope,
                idempotency_keys::request_hash,
                idempotency_keys::response_status,
                sql::<Text>("COALESCE(response_text, response_body::text)"),
                idempotency_keys::resource_id,
            ))
            .first(conn)
            .await?;
    if scope != request.scope || hash != request.hash {
        return Ok(Claim::Mismatch);
    }
    Ok(Claim::Replay(StoredResponse {
        status: u16::try_from(status).unwrap_or(500),
        body,
        resource_id,
    }))
}

/// Records the response for a claimed key (same transaction as [`claim`]).
pub async fn complete(
    conn: &mut AsyncPgConnection,
    caller: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), StorageError> {
    diesel::update(
        idempotency_keys::table
            .filter(idempotency_keys::caller.eq(caller))
            .filter(idempotency_keys::key.eq(key)),
    )
    .set((
        idempotency_keys::response_status.eq(i16::try_from(response.status).unwrap_or(500)),
        idempotency_keys::response_text.eq(&response.body),
        // For the previous release's replays; Postgres parses the same text.
        idempotency_keys::response_body.eq(sql::<Jsonb>("CAST(")
            .bind::<Text, _>(&response.body)
            .sql(" AS jsonb)")),
        idempotency_keys::resource_id.eq(response.resource_id),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `batch` records expired at `now` (oldest first); returns how many went.
/// Records another gateway replica is deleting, or a retry is claiming, are skipped.
pub async fn prune_expired(
    conn: &mut AsyncPgConnection,
    now: OffsetDateTime,
    batch: i64,
) -> Result<usize, StorageError> {
    Ok(crate::prepared::sql(
        "WITH expired AS (
             SELECT caller, key FROM idempotency_keys WHERE expires_at <= $1
              ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
         )
         DELETE FROM idempotency_keys k USING expired e
          WHERE k.caller = e.caller AND k.key = e.key",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(truncate_to_micros(now))
    .bind::<diesel::sql_types::BigInt, _>(batch)
    .execute(conn)
    .await?)
}
