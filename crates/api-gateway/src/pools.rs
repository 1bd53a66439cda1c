//! One Postgres connection pool per HTTP worker.
//!
//! Each actix-web HTTP worker is a thread with a single-threaded Tokio runtime, and a
//! connection's I/O is driven by a task on the runtime that opened it. With one pool shared
//! by the workers, a request on one worker often got a connection driven by the other: two
//! cross-thread wake-ups per query, and a GET could wait for the other worker's thread to be
//! scheduled. With a pool per worker, a request's queries are driven on its own thread.

use cls_storage::PgPool;
use thread_local::ThreadLocal;

/// The gateway's connection pools: `DATABASE_MAX_CONNECTIONS` split evenly over the HTTP
/// workers, each worker's pool made on its own thread when the worker starts
/// ([`WorkerPools::register_worker`]), and a small shared pool for every other thread (the
/// admin server's readiness checks, the idempotency clean-up).
#[derive(Debug)]
pub struct WorkerPools {
    database_url: String,
    per_worker: u32,
    workers: ThreadLocal<PgPool>,
    shared: PgPool,
}

impl WorkerPools {
    /// The shared pool's size: a readiness check can run while the clean-up holds one.
    pub const SHARED_CONNECTIONS: u32 = 2;

    /// Pools of at most `max_connections / workers` connections each (at least one), and the
    /// shared pool. Call inside a Tokio runtime (a pool spawns its reaper task).
    pub fn new(database_url: &str, max_connections: u32, workers: usize) -> WorkerPools {
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        WorkerPools {
            database_url: database_url.to_owned(),
            per_worker: (max_connections / workers).max(1),
            workers: ThreadLocal::new(),
            shared: cls_storage::pool(database_url, Self::SHARED_CONNECTIONS),
        }
    }

    /// Gives the calling thread, an HTTP worker starting (inside its runtime), a pool of its
    /// own; [`WorkerPools::get`] on this thread returns it from then on.
    pub fn register_worker(&self) -> &PgPool {
        self.workers
            .get_or(|| cls_storage::pool(&self.database_url, self.per_worker))
    }

    /// The calling thread's pool: its worker's, else the shared one.
    pub fn get(&self) -> &PgPool {
        self.workers.get().unwrap_or(&self.shared)
    }

    /// The most connections one worker's pool opens.
    pub fn per_worker(&self) -> u32 {
        self.per_worker
    }

    /// Open and idle connections, over every pool.
    pub fn totals(&self) -> (u32, u32) {
        self.workers
            .iter()
            .chain([&self.shared])
            .fold((0, 0), |(open, idle), pool| {
                let state = pool.state();
                (open + state.connections, idle + state.idle_connections)
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use cls_test_support::postgres::TestDb;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn the_connections_are_split_evenly_and_at_least_one_each() {
        let runtime = runtime();
        let _inside = runtime.enter();
        let per_worker =
            |max, workers| WorkerPools::new("postgres://x/y", max, workers).per_worker();
        assert_eq!(per_worker(16, 2), 8);
        assert_eq!(per_worker(5, 2), 2);
        assert_eq!(per_worker(1, 4), 1);
        assert_eq!(per_worker(3, 0), 3);
    }

    #[test]
    fn each_worker_uses_its_own_share_of_the_connections() {
        let main = runtime();
        let db = main.block_on(TestDb::new());
        let pools = {
            let _inside = main.enter();
            WorkerPools::new(db.url(), 4, 2)
        };
        // Both threads hold their pool at once (a finished thread's slot may be reused).
        let both = Barrier::new(2);
        let addresses: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        runtime().block_on(async {
                            let pool = pools.register_worker();
                            assert!(std::ptr::eq(pool, pools.get()), "the worker's own pool");
                            let first = pool.get().await.expect("first connection");
                            let second = pool.get().await.expect("second connection");
                            both.wait();
                            // The worker's share is two: a third waits for one to come back.
                            let third =
                                tokio::time::timeout(Duration::from_millis(300), pool.get()).await;
                            assert!(third.is_err(), "a third connection for one worker");
                            drop(first);
                            let again = tokio::time::timeout(Duration::from_secs(3), pool.get())
                                .await
                                .expect("a returned connection is reused");
                            assert!(again.is_ok());
                            drop((second, again));
                            std::ptr::from_ref(pool) as usize
                        })
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_ne!(addresses[0], addresses[1], "the workers shared a pool");
        // Any other thread gets the shared pool, counted in the totals once it opens one.
        assert!(std::ptr::eq(pools.get(), &pools.shared));
        assert_eq!(
            pools.totals().0,
            4,
            "two connections per worker, four in all"
        );
        main.block_on(async {
            let _conn = pools.get().get().await.expect("a shared connection");
            assert_eq!(pools.totals().0, 5);
        });
    }
}
