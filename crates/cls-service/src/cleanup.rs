//! Periodic clean-up in batches: published outbox rows past their retention (event-publisher),
//! deleted resources past theirs (reconcile-scheduler), expired idempotency keys
//! (api-gateway). Each pass deletes in batches, back to back while they come back full, so a
//! backlog never becomes one long transaction. Every replica runs its service's job: the
//! statements are safe to run concurrently (the purge and the idempotency prune skip rows
//! another replica is deleting; two outbox prunes of the same rows delete them once).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// A clean-up job: its name (for log lines), how often it runs, the most rows per batch, and
/// the counter of rows it removed.
#[derive(Debug, Clone)]
pub struct Cleanup {
    pub name: &'static str,
    pub interval: Duration,
    pub batch: i64,
    pub removed: prometheus::IntCounter,
}

/// What one batch removed, or why it failed.
pub type BatchResult = Result<usize, Box<dyn std::error::Error + Send + Sync>>;

/// A short pause between full batches, so a backlog leaves room for the service's own work.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// Runs `job` until `stop` turns true: every interval, `batch(limit)` until it removes fewer
/// than `limit` rows. A failed batch is logged and retried at the next interval.
pub async fn run<F, Fut>(job: Cleanup, mut stop: watch::Receiver<bool>, mut batch: F)
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = BatchResult>,
{
    loop {
        let mut pass = 0;
        loop {
            match batch(job.batch).await {
                Ok(removed) => {
                    job.removed.inc_by(removed as u64);
                    pass += removed;
                    if i64::try_from(removed).unwrap_or(i64::MAX) < job.batch || *stop.borrow() {
                        break;
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
                Err(error) => {
                    tracing::warn!(job = job.name, %error, "clean-up failed; retrying at the next interval");
                    break;
                }
            }
        }
        if pass > 0 {
            tracing::info!(job = job.name, removed = pass, "clean-up pass");
        }
        tokio::select! {
            _ = tokio::time::sleep(job.interval) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn full_batches_repeat_at_once_and_a_short_one_waits_for_the_interval() {
        let interval = Duration::from_millis(300);
        // 25 rows to remove, in batches of 10; 3 more arrive later.
        let backlog = Arc::new(Mutex::new(25_usize));
        let calls = Arc::new(Mutex::new(Vec::<(Instant, usize)>::new()));
        let (stop_tx, stop) = watch::channel(false);
        let removed_total = prometheus::IntCounter::new("removed_total", "test").unwrap();
        let job = Cleanup {
            name: "test",
            interval,
            batch: 10,
            removed: removed_total.clone(),
        };
        let task = tokio::spawn({
            let (backlog, calls) = (backlog.clone(), calls.clone());
            run(job, stop, move |limit| {
                let (backlog, calls) = (backlog.clone(), calls.clone());
                async move {
                    let mut left = backlog.lock().unwrap();
                    let removed = (*left).min(usize::try_from(limit).unwrap());
                    *left -= removed;
                    calls.lock().unwrap().push((Instant::now(), removed));
                    Ok(removed)
                }
            })
        });
        let removed = |calls: &Mutex<Vec<(Instant, usize)>>| -> Vec<usize> {
            calls.lock().unwrap().iter().map(|c| c.1).collect()
        };
        let until = |n: usize| {
            let calls = calls.clone();
            async move {
                while calls.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until(3))
            .await
            .unwrap();
        assert_eq!(
            removed(&calls),
            [10, 10, 5],
            "back to back until a batch is not full"
        );

        *backlog.lock().unwrap() = 3;
        tokio::time::timeout(Duration::from_secs(10), until(4))
            .await
            .unwrap();
        let all = calls.lock().unwrap().clone();
        assert_eq!(removed(&calls), [10, 10, 5, 3]);
        assert!(
            all[3].0 - all[2].0 >= interval,
            "the next pass waits for the interval"
        );

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the job stops when told")
            .unwrap();
    }
}
