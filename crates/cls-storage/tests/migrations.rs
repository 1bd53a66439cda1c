//! Migrations against real Postgres: up, down, up again; concurrent migrators; and the
//! hand-written diesel schema matching the database.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use cls_storage::{migrate, schema};
use cls_test_support::TestDb;
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// A textual dump of the public schema: tables, columns, indexes, constraints, functions,
/// triggers and storage parameters.
async fn dump(conn: &mut AsyncPgConnection) -> Vec<String> {
    let sql = "
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
               || is_nullable || ' ' || coalesce(column_default, '') AS line
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'options ' || relname || ' ' || array_to_string(reloptions, ',')
          FROM pg_class WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL
        ORDER BY 1";
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

fn without_bookkeeping(dump: &[String]) -> Vec<&String> {
    dump.iter()
        .filter(|l| !l.contains("__diesel_schema_migrations"))
        .collect()
}

// A single-threaded runtime, like most tests': whichever test first builds the shared template
// database migrates it on its own runtime, so migrating must work there too.
#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let mut conn = db.conn().await;
    assert!(without_bookkeeping(&dump(&mut conn).await).is_empty());

    let applied = migrate::run(db.url()).await.unwrap();
    assert!(!applied.is_empty());
    let first = dump(&mut conn).await;
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("index CREATE UNIQUE INDEX clusters_owner_name_live"))
    );
    assert!(
        migrate::run(db.url()).await.unwrap().is_empty(),
        "nothing pending the second time"
    );

    let reverted = migrate::revert_all(db.url()).await.unwrap();
    assert_eq!(reverted.len(), applied.len());
    assert!(
        without_bookkeeping(&dump(&mut conn).await).is_empty(),
        "down removes everything"
    );

    migrate::run(db.url()).await.unwrap();
    assert_eq!(
        dump(&mut conn).await,
        first,
        "up after down gives the same schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrators_all_succeed() {
    let db = TestDb::empty().await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move { migrate::run(&url).await })
        })
        .collect();
    let mut applied_total = 0;
    for task in tasks {
        applied_total += task.await.unwrap().expect("every migrator succeeds").len();
    }
    assert_eq!(
        applied_total,
        migrate::migration_count(),
        "each migration applied exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_schema_matches_the_database() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let lines = dump(&mut conn).await;
    for (table, columns) in schema::TABLES {
        let mut in_db: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("column {table}.")))
            .map(|rest| rest.split(' ').next().unwrap().to_owned())
            .collect();
        in_db.sort();
        let mut declared: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        declared.sort();
        assert_eq!(in_db, declared, "columns of {table}");
    }
    let tables_in_db: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("column "))
        .map(|rest| rest.split('.').next().unwrap())
        .filter(|t| *t != "__diesel_schema_migrations")
        .collect();
    let declared: std::collections::BTreeSet<&str> =
        schema::TABLES.iter().map(|(t, _)| *t).collect();
    assert_eq!(tables_in_db, declared);
}

/// Whether `statement` runs, or the name of the `CHECK` constraint it violates.
async fn check_outcome(conn: &mut AsyncPgConnection, statement: &str) -> Result<(), String> {
    use diesel::result::{DatabaseErrorKind, Error};
    match diesel::sql_query(statement).execute(conn).await {
        Ok(_) => Ok(()),
        Err(Error::DatabaseError(DatabaseErrorKind::CheckViolation, info)) => {
            Err(info.constraint_name().unwrap_or("unnamed").to_owned())
        }
        Err(other) => panic!("{statement}: {other}"),
    }
}

// The constraints were rewritten in cheaper forms (migrations
// `2026-12-07-000003_cheaper_check_constraints` and `2026-12-07-000004_live_count_slot_domain`);
// these are the rules they must still hold.
#[tokio::test]
async fn rewritten_constraints_keep_their_rules() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let (c, n, other) = (
        "'00000000-0000-7000-8000-00000000000c'",
        "'00000000-0000-7000-8000-00000000000a'",
        "'00000000-0000-7000-8000-0000000000ff'",
    );
    let schedule = |kind: &str, resource: &str, nodepool: &str| {
        format!(
            "INSERT INTO reconcile_schedule (resource_id, resource_kind, cluster_id, nodepool_id, next_due_at) \
             VALUES ({resource}, '{kind}', {c}, {nodepool}, now())"
        )
    };
    let rejected = [
        (
            "cluster",
            other,
            "NULL",
            "a cluster's row whose resource is not its cluster",
        ),
        ("cluster", c, n, "a cluster's row naming a nodepool"),
        (
            "nodepool",
            n,
            "NULL",
            "a nodepool's row without its nodepool",
        ),
        (
            "nodepool",
            c,
            n,
            "a nodepool's row whose resource is its cluster",
        ),
        (
            "nodepool",
            other,
            n,
            "a nodepool's row whose resource is another",
        ),
        ("machine", c, "NULL", "a kind that is neither"),
        ("machine", n, n, "a kind that is neither, with a nodepool"),
    ];
    for (kind, resource, nodepool, what) in rejected {
        assert_eq!(
            check_outcome(&mut conn, &schedule(kind, resource, nodepool)).await,
            Err("reconcile_schedule_resource_check".to_owned()),
            "{what}"
        );
    }
    for (kind, resource, nodepool) in [("cluster", c, "NULL"), ("nodepool", n, n)] {
        assert_eq!(
            check_outcome(&mut conn, &schedule(kind, resource, nodepool)).await,
            Ok(()),
            "{kind}"
        );
    }

    let outbox = |topic: &str, state: &str| {
        format!(
            "INSERT INTO outbox (id, shard, cluster_id, ordering_key, topic, event_type, body, attributes, state) \
             VALUES (gen_random_uuid(), 0, {c}, 'k', '{topic}', 'cluster.created', '{{}}', '{{}}', '{state}')"
        )
    };
    for topic in ["cluster-events", "nodepool-events"] {
        for state in ["pending", "published", "dead"] {
            assert_eq!(
                check_outcome(&mut conn, &outbox(topic, state)).await,
                Ok(())
            );
        }
    }
    assert_eq!(
        check_outcome(&mut conn, &outbox("cluster", "pending")).await,
        Err("outbox_topic_check".to_owned())
    );
    assert_eq!(
        check_outcome(&mut conn, &outbox("cluster-events", "sent")).await,
        Err("outbox_state_check".to_owned())
    );
    assert_eq!(
        check_outcome(
            &mut conn,
            "UPDATE outbox SET state = 'Published' WHERE state = 'pending'"
        )
        .await,
        Err("outbox_state_check".to_owned())
    );

    let slot = |slot: i32| {
        format!(
            "INSERT INTO cluster_live_counts (created_by, slot, live) VALUES ('a@example.com', {slot}, 1)"
        )
    };
    for ok in [0, 15] {
        assert_eq!(check_outcome(&mut conn, &slot(ok)).await, Ok(()), "{ok}");
    }
    for bad in [-1, 16] {
        assert_eq!(
            check_outcome(&mut conn, &slot(bad)).await,
            Err("cluster_live_count_slot_check".to_owned()),
            "{bad}"
        );
    }
}
