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

/// A textual dump of the public schema: tables, columns, indexes, constraints, functions.
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
