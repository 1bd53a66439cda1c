//! Query plans the schema must keep, against real Postgres.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use cls_test_support::TestDb;
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    plan: String,
}

/// `count` live clusters of `owner`, created one millisecond apart.
async fn insert_clusters(conn: &mut AsyncPgConnection, owner: &str, count: u32) {
    diesel::sql_query(format!(
        "INSERT INTO clusters (id, name, labels, created_by, spec, status, created_at, updated_at)
         SELECT gen_random_uuid(), 'c' || g, '{{}}', '{owner}',
                '{{\"platform\": {{\"type\": \"gcp\"}}}}', '{{\"phase\": \"Pending\"}}',
                now() - g * interval '1 ms', now()
         FROM generate_series(1, {count}) g"
    ))
    .execute(conn)
    .await
    .unwrap();
}

/// The node types and index names of a JSON plan, depth first.
fn plan_nodes(node: &serde_json::Value, out: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    out.push(match node["Index Name"].as_str() {
        Some(index) => format!("{kind} on {index}"),
        None => kind.to_owned(),
    });
    for child in node["Plans"].as_array().into_iter().flatten() {
        plan_nodes(child, out);
    }
}

/// The plan of `statement`: its node types and index names (depth first), and the whole plan.
async fn explain(
    conn: &mut AsyncPgConnection,
    statement: &str,
) -> (Vec<String>, serde_json::Value) {
    let plan: Plan = diesel::sql_query(format!("EXPLAIN (FORMAT JSON) {statement}"))
        .get_result(conn)
        .await
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan.plan).unwrap();
    let mut nodes = Vec::new();
    plan_nodes(&plan[0]["Plan"], &mut nodes);
    (nodes, plan)
}

/// A user's list page (`clusters::list`: the caller's live clusters, newest first) is read in
/// order from `clusters_owner_created`, even when the planner's statistics do not know the
/// owner yet (a bulk insert before autovacuum's analyze). With a narrower index on the owner
/// alone, the planner took one row for its estimate and sorted every one of the owner's
/// clusters for each page instead.
#[tokio::test]
async fn an_owner_s_page_is_read_in_order_even_with_stale_statistics() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    diesel::sql_query("ALTER TABLE clusters SET (autovacuum_enabled = false)")
        .execute(&mut conn)
        .await
        .unwrap();
    insert_clusters(&mut conn, "early@example.com", 2_000).await;
    diesel::sql_query("ANALYZE clusters")
        .execute(&mut conn)
        .await
        .unwrap();
    insert_clusters(&mut conn, "late@example.com", 5_000).await;

    let (nodes, plan) = explain(
        &mut conn,
        "SELECT * FROM clusters
         WHERE created_by = 'late@example.com' AND deleted_at IS NULL
         ORDER BY created_at DESC, id DESC LIMIT 100 OFFSET 0",
    )
    .await;
    assert_eq!(
        nodes,
        ["Limit", "Index Scan on clusters_owner_created"],
        "{plan:#}"
    );
}

#[derive(QueryableByName)]
struct TuplesRead {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The outbox rows this backend has read by sequential and index scans and not yet reported.
async fn outbox_tuples_read(conn: &mut AsyncPgConnection) -> i64 {
    let read: TuplesRead = diesel::sql_query(
        "SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint AS n
         FROM pg_stat_xact_user_tables WHERE relname = 'outbox'",
    )
    .get_result(conn)
    .await
    .unwrap();
    read.n
}

/// Runs `call` in a transaction it rolls back; returns its result and how many outbox rows it
/// read.
async fn in_transaction<T>(
    conn: &mut AsyncPgConnection,
    call: impl AsyncFnOnce(&mut AsyncPgConnection) -> T,
) -> (T, i64) {
    // The counts stay in the backend until it reports them, which it does only between
    // transactions: within one, the difference is the call's.
    diesel::sql_query("BEGIN").execute(conn).await.unwrap();
    let before = outbox_tuples_read(conn).await;
    let result = call(conn).await;
    let read = outbox_tuples_read(conn).await - before;
    diesel::sql_query("ROLLBACK").execute(conn).await.unwrap();
    (result, read)
}

/// The relay's reads, the backlog it reports at every `/metrics` scrape and the retention
/// prune go through the outbox's partial indexes even under generic plans, the plans Postgres
/// caches for a prepared statement (and the only ones with `plan_cache_mode =
/// force_generic_plan`). A generic plan for a bound `state = $1` cannot use an index defined by
/// a state, and reads the published rows kept for the retention period instead: here 20 000 of
/// them, for 5 pending rows.
#[tokio::test]
async fn relay_statements_skip_the_published_rows_under_generic_plans() {
    use cls_storage::outbox;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "INSERT INTO outbox (id, shard, cluster_id, ordering_key, topic, event_type, body,
                             attributes, state, published_at)
         SELECT gen_random_uuid(), 0, c, c::text, 'cluster-events', 'cluster.updated', '{}', '{}',
                CASE WHEN g <= 3 THEN 'dead' WHEN g <= 8 THEN 'pending' ELSE 'published' END,
                CASE WHEN g > 8 THEN now() END
         FROM generate_series(1, 20000) g, LATERAL (SELECT md5(g::text)::uuid AS c) x",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE outbox")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();

    let (rows, read) = in_transaction(&mut conn, async |c| {
        outbox::pending_in_shard(c, 0, 100).await.unwrap()
    })
    .await;
    assert_eq!((rows.len(), read), (5, 5), "pending_in_shard");
    let paused = rows[0].ordering_key.clone();
    let (rows, read) = in_transaction(&mut conn, async |c| {
        outbox::pending_in_shard_except(c, 0, &[paused.as_str()], 100)
            .await
            .unwrap()
    })
    .await;
    assert_eq!((rows.len(), read), (4, 5), "pending_in_shard_except");
    let (backlog, read) =
        in_transaction(&mut conn, async |c| outbox::backlog(c).await.unwrap()).await;
    assert_eq!((backlog.pending, backlog.dead), (5, 3));
    assert!(read <= 8, "backlog read {read} outbox rows");
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let (pruned, read) = in_transaction(&mut conn, async |c| {
        outbox::prune_published(c, long_ago, 100).await.unwrap()
    })
    .await;
    assert_eq!((pruned, read), (0, 0), "prune_published");
}

/// The relay's writes by id (marking a batch published, recording a failure, dead-lettering)
/// read only their own rows during a backlog, even when the statistics were gathered while
/// almost nothing was pending (autovacuum analyzes between bursts). Guarded by
/// `state = 'pending'`, the planner took the `outbox_pending` index as the cheaper way to them
/// and read every pending row: here 5 000 of them for a batch of 10.
#[tokio::test]
async fn relay_writes_by_id_read_only_their_rows_during_a_backlog() {
    use cls_storage::outbox;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    diesel::sql_query("ALTER TABLE outbox SET (autovacuum_enabled = false)")
        .execute(&mut conn)
        .await
        .unwrap();
    let insert = |state: &'static str, from: u32, to: u32| {
        format!(
            "INSERT INTO outbox (id, shard, cluster_id, ordering_key, topic, event_type, body,
                                 attributes, state, published_at)
             SELECT gen_random_uuid(), 0, c, c::text, 'cluster-events', 'cluster.updated',
                    '{{}}', '{{}}', '{state}', CASE WHEN '{state}' = 'published' THEN now() END
             FROM generate_series({from}, {to}) g, LATERAL (SELECT md5(g::text)::uuid AS c) x"
        )
    };
    for statement in [
        insert("published", 1, 20_000),
        "ANALYZE outbox".to_owned(),
        insert("pending", 20_001, 25_000),
    ] {
        diesel::sql_query(statement)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let batch: Vec<uuid::Uuid> = outbox::pending_in_shard(&mut conn, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(batch.len(), 10);

    let now = time::OffsetDateTime::now_utc();
    let (marked, read) = in_transaction(&mut conn, async |c| {
        outbox::mark_published(c, &batch, now).await
    })
    .await;
    assert_eq!((marked.unwrap(), read), (10, 10), "mark_published");
    let (failed, read) = in_transaction(&mut conn, async |c| {
        outbox::record_failure(c, &batch[..3], "unavailable").await
    })
    .await;
    failed.unwrap();
    assert_eq!(read, 3, "record_failure");
    let (dead, read) = in_transaction(&mut conn, async |c| {
        outbox::dead_letter(c, batch[0], "invalid").await
    })
    .await;
    assert!(dead.unwrap());
    assert_eq!(read, 1, "dead_letter");
}
