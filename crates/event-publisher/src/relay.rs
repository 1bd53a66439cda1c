//! The outbox relay (SPEC §5.2).
//!
//! - **Leases.** Outbox rows carry a shard (hash of `cluster_id`). Each replica keeps one
//!   dedicated connection on which it holds session advisory locks: one marking it a live
//!   replica, one per shard it works on. Every `rebalance_interval` it counts the live
//!   replicas and holds `ceil(SHARDS / replicas)` shards, releasing extras (after their
//!   current batch) and taking free ones. A replica that dies loses its connection and with
//!   it every lease, so the others pick its shards up on their next rebalance. If the lease
//!   connection breaks, every worker is stopped before anything is re-acquired.
//! - **Workers.** One task per held shard reads pending rows in `seq` order (commit order per
//!   cluster), publishes them grouped by topic in one request each, waits for Pub/Sub's
//!   acknowledgement, then marks them published. A failed publish pauses only the ordering
//!   keys (clusters) in the failed request, with jittered exponential backoff; their later
//!   rows wait, other clusters go on. The failure (`attempts`, `last_error`) is recorded on
//!   each paused cluster's oldest row only, the one that holds it up. A request rejected as
//!   invalid is retried message by message, and a message rejected on its own is dead-lettered
//!   with the error. While some of a shard's keys are paused, every read walks past their
//!   pending rows (a backlog that grows for as long as Pub/Sub fails) and every commit to the
//!   shard wakes the worker, so a read that found less than a batch is followed by a gap in
//!   proportion to its cost (`paused_read_gap`, at most `poll_interval`) before the next one.
//! - **Wake-ups.** A `LISTEN` connection turns commit notifications into per-shard wake-ups
//!   within milliseconds; workers also poll every `poll_interval`, and after the listener
//!   reconnects every shard is woken, so a missed notification costs at most one poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cls_domain::event::{OUTBOX_SHARDS, Topic};
use cls_storage::outbox::{self, PendingRow};
use cls_storage::{AsyncPgConnection, PgPool, StorageError};
use futures_util::StreamExt as _;
use gcloud_sdk::google::pubsub::v1::PubsubMessage;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::pubsub::{PubSub, PublishError, message};

/// The relay's tunables (from [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub rebalance_interval: Duration,
    pub backoff: Backoff,
}

/// The longest wait between attempts to reconnect to Postgres (the notification listener and
/// the shard-lease connection). Shorter than the publish backoff's cap (`PUBLISH_BACKOFF_MAX`,
/// 30 s by default), which spares a struggling Pub/Sub: a refused connection costs the
/// database nothing, and every second waited after it is back (a failover of a minute
/// reaches the cap) is a second no event is published.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl RelaySettings {
    /// The wait before reconnecting to Postgres after `attempt` failures in a row.
    pub fn reconnect_delay(&self, attempt: u32) -> Duration {
        Backoff {
            initial: self.backoff.initial,
            max: self.backoff.max.min(RECONNECT_BACKOFF_MAX),
        }
        .delay(attempt)
    }
}

/// Jittered exponential backoff: attempt `n` waits between half and all of
/// `min(max, initial × 2ⁿ⁻¹)`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self.initial.saturating_mul(1 << exponent).min(self.max);
        // Uniform in [full/2, full]: replicas and keys retrying together spread out.
        let random = (Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        full.mul_f64(0.5 + random / 2.0)
    }
}

/// What every relay task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) database_url: String,
    pub(crate) pubsub: Arc<PubSub>,
    pub(crate) metrics: Metrics,
    pub(crate) settings: RelaySettings,
    /// One wake-up per shard.
    pub(crate) wakeups: Vec<Notify>,
}

impl Shared {
    pub(crate) fn new(
        pool: PgPool,
        database_url: String,
        pubsub: Arc<PubSub>,
        metrics: Metrics,
        settings: RelaySettings,
    ) -> Shared {
        Shared {
            pool,
            database_url,
            pubsub,
            metrics,
            settings,
            wakeups: (0..OUTBOX_SHARDS).map(|_| Notify::new()).collect(),
        }
    }

    fn wake(&self, shard: i16) {
        if let Some(notify) = usize::try_from(shard)
            .ok()
            .and_then(|s| self.wakeups.get(s))
        {
            notify.notify_one();
        }
    }

    fn wake_all(&self) {
        for notify in &self.wakeups {
            notify.notify_one();
        }
    }
}

/// Sleeps `duration`, or less if `stop` turns true; returns whether to stop.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications.

/// Turns outbox commit notifications into shard wake-ups; reconnects with backoff.
pub(crate) async fn listen(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0;
    loop {
        let connected = async {
            let mut conn = cls_storage::connect(&shared.database_url).await?;
            outbox::listen(&mut conn).await?;
            Ok::<_, StorageError>(conn)
        }
        .await;
        match connected {
            Ok(mut conn) => {
                attempt = 0;
                // Anything committed while we were not listening.
                shared.wake_all();
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                loop {
                    tokio::select! {
                        note = notifications.next() => match note {
                            Some(Ok(note)) => {
                                for shard in outbox::notified_shards(&note.payload) {
                                    shared.wake(shard);
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "outbox listener connection lost");
                                break;
                            }
                            None => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for outbox notifications"),
        }
        attempt += 1;
        if sleep_or_stop(shared.settings.reconnect_delay(attempt), &mut stop).await {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Leases.

struct Worker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Holds this replica's fair share of shard leases and runs a worker per held shard.
pub(crate) async fn lease(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0;
    loop {
        let mut held: BTreeMap<i16, Worker> = BTreeMap::new();
        match cls_storage::connect(&shared.database_url).await {
            Ok(mut conn) => {
                attempt = 0;
                let lost = loop {
                    if let Err(e) = rebalance(&shared, &mut conn, &mut held).await {
                        break e;
                    }
                    if sleep_or_stop(shared.settings.rebalance_interval, &mut stop).await {
                        // Orderly: let each worker finish its batch, then hand its shard back.
                        stop_workers(&mut held).await;
                        for shard in 0..OUTBOX_SHARDS {
                            let _ = outbox::unlock_shard(&mut conn, shard).await;
                        }
                        shared.metrics.shards_held.set(0);
                        return;
                    }
                };
                tracing::warn!(error = %lost, "shard lease connection lost; stopping workers");
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the shard lease connection"),
        }
        // The leases went with the connection: no worker may go on without one.
        stop_workers(&mut held).await;
        shared.metrics.shards_held.set(0);
        attempt += 1;
        if sleep_or_stop(shared.settings.reconnect_delay(attempt), &mut stop).await {
            return;
        }
    }
}

async fn stop_workers(held: &mut BTreeMap<i16, Worker>) {
    for worker in held.values() {
        let _ = worker.stop.send(true);
    }
    for (_, worker) in std::mem::take(held) {
        let _ = worker.handle.await;
    }
}

/// The number of shards each of `replicas` live replicas should hold.
pub fn fair_share(replicas: i64) -> usize {
    let shards = i64::from(OUTBOX_SHARDS);
    usize::try_from((shards + replicas.max(1) - 1) / replicas.max(1)).unwrap_or(1)
}

async fn rebalance(
    shared: &Arc<Shared>,
    conn: &mut AsyncPgConnection,
    held: &mut BTreeMap<i16, Worker>,
) -> Result<(), StorageError> {
    outbox::join_relay(conn).await?;
    let target = fair_share(outbox::relay_replicas(conn).await?);
    // Give back extras first, so a newcomer finds free shards on its next round.
    while held.len() > target {
        let Some((shard, worker)) = held.pop_last() else {
            break;
        };
        let _ = worker.stop.send(true);
        let _ = worker.handle.await;
        outbox::unlock_shard(conn, shard).await?;
        tracing::info!(shard, "released outbox shard");
    }
    if held.len() < target {
        // Start at a different shard per replica so replicas don't contend for the same ones.
        let offset = (std::process::id() as usize + Uuid::new_v4().as_u128() as usize)
            % OUTBOX_SHARDS as usize;
        for i in 0..OUTBOX_SHARDS as usize {
            if held.len() >= target {
                break;
            }
            let shard = ((offset + i) % OUTBOX_SHARDS as usize) as i16;
            if held.contains_key(&shard) || !outbox::try_lock_shard(conn, shard).await? {
                continue;
            }
            tracing::info!(shard, "leased outbox shard");
            let (stop, stopped) = watch::channel(false);
            let handle = tokio::spawn(work(shared.clone(), shard, stopped));
            held.insert(shard, Worker { stop, handle });
        }
    }
    shared
        .metrics
        .shards_held
        .set(i64::try_from(held.len()).unwrap_or(0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workers.

/// An ordering key (cluster) whose publishing is paused after a failure.
#[derive(Debug, Clone, Copy)]
struct Pause {
    until: Instant,
    attempts: u32,
}

/// The shortest gap between two reads of a shard while some of its keys are paused.
const PAUSED_READ_MIN_GAP: Duration = Duration::from_millis(50);

/// While keys are paused, a read waits this many times as long as the previous one took.
const PAUSED_READ_COST_FACTOR: u32 = 128;

/// How long after a read that found less than a batch a shard worker reads again while some
/// of its keys are paused (such a read walks past every pending row of those keys, a backlog
/// that grows for as long as Pub/Sub fails, and every commit to the shard wakes the worker): in
/// proportion to what the last read cost, so those reads take at most about 1/128 of a
/// connection per shard, but at least 50 ms and at most `poll_interval` apart. Without paused
/// keys, or after a full batch, a worker reads as soon as it is woken.
fn paused_read_gap(last_read: Duration, poll_interval: Duration) -> Duration {
    last_read
        .saturating_mul(PAUSED_READ_COST_FACTOR)
        .max(PAUSED_READ_MIN_GAP)
        .min(poll_interval)
}

/// Publishes one shard's rows until told to stop.
async fn work(shared: Arc<Shared>, shard: i16, mut stop: watch::Receiver<bool>) {
    let mut paused: HashMap<String, Pause> = HashMap::new();
    let mut db_attempt = 0;
    let notify = &shared.wakeups[usize::try_from(shard).unwrap_or(0)];
    // When the last read that was not a full batch started, and how long it took.
    let mut last_read: Option<(Instant, Duration)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = Instant::now();
        let waiting: Vec<&str> = paused
            .iter()
            .filter(|(_, p)| p.until > now)
            .map(|(k, _)| k.as_str())
            .collect();
        if !waiting.is_empty()
            && let Some((at, took)) = last_read
        {
            let next = at + paused_read_gap(took, shared.settings.poll_interval);
            if next > now {
                if sleep_or_stop(next - now, &mut stop).await {
                    return;
                }
                continue;
            }
        }
        let started = Instant::now();
        let rows = match fetch(&shared, shard, &waiting).await {
            Ok(rows) => {
                db_attempt = 0;
                shared.metrics.outbox_reads.inc();
                // A full batch was useful work and leaves more to read at once; a shorter one
                // walked to the end of the shard's pending rows.
                let full =
                    i64::try_from(rows.len()).unwrap_or(i64::MAX) >= shared.settings.batch_size;
                last_read = (!full).then(|| (started, started.elapsed()));
                rows
            }
            Err(e) => {
                db_attempt += 1;
                tracing::warn!(shard, error = %e, "cannot read the outbox");
                if sleep_or_stop(shared.settings.backoff.delay(db_attempt), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        if rows.is_empty() {
            let next_retry = paused
                .values()
                .map(|p| p.until.saturating_duration_since(now))
                .min()
                .unwrap_or(shared.settings.poll_interval)
                .min(shared.settings.poll_interval);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(next_retry) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        publish_rows(&shared, rows, &mut paused).await;
    }
}

async fn fetch(
    shared: &Shared,
    shard: i16,
    paused_keys: &[&str],
) -> Result<Vec<PendingRow>, anyhow::Error> {
    let mut conn = shared.pool.get().await?;
    Ok(
        outbox::pending_in_shard_except(&mut conn, shard, paused_keys, shared.settings.batch_size)
            .await?,
    )
}

/// Rows of one topic with their messages, in `seq` order.
type Batch = Vec<(PendingRow, PubsubMessage)>;

/// What happened to each row of a batch.
#[derive(Debug, Default)]
struct Outcome {
    /// Id, ordering key, topic and commit time of each acknowledged row.
    published: Vec<(Uuid, String, Topic, OffsetDateTime)>,
    /// Ordering keys to pause, with the error and the ids of their failed rows.
    failed: Vec<(String, String, Vec<Uuid>, Topic)>,
    dead: Vec<(Uuid, Option<Topic>, String)>,
}

/// The Pub/Sub message of a row.
fn row_message(row: &PendingRow) -> Result<PubsubMessage, String> {
    message(
        &row.body,
        &row.attributes,
        &row.ordering_key,
        row.traceparent.as_deref(),
    )
}

async fn publish_rows(shared: &Shared, rows: Vec<PendingRow>, paused: &mut HashMap<String, Pause>) {
    let mut groups: BTreeMap<&'static str, (Topic, Batch)> = BTreeMap::new();
    let mut outcome = Outcome::default();
    for row in rows {
        let Some(topic) = Topic::parse(&row.topic) else {
            let error = format!("unknown topic '{}'", row.topic);
            outcome.dead.push((row.id, None, error));
            continue;
        };
        match row_message(&row) {
            Ok(m) => groups
                .entry(topic.as_str())
                .or_insert_with(|| (topic, Vec::new()))
                .1
                .push((row, m)),
            Err(error) => outcome.dead.push((row.id, Some(topic), error)),
        }
    }
    let results = futures_util::future::join_all(
        groups
            .into_values()
            .map(|(topic, batch)| publish_group(shared, topic, batch)),
    )
    .await;
    for result in results {
        outcome.published.extend(result.published);
        outcome.failed.extend(result.failed);
        outcome.dead.extend(result.dead);
    }
    settle(shared, outcome, paused).await;
}

/// Publishes one topic's messages in one request; on rejection, one message at a time.
async fn publish_group(shared: &Shared, topic: Topic, batch: Batch) -> Outcome {
    let mut outcome = Outcome::default();
    // The request takes the messages; a rejected batch builds them again from the rows.
    let (batch, messages): (Vec<PendingRow>, Vec<PubsubMessage>) = batch.into_iter().unzip();
    let spans = producer_spans(shared, topic, &batch);
    let first = timed_publish(shared, topic, messages).await;
    if first.is_err() {
        for span in &spans {
            span.record("otel.status_code", "ERROR");
        }
    }
    drop(spans);
    match first {
        Ok(()) => {
            outcome.published = batch
                .iter()
                .map(|row| (row.id, row.ordering_key.clone(), topic, row.created_at))
                .collect();
        }
        Err(PublishError::Rejected(error)) if batch.len() == 1 => {
            outcome.dead.push((batch[0].id, Some(topic), error));
        }
        Err(PublishError::Rejected(error)) => {
            tracing::warn!(%error, "batch rejected; publishing its messages one by one");
            let mut stopped_keys: Vec<String> = Vec::new();
            for row in batch {
                if stopped_keys.contains(&row.ordering_key) {
                    // A transient failure earlier in this key: its later rows wait.
                    continue;
                }
                let m = match row_message(&row) {
                    Ok(m) => m,
                    Err(error) => {
                        outcome.dead.push((row.id, Some(topic), error));
                        continue;
                    }
                };
                match timed_publish(shared, topic, vec![m]).await {
                    Ok(()) => outcome.published.push((
                        row.id,
                        row.ordering_key.clone(),
                        topic,
                        row.created_at,
                    )),
                    Err(PublishError::Rejected(error)) => {
                        outcome.dead.push((row.id, Some(topic), error));
                    }
                    Err(e) => {
                        stopped_keys.push(row.ordering_key.clone());
                        outcome
                            .failed
                            .push((row.ordering_key, e.to_string(), vec![row.id], topic));
                    }
                }
            }
        }
        Err(e) => {
            if matches!(e, PublishError::TopicMissing(_)) {
                tracing::warn!(error = %e, "topic missing; provisioning it again");
                if let Err(e) = shared.pubsub.ensure_topics().await {
                    tracing::warn!(error = %e, "cannot provision topics");
                }
            }
            let mut by_key: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
            for row in &batch {
                by_key
                    .entry(row.ordering_key.clone())
                    .or_default()
                    .push(row.id);
            }
            let error = e.to_string();
            outcome.failed = by_key
                .into_iter()
                .map(|(key, ids)| (key, error.clone(), ids, topic))
                .collect();
        }
    }
    outcome
}

/// One producer span per traced row, a child of the transaction that wrote it (its stored
/// `traceparent`), covering the publish request that carries it; so a change's trace runs
/// from the REST call through the outbox to Pub/Sub, and on to the controller through the
/// message's `traceparent` attribute. None when tracing is off or the row was not traced.
fn producer_spans(shared: &Shared, topic: Topic, batch: &[PendingRow]) -> Vec<tracing::Span> {
    if !cls_telemetry::tracing_enabled() {
        return Vec::new();
    }
    let name = shared.pubsub.topic_name(topic);
    let short = name.rsplit('/').next().unwrap_or(name);
    batch
        .iter()
        .filter_map(|row| {
            let traceparent = row.traceparent.as_deref()?;
            let span = tracing::info_span!(
                parent: None,
                "publish",
                otel.name = %format!("{short} publish"),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "gcp_pubsub",
                messaging.operation.type = "publish",
                messaging.destination.name = %short,
                messaging.message.id = %row.id,
                messaging.batch.message_count = batch.len(),
            );
            cls_telemetry::set_remote_parent(&span, Some(traceparent));
            Some(span)
        })
        .collect()
}

async fn timed_publish(
    shared: &Shared,
    topic: Topic,
    messages: Vec<PubsubMessage>,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let result = shared.pubsub.publish(topic, messages).await;
    shared
        .metrics
        .publish_duration
        .with_label_values(&[topic.as_str()])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Records the outcome of a batch in the outbox, the pause table and the metrics.
async fn settle(shared: &Shared, outcome: Outcome, paused: &mut HashMap<String, Pause>) {
    let now = OffsetDateTime::now_utc();
    let metrics = &shared.metrics;
    let mut conn = match shared.pool.get().await {
        Ok(conn) => Some(conn),
        Err(e) => {
            // Published rows stay pending and go out again later (at least once).
            tracing::warn!(error = %e, "cannot record publish results");
            None
        }
    };
    if !outcome.published.is_empty() {
        let ids: Vec<Uuid> = outcome.published.iter().map(|(id, ..)| *id).collect();
        if let Some(conn) = conn.as_mut()
            && let Err(e) = outbox::mark_published(conn, &ids, now).await
        {
            tracing::warn!(error = %e, "cannot mark rows published; they will be sent again");
        }
        for (_, _, topic, created_at) in &outcome.published {
            metrics.published.with_label_values(&[topic.as_str()]).inc();
            metrics
                .commit_to_publish
                .observe((now - *created_at).as_seconds_f64().max(0.0));
        }
    }
    // Success for a key ends its pause; failure (below) starts or extends it.
    for (_, key, _, _) in &outcome.published {
        paused.remove(key);
    }
    // Each paused cluster's oldest row of the request (its ids are in `seq` order), by error:
    // that row holds the cluster up, and its later rows wait behind it. Recording the failure
    // on every row of the request would rewrite up to a batch of rows per shard on every retry
    // while Pub/Sub is down.
    let mut heads: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for (key, error, ids, topic) in outcome.failed {
        metrics
            .failed
            .with_label_values(&[topic.as_str()])
            .inc_by(ids.len() as u64);
        if let Some(head) = ids.first() {
            heads.entry(error.clone()).or_default().push(*head);
        }
        let attempts = paused.get(&key).map_or(0, |p| p.attempts) + 1;
        let delay = shared.settings.backoff.delay(attempts);
        tracing::warn!(ordering_key = %key, attempts, retry_in = ?delay, %error, "publish failed");
        paused.insert(
            key,
            Pause {
                until: Instant::now() + delay,
                attempts,
            },
        );
    }
    if let Some(conn) = conn.as_mut() {
        for (error, ids) in heads {
            let _ = outbox::record_failure(conn, &ids, &error).await;
        }
    }
    for (id, topic, error) in outcome.dead {
        tracing::error!(event_id = %id, %error, "event rejected by Pub/Sub; dead-lettered");
        let label = topic.map_or("unknown", Topic::as_str);
        metrics.dead_lettered.with_label_values(&[label]).inc();
        if let Some(conn) = conn.as_mut()
            && let Err(e) = outbox::dead_letter(conn, id, &error).await
        {
            tracing::warn!(error = %e, "cannot dead-letter a row; it stays pending");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_paused_keys_are_spaced_by_their_cost() {
        let poll = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(paused_read_gap(Duration::from_micros(100), poll), ms(50));
        assert_eq!(paused_read_gap(ms(2), poll), ms(256));
        assert_eq!(
            paused_read_gap(ms(20), poll),
            poll,
            "never longer than a poll"
        );
        assert_eq!(paused_read_gap(ms(20), ms(30)), ms(30));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let first = b.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let fourth = b.delay(4);
            assert!(fourth >= Duration::from_millis(400) && fourth <= Duration::from_millis(800));
            assert!(b.delay(30) <= Duration::from_secs(2));
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(3)).collect();
        assert!(spread.len() > 1, "jittered");
    }

    #[test]
    fn reconnecting_to_postgres_waits_at_most_five_seconds() {
        let settings = |max| RelaySettings {
            batch_size: 1,
            poll_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(1),
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max,
            },
        };
        let publishing = settings(Duration::from_secs(30));
        for _ in 0..100 {
            assert!(publishing.reconnect_delay(30) <= RECONNECT_BACKOFF_MAX);
            assert!(publishing.reconnect_delay(30) >= RECONNECT_BACKOFF_MAX / 2);
            assert!(publishing.reconnect_delay(1) <= Duration::from_millis(200));
        }
        // A publish backoff capped lower than that caps reconnects too.
        assert!(settings(Duration::from_secs(1)).reconnect_delay(30) <= Duration::from_secs(1));
        assert!(
            publishing.backoff.delay(30) > RECONNECT_BACKOFF_MAX,
            "publishing keeps its own cap"
        );
    }

    #[test]
    fn shares_cover_every_shard() {
        assert_eq!(fair_share(1), 32);
        assert_eq!(fair_share(2), 16);
        assert_eq!(fair_share(3), 11);
        assert_eq!(fair_share(0), 32);
        assert!(fair_share(40) >= 1);
    }
}
