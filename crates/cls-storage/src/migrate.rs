//! Embedded migrations, applied under a Postgres advisory lock so that any number of
//! processes may migrate the same database at once.

use anyhow::Context as _;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// Every migration under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// The advisory lock key that serialises migrators ("CLS" + 1).
const MIGRATION_LOCK: i64 = 0x434c_5301;

/// Applies every pending migration. Returns the versions applied by this call. Works on any
/// Tokio runtime, single-threaded ones included.
pub async fn run(database_url: &str) -> anyhow::Result<Vec<String>> {
    with_lock(database_url, |harness| {
        harness
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

/// Reverts every applied migration (for the migration round-trip test and `xtask db reset`).
pub async fn revert_all(database_url: &str) -> anyhow::Result<Vec<String>> {
    with_lock(database_url, |harness| {
        harness
            .revert_all_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
    })
    .await
}

type Harness = AsyncMigrationHarness<AsyncPgConnection>;
type HarnessResult<T> = diesel::migration::Result<T>;

async fn with_lock<T>(
    database_url: &str,
    work: impl FnOnce(&mut Harness) -> HarnessResult<T> + Send + 'static,
) -> anyhow::Result<T>
where
    T: Send + 'static,
{
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .context("cannot connect to the database to migrate it")?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(&mut conn)
        .await
        .context("cannot take the migration lock")?;
    // diesel's harness is synchronous: it blocks in place on the runtime for each step, which
    // a single-threaded runtime (`#[tokio::test]`, a CLI) refuses. On a blocking thread it may
    // block, and the runtime keeps driving the connection meanwhile.
    let mut harness = AsyncMigrationHarness::new(conn);
    let (result, harness) = tokio::task::spawn_blocking(move || {
        let result = work(&mut harness).map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        (result, harness)
    })
    .await
    .context("the migration thread panicked")?;
    // Dropping the connection releases the lock too; unlock explicitly to release it promptly.
    let mut conn = harness.into_inner();
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(&mut conn)
        .await;
    result
}

/// How many migrations are embedded.
pub fn migration_count() -> usize {
    diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_or(0, |migrations| migrations.len())
}
