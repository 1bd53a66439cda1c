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

/// The publisher counts dead letters at every `/metrics` scrape (`outbox::backlog`): through
/// the partial index `outbox_dead`, never by reading the whole outbox, which keeps every
/// published row for the retention period.
#[tokio::test]
async fn dead_letters_are_counted_without_reading_the_published_rows() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    diesel::sql_query(
        "INSERT INTO outbox (id, shard, cluster_id, ordering_key, topic, event_type, body,
                             attributes, state, published_at)
         SELECT gen_random_uuid(), (g % 32)::smallint, c, c::text, 'cluster-events',
                'cluster.updated', '{}', '{}',
                CASE WHEN g <= 3 THEN 'dead' ELSE 'published' END, now()
         FROM generate_series(1, 20000) g, LATERAL (SELECT gen_random_uuid() AS c) x",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE outbox")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        cls_storage::outbox::backlog(&mut conn).await.unwrap().dead,
        3
    );

    let (nodes, plan) = explain(
        &mut conn,
        "SELECT count(*) AS n FROM outbox WHERE state = 'dead'",
    )
    .await;
    assert!(
        nodes.iter().any(|n| n.ends_with(" on outbox_dead")) && !nodes.contains(&"Seq Scan".into()),
        "{plan:#}"
    );
}
