//! The connection pool.

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;

/// A pool of async Postgres connections.
pub type PgPool = Pool<AsyncPgConnection>;

/// Why a connection could not be checked out (Postgres down, or the pool exhausted).
pub type RunError = diesel_async::pooled_connection::bb8::RunError;

/// A connection checked out of a [`PgPool`].
pub type PooledConnection<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// Builds a pool. Connections are made lazily, so this succeeds while Postgres is down and
/// the pool reconnects by itself once it is back.
pub fn pool(database_url: &str, max_connections: u32) -> PgPool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder()
        .max_size(max_connections)
        .connection_timeout(std::time::Duration::from_secs(3))
        // No `SELECT 1` per checkout (it doubled round trips on simple reads): a connection
        // that broke (e.g. Postgres restarted) fails its next query with a 503 and is
        // discarded when returned, so the pool heals by itself.
        .test_on_check_out(false)
        .build_unchecked(manager)
}

/// Opens a dedicated connection outside the pool: for session state that must not leak to
/// other users of a pooled connection (advisory-lock leases, `LISTEN`).
pub async fn connect(database_url: &str) -> Result<AsyncPgConnection, crate::StorageError> {
    use diesel_async::AsyncConnection as _;
    AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| crate::StorageError::Connect(e.to_string()))
}
