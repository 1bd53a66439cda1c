//! The event-publisher benchmark, run by `cargo xtask bench` (release build):
//!
//! - **baseline**: a minimal Rust publisher (gcloud-sdk, no outbox, no database) publishing
//!   the same messages to the same emulator, 32 concurrent tasks in batches of 500;
//! - **relay throughput** with one and with two replicas: a backlog of events committed in one
//!   transaction, timed from the commit until Pub/Sub acknowledged every one;
//! - **commit → receipt latency** at a steady 500 changes/s, measured by a streaming-pull
//!   subscriber in the same process.
//!
//! Usage: `relay_bench OUT.json`. Starts its own Postgres cluster and Pub/Sub emulator.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark driver"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cls_domain::event::Envelope;
use cls_storage::outbox;
use cls_test_support::emulator::PROJECT;
use cls_test_support::events::cluster_updated as event;
use cls_test_support::postgres::{ensure_cluster, pg_tool, stop_cluster};
use cls_test_support::{PubSubEmulator, cpu};
use event_publisher::{Config, Running};
use gcloud_sdk::google::pubsub::v1::publisher_client::PublisherClient;
use gcloud_sdk::google::pubsub::v1::subscriber_client::SubscriberClient;
use gcloud_sdk::google::pubsub::v1::{
    DeleteSubscriptionRequest, PublishRequest, PubsubMessage, StreamingPullRequest, Subscription,
    Topic,
};
use gcloud_sdk::{GoogleApi, GoogleAuthMiddleware};
use uuid::Uuid;

/// The deployed binaries' allocator, so the in-process services run as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BACKLOG: usize = 50_000;
const CLUSTERS: usize = 64;
const RATE: u64 = 500;
const LATENCY_SECONDS: u64 = 10;
const WARM_UP_SECONDS: u64 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "relay-bench.json".into());
    let dir = std::env::temp_dir().join("cls-bench-relay-pg");
    let admin_url = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || ensure_cluster(&dir, None, &["max_connections=200", "shared_buffers=256MB"])
    })
    .await??;
    let port = admin_url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("5432")
        .to_owned();
    for sql in [
        "DROP DATABASE IF EXISTS cls_relay_bench",
        "CREATE DATABASE cls_relay_bench",
    ] {
        let status = pg_tool("psql")?
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-qc", sql])
            .status()?;
        anyhow::ensure!(status.success(), "psql failed: {sql}");
    }
    let url = format!("postgres://postgres@127.0.0.1:{port}/cls_relay_bench");
    cls_storage::migrate::run(&url).await?;
    let emulator = tokio::task::spawn_blocking(PubSubEmulator::start).await??;
    let result = run(&url, &port, &emulator.host()).await;
    drop(emulator);
    let _ = tokio::task::spawn_blocking(move || stop_cluster(&dir)).await;
    let result = result?;
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    println!("{result}");
    Ok(())
}

async fn run(url: &str, port: &str, host: &str) -> anyhow::Result<serde_json::Value> {
    let anonymous =
        || gcloud_sdk::google_cloud_auth::credentials::anonymous::Builder::new().build();
    let endpoint = format!("http://{host}");
    let publisher: GoogleApi<PublisherClient<GoogleAuthMiddleware>> =
        GoogleApi::from_function_with_credentials(
            PublisherClient::new,
            &endpoint,
            None,
            anonymous(),
        )
        .await?;
    let subscriber: GoogleApi<SubscriberClient<GoogleAuthMiddleware>> =
        GoogleApi::from_function_with_credentials(
            SubscriberClient::new,
            &endpoint,
            None,
            anonymous(),
        )
        .await?;

    let clusters: Vec<Uuid> = (0..CLUSTERS).map(|_| Uuid::new_v4()).collect();
    let events = |n: usize| -> Vec<Envelope> {
        (0..n)
            .map(|i| event(clusters[i % CLUSTERS], (i / CLUSTERS) as i64 + 1))
            .collect()
    };

    // Baseline: the emulator's own rate for the same messages, without the outbox.
    let baseline_topic = format!("projects/{PROJECT}/topics/bench-baseline");
    create_topic(&publisher, &baseline_topic).await?;
    let messages: Vec<PubsubMessage> = events(BACKLOG).iter().map(message).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in messages.chunks(BACKLOG.div_ceil(32)) {
        let (client, topic, chunk) = (publisher.get(), baseline_topic.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            for batch in chunk.chunks(500) {
                client
                    .publish(PublishRequest {
                        topic: topic.clone(),
                        messages: batch.to_vec(),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let baseline_rate = BACKLOG as f64 / started.elapsed().as_secs_f64();
    println!("baseline: {baseline_rate:.0} msg/s");

    // Whichever latency run came first, straight after the throughput burst above, had a long
    // tail (p99 120-125 ms where the second run measured 52 ms for the same delivery): the
    // emulator (a JVM) had just taken 50 000 messages and had not streamed to a subscriber
    // yet. Both runs follow a warm-up at the same rate on a topic of their own.
    let warm_topic = format!("projects/{PROJECT}/topics/bench-warm-up");
    let warm_subscription = format!("projects/{PROJECT}/subscriptions/bench-warm-up");
    create_topic(&publisher, &warm_topic).await?;
    ordered_subscription(&subscriber, &warm_subscription, &warm_topic).await?;
    let (warm_receipts, warm_receiver) = receive(&subscriber, warm_subscription.clone());
    let warm_total = (RATE * WARM_UP_SECONDS) as usize;
    let warm_sent = publish_at_rate(&publisher, &warm_topic, &clusters, warm_total).await;
    await_receipts(&warm_receipts, warm_total).await;
    warm_receiver.abort();
    let (warm_p50, warm_p99, _) = latency(&warm_sent, &warm_receipts);
    println!("warm-up, minimal publisher → receipt: p50 {warm_p50:.1} ms, p99 {warm_p99:.1} ms");
    subscriber
        .get()
        .delete_subscription(DeleteSubscriptionRequest {
            subscription: warm_subscription,
        })
        .await?;

    // Commit → receipt latency at a steady rate, one replica.
    let topic = format!("projects/{PROJECT}/topics/cluster-events");
    let subscription = format!("projects/{PROJECT}/subscriptions/bench-latency");
    // The relay would create it too; the subscription needs it first.
    let _ = create_topic(&publisher, &topic).await;
    ordered_subscription(&subscriber, &subscription, &topic).await?;
    let relay = start(url, host).await?;
    wait_for_shards(std::slice::from_ref(&relay)).await;
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (receipts, receiver) = receive(&subscriber, subscription.clone());
    let total = (RATE * LATENCY_SECONDS) as usize;
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (url, committed, clusters) = (url.to_owned(), committed.clone(), clusters.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = cls_storage::connect(&url).await.unwrap();
            let period = Duration::from_micros(1_000_000 * writers as u64 / RATE);
            let mut tick = tokio::time::interval(period);
            for i in 0..total / writers {
                tick.tick().await;
                let e = event(clusters[(i * writers + w) % CLUSTERS], i as i64 + 1);
                let written = outbox::insert(&mut conn, std::slice::from_ref(&e))
                    .await
                    .unwrap();
                let at = Instant::now();
                outbox::wake(&mut conn, written).await;
                committed.lock().unwrap().insert(e.id.to_string(), at);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    await_receipts(&receipts, total).await;
    receiver.abort();
    // The throughput runs below publish to this topic: without a subscription, as the
    // baseline's topic had none when it was measured (the emulator would otherwise store, and
    // order, every message of the relay's backlog for it, and none of the baseline's).
    subscriber
        .get()
        .delete_subscription(DeleteSubscriptionRequest { subscription })
        .await?;
    let commit_to_ack = &relay.metrics.commit_to_publish;
    let relay_mean_ms =
        commit_to_ack.get_sample_sum() / commit_to_ack.get_sample_count().max(1) as f64 * 1000.0;
    println!("relay commit → Pub/Sub ack, mean: {relay_mean_ms:.1} ms");
    relay.shutdown().await;
    let committed = committed.lock().unwrap().clone();
    let (latency_p50, latency_p99, received) = latency(&committed, &receipts);
    println!("relay commit → receipt: p50 {latency_p50:.1} ms, p99 {latency_p99:.1} ms");

    // The same rate straight from a minimal publisher: what the emulator's own delivery costs.
    let direct_subscription = format!("projects/{PROJECT}/subscriptions/bench-baseline-latency");
    ordered_subscription(&subscriber, &direct_subscription, &baseline_topic).await?;
    let (direct_receipts, direct_receiver) = receive(&subscriber, direct_subscription);
    let sent = publish_at_rate(&publisher, &baseline_topic, &clusters, total).await;
    await_receipts(&direct_receipts, total).await;
    direct_receiver.abort();
    let (direct_p50, direct_p99, _) = latency(&sent, &direct_receipts);
    println!("minimal publisher → receipt: p50 {direct_p50:.1} ms, p99 {direct_p99:.1} ms");

    // Relay throughput, one and two replicas.
    let mut relay_rates = Vec::new();
    let mut relay_cores = Vec::new();
    for replicas in [1usize, 2] {
        let mut running = Vec::new();
        for _ in 0..replicas {
            running.push(start(url, host).await?);
        }
        wait_for_shards(&running).await;
        let backlog = events(BACKLOG);
        let mut conn = cls_storage::connect(url).await?;
        use diesel_async::AsyncConnection as _;
        let written = conn
            .transaction(async |conn| {
                let mut written = outbox::Written::default();
                for chunk in backlog.chunks(1000) {
                    written = written.and(outbox::insert(conn, chunk).await?);
                }
                Ok::<_, cls_storage::StorageError>(written)
            })
            .await?;
        // From the commit: the relays see the rows from here on. Watched through the relays'
        // own counters, not the database: counting the backlog every 10 ms kept Postgres busy
        // on the cores being measured (each call counts the pending rows, and until the
        // `outbox_dead` index it read the whole table for dead letters).
        let started = Instant::now();
        let cpu_before = cpu::Usage::now();
        outbox::wake(&mut conn, written).await;
        let published = || -> u64 {
            running
                .iter()
                .map(|r| {
                    r.metrics
                        .published
                        .with_label_values(&["cluster-events"])
                        .get()
                })
                .sum()
        };
        while published() < BACKLOG as u64 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "only {} of {BACKLOG} events published after 300 s",
                published()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cores = cpu::Usage::now().since(&cpu_before).cores(
            elapsed,
            &[
                ("postgres", "postgres"),
                ("java", "emulator"),
                (cpu::own_command().as_str(), "relay and driver"),
            ],
        );
        println!("relay, {replicas} replica(s), cores used while draining: {cores}");
        relay_cores.push(cores);
        // Untimed: rows left from the latency runs, published in between, are settled too.
        let settling = Instant::now();
        while outbox::backlog(&mut conn).await?.pending > 0 {
            anyhow::ensure!(
                settling.elapsed() < Duration::from_secs(60),
                "rows still pending 60 s after {BACKLOG} were published"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rate = BACKLOG as f64 / elapsed;
        let publish_seconds: f64 = running
            .iter()
            .map(|r| {
                r.metrics
                    .publish_duration
                    .with_label_values(&["cluster-events"])
                    .get_sample_sum()
            })
            .sum();
        let publishes: u64 = running
            .iter()
            .map(|r| {
                r.metrics
                    .publish_duration
                    .with_label_values(&["cluster-events"])
                    .get_sample_count()
            })
            .sum();
        println!(
            "relay, {replicas} replica(s): {rate:.0} events/s; {publishes} publish calls, {publish_seconds:.2} s inside them in total over {elapsed:.2} s"
        );
        relay_rates.push(rate);
        for r in running {
            r.shutdown().await;
        }
        // What autovacuum does between bursts in production: clear the published rows' dead
        // index entries so the next run starts from the same state.
        vacuum(port)?;
    }

    Ok(serde_json::json!({
        "backlog_events": BACKLOG,
        "baseline_msgs_per_s": baseline_rate,
        "relay_events_per_s_1_replica": relay_rates[0],
        "relay_events_per_s_2_replicas": relay_rates[1],
        "relay_cores_1_replica": relay_cores[0],
        "relay_cores_2_replicas": relay_cores[1],
        "latency_rate_per_s": RATE,
        "latency_events_sent": total,
        "latency_events_received": received,
        "latency_p50_ms": latency_p50,
        "latency_p99_ms": latency_p99,
        "direct_latency_p50_ms": direct_p50,
        "direct_latency_p99_ms": direct_p99,
        "relay_commit_to_ack_mean_ms": relay_mean_ms,
    }))
}

fn message(e: &Envelope) -> PubsubMessage {
    PubsubMessage {
        data: serde_json::to_vec(&e.body).unwrap(),
        attributes: e.attributes.clone().into_iter().collect(),
        ordering_key: e.ordering_key.clone(),
        ..Default::default()
    }
}

type Receipts = Arc<Mutex<Vec<(String, Instant)>>>;

/// Streams `subscription`, acknowledging everything and recording when each event (`ce-id`)
/// arrived.
fn receive(
    subscriber: &GoogleApi<SubscriberClient<GoogleAuthMiddleware>>,
    subscription: String,
) -> (Receipts, tokio::task::JoinHandle<()>) {
    let receipts: Receipts = Arc::default();
    let mut client = subscriber.get();
    let task = tokio::spawn({
        let receipts = receipts.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<StreamingPullRequest>(64);
            let _ = tx
                .send(StreamingPullRequest {
                    subscription,
                    stream_ack_deadline_seconds: 60,
                    client_id: "bench".into(),
                    ..Default::default()
                })
                .await;
            // The emulator answers a streaming pull only once there is a message, so this
            // runs in its own task while the senders start.
            let Ok(response) = client
                .streaming_pull(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            else {
                return;
            };
            let mut inbound = response.into_inner();
            while let Ok(Some(response)) = inbound.message().await {
                let now = Instant::now();
                let mut ack_ids = Vec::new();
                for m in response.received_messages {
                    ack_ids.push(m.ack_id);
                    let id = m
                        .message
                        .and_then(|m| m.attributes.get("ce-id").cloned())
                        .unwrap_or_default();
                    receipts.lock().unwrap().push((id, now));
                }
                let _ = tx
                    .send(StreamingPullRequest {
                        ack_ids,
                        ..Default::default()
                    })
                    .await;
            }
        }
    });
    (receipts, task)
}

async fn create_topic(
    publisher: &GoogleApi<PublisherClient<GoogleAuthMiddleware>>,
    name: &str,
) -> anyhow::Result<()> {
    publisher
        .get()
        .create_topic(Topic {
            name: name.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// A subscription to `topic` with message ordering, as controllers subscribe.
async fn ordered_subscription(
    subscriber: &GoogleApi<SubscriberClient<GoogleAuthMiddleware>>,
    name: &str,
    topic: &str,
) -> anyhow::Result<()> {
    subscriber
        .get()
        .create_subscription(Subscription {
            name: name.to_owned(),
            topic: topic.to_owned(),
            ack_deadline_seconds: 60,
            enable_message_ordering: true,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Publishes `total` events straight to `topic` at [`RATE`] from four tasks, as the outbox
/// writers commit them; returns when each was sent.
async fn publish_at_rate(
    publisher: &GoogleApi<PublisherClient<GoogleAuthMiddleware>>,
    topic: &str,
    clusters: &[Uuid],
    total: usize,
) -> HashMap<String, Instant> {
    let writers = 4;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut client, topic, sent, clusters) = (
            publisher.get(),
            topic.to_owned(),
            sent.clone(),
            clusters.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_micros(1_000_000 * writers as u64 / RATE);
            let mut tick = tokio::time::interval(period);
            for i in 0..total / writers {
                tick.tick().await;
                let e = event(clusters[(i * writers + w) % CLUSTERS], i as i64 + 1);
                sent.lock()
                    .unwrap()
                    .insert(e.id.to_string(), Instant::now());
                client
                    .publish(PublishRequest {
                        topic: topic.clone(),
                        messages: vec![message(&e)],
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    sent.lock().unwrap().clone()
}

/// Waits until `total` receipts arrived, for 30 s at most.
async fn await_receipts(receipts: &Receipts, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while receipts.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 and p99 of receipt minus send (ms), and how many distinct events arrived.
fn latency(sent: &HashMap<String, Instant>, receipts: &Receipts) -> (f64, f64, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut latencies: Vec<Duration> = receipts
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .filter_map(|(id, at)| sent.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (pct(0.50), pct(0.99), latencies.len())
}

fn psql(port: &str, database: &str, sql: &str) -> anyhow::Result<()> {
    let status = pg_tool("psql")?
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            database,
            "-qc",
            sql,
        ])
        .status()?;
    anyhow::ensure!(status.success(), "psql failed: {sql}");
    Ok(())
}

fn vacuum(port: &str) -> anyhow::Result<()> {
    psql(port, "cls_relay_bench", "VACUUM ANALYZE outbox")
}

async fn start(url: &str, host: &str) -> anyhow::Result<Running> {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", url),
        ("PUBSUB_EMULATOR_HOST", host),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("OUTBOX_REBALANCE_INTERVAL", "300ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // The relay's tunables may be set from outside, to compare settings on one build.
    for name in ["OUTBOX_BATCH_SIZE", "DATABASE_MAX_CONNECTIONS"] {
        if let Ok(value) = std::env::var(name) {
            vars.insert(name.to_owned(), value);
        }
    }
    let config = Config::from_vars(&vars)?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    event_publisher::start(&config, grpc, admin).await
}

/// Waits until the replicas hold every shard between them, evenly.
async fn wait_for_shards(running: &[Running]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let held: Vec<i64> = running
            .iter()
            .map(|r| r.metrics.shards_held.get())
            .collect();
        if held.iter().sum::<i64>() == 32 && held.iter().all(|h| *h == 32 / running.len() as i64) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
