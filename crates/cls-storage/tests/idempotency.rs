//! Idempotency records against a real database: expired records are pruned in batches, and
//! only expired ones.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use cls_storage::idempotency::{self, Claim, KeyedRequest, StoredResponse};
use cls_storage::schema::idempotency_keys;
use cls_test_support::TestDb;
use diesel::QueryDsl as _;
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
        body: serde_json::json!({"id": "x"}),
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
