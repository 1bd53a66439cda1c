//! What each HTTP worker has of its own: a Postgres connection pool and a gRPC channel to the
//! status-aggregator.
//!
//! Each actix-web HTTP worker is a thread with a single-threaded Tokio runtime, and a
//! connection's I/O is driven by a task on the runtime that opened it. With one pool shared
//! by the workers, a request on one worker often got a connection driven by the other: two
//! cross-thread wake-ups per query, and a GET could wait for the other worker's thread to be
//! scheduled. A gRPC channel is the same: its connection task runs where it was made. With a
//! pool and a channel per worker, a request's I/O is driven on its own thread.

use std::fmt;

use cls_storage::PgPool;
use thread_local::ThreadLocal;

/// A value per HTTP worker, made on the worker's thread as it starts
/// ([`PerWorker::register_worker`]), and one shared by every other thread (the admin server,
/// background clean-up).
pub struct PerWorker<T: Send + Sync> {
    make: Box<dyn Fn() -> T + Send + Sync>,
    workers: ThreadLocal<T>,
    shared: T,
}

impl<T: Send + Sync> PerWorker<T> {
    /// `shared` for other threads; `make` runs once on each worker's thread.
    pub fn new(shared: T, make: impl Fn() -> T + Send + Sync + 'static) -> PerWorker<T> {
        PerWorker {
            make: Box::new(make),
            workers: ThreadLocal::new(),
            shared,
        }
    }

    /// Gives the calling thread, an HTTP worker starting (inside its runtime), a value of its
    /// own; [`PerWorker::get`] on this thread returns it from then on.
    pub fn register_worker(&self) -> &T {
        self.workers.get_or(&self.make)
    }

    /// The calling thread's value: its worker's, else the shared one.
    pub fn get(&self) -> &T {
        self.workers.get().unwrap_or(&self.shared)
    }

    /// Every worker's value, then the shared one.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.workers.iter().chain([&self.shared])
    }

    #[cfg(test)]
    fn is_shared(&self, value: &T) -> bool {
        std::ptr::eq(value, &self.shared)
    }
}

impl<T: Send + Sync> fmt::Debug for PerWorker<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerWorker")
            .field("workers", &self.workers.iter().count())
            .finish_non_exhaustive()
    }
}

/// The gateway's connection pools: `DATABASE_MAX_CONNECTIONS` split evenly over the HTTP
/// workers, and a small shared pool for every other thread (the admin server's readiness
/// checks, the idempotency clean-up, the relay's wake-ups).
#[derive(Debug)]
pub struct WorkerPools {
    per_worker: u32,
    pools: PerWorker<PgPool>,
}

impl WorkerPools {
    /// The shared pool's size: a readiness check can run while the clean-up holds one.
    pub const SHARED_CONNECTIONS: u32 = 2;

    /// Pools of at most `max_connections / workers` connections each (at least one), and the
    /// shared pool. Call inside a Tokio runtime (a pool spawns its reaper task).
    pub fn new(database_url: &str, max_connections: u32, workers: usize) -> WorkerPools {
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        let per_worker = (max_connections / workers).max(1);
        let url = database_url.to_owned();
        WorkerPools {
            per_worker,
            pools: PerWorker::new(
                cls_storage::pool(database_url, Self::SHARED_CONNECTIONS),
                move || cls_storage::pool(&url, per_worker),
            ),
        }
    }

    /// Gives the calling thread, an HTTP worker starting, a pool of its own.
    pub fn register_worker(&self) -> &PgPool {
        self.pools.register_worker()
    }

    /// The calling thread's pool: its worker's, else the shared one.
    pub fn get(&self) -> &PgPool {
        self.pools.get()
    }

    /// The most connections one worker's pool opens.
    pub fn per_worker(&self) -> u32 {
        self.per_worker
    }

    /// Open and idle connections, over every pool.
    pub fn totals(&self) -> (u32, u32) {
        self.pools.iter().fold((0, 0), |(open, idle), pool| {
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
    fn each_registered_worker_has_its_own_value_and_other_threads_share_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = AtomicUsize::new(0);
        let values = PerWorker::new("shared".to_owned(), move || {
            format!("worker {}", made.fetch_add(1, Ordering::SeqCst))
        });
        let both = Barrier::new(2);
        let mut seen: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let own = values.register_worker();
                        assert!(std::ptr::eq(own, values.get()), "the worker's own value");
                        assert!(std::ptr::eq(own, values.register_worker()), "made once");
                        both.wait();
                        own.clone()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        seen.sort();
        assert_eq!(seen, ["worker 0", "worker 1"]);
        assert_eq!(values.get(), "shared", "a thread that is not a worker");
        let mut all: Vec<&str> = values.iter().map(String::as_str).collect();
        all.sort_unstable();
        assert_eq!(all, ["shared", "worker 0", "worker 1"]);
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
        assert!(pools.pools.is_shared(pools.get()));
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
