//! Idempotency records against a real database: a replay is the stored response byte for
//! byte, records of the previous release still replay, and expired records are pruned in
//! batches, and only expired ones.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_storage::idempotency::{self, Claim, KeyedRequest, StoredResponse};
use cls_storage::schema::idempotency_keys;
use cls_test_support::TestDb;
use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = time::macros::datetime!(2026-11-26 12:00:00 UTC);
const TTL: Duration = Duration::hours(24);

fn request(key: &str) -> KeyedRequest<'_> {
    KeyedRequest {
        caller: "alice@example.com",
        key,
        scope: "POST /api/v1/clusters",
        hash: "h",
    }
}

#[tokio::test]
async fn expired_records_are_pruned_in_batches_and_live_ones_still_replay() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let stored = StoredResponse {
        status: 201,
        body: r#"{"id":"x"}"#.to_owned(),
        resource_id: None,
    };
    // Three records made at T0 and one an hour later.
    for (key, at) in [
        ("a", T0),
        ("b", T0),
        ("c", T0),
        ("late", T0 + Duration::hours(1)),
    ] {
        let claim = idempotency::claim(&mut conn, request(key), at, TTL).await;
        assert_eq!(claim.unwrap(), Claim::New);
        idempotency::complete(&mut conn, "alice@example.com", key, &stored)
            .await
            .unwrap();
    }

    let now = T0 + TTL + Duration::minutes(1);
    assert_eq!(
        idempotency::prune_expired(&mut conn, now, 2).await.unwrap(),
        2
    );
    assert_eq!(
        idempotency::prune_expired(&mut conn, now, 2).await.unwrap(),
        1
    );
    assert_eq!(
        idempotency::prune_expired(&mut conn, now, 2).await.unwrap(),
        0
    );

    // Only the record still within its TTL is left, and it answers a retry.
    let left: Vec<String> = idempotency_keys::table
        .select(idempotency_keys::key)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, ["late"]);
    assert_eq!(
        idempotency::claim(&mut conn, request("late"), now, TTL)
            .await
            .unwrap(),
        Claim::Replay(stored)
    );
}

#[tokio::test]
async fn a_replay_is_the_stored_text_and_a_previous_release_record_still_replays() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    // Not in jsonb's key order (shorter keys first) and spaced as jsonb would not be.
    let body = r#"{"name":"c1","id":"x", "labels":{"b":"2","a":"1"}}"#;
    let stored = StoredResponse {
        status: 201,
        body: body.to_owned(),
        resource_id: Some(uuid::Uuid::nil()),
    };
    assert_eq!(
        idempotency::claim(&mut conn, request("k"), T0, TTL)
            .await
            .unwrap(),
        Claim::New
    );
    idempotency::complete(&mut conn, "alice@example.com", "k", &stored)
        .await
        .unwrap();
    assert_eq!(
        idempotency::claim(&mut conn, request("k"), T0, TTL)
            .await
            .unwrap(),
        Claim::Replay(stored)
    );
    // The previous release reads `response_body`: it holds the same value.
    let (text, value): (Option<String>, serde_json::Value) = idempotency_keys::table
        .select((
            idempotency_keys::response_text,
            idempotency_keys::response_body,
        ))
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(text.as_deref(), Some(body));
    assert_eq!(
        value,
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );

    // A record that release wrote has no `response_text`: it replays `response_body`.
    diesel::update(idempotency_keys::table)
        .set(idempotency_keys::response_text.eq(None::<String>))
        .execute(&mut conn)
        .await
        .unwrap();
    let Claim::Replay(replayed) = idempotency::claim(&mut conn, request("k"), T0, TTL)
        .await
        .unwrap()
    else {
        panic!("the previous release's record should replay");
    };
    assert_eq!(replayed.status, 201);
    assert_eq!(replayed.resource_id, Some(uuid::Uuid::nil()));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&replayed.body).unwrap(),
        value
    );
}
