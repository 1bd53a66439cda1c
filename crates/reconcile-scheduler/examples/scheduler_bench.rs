//! The reconcile-scheduler benchmark, run by `cargo xtask bench` (release build):
//!
//! - **baseline**: the event-publisher's own gRPC `Publish` ceiling — the same reconcile
//!   events sent directly in batches of 500, by as many concurrent callers as the schedulers
//!   may have `Publish` calls in flight (replicas × `RECONCILE_WORKERS`);
//! - **scheduler**: 10 000 resources due at once, with one and with three replicas, timed
//!   from the moment they all became due (one statement, with the replicas already running
//!   and idle) until the publisher accepted every reconcile event.
//!
//! Each is measured [`TRIALS`] times, alternating, from the same state (schedule due in an
//! hour, outbox empty, database vacuumed), and the medians are reported: one trial takes about
//! a second, and single trials of either side varied by 2–4× within one run here.
//!
//! The publisher runs in-process on the same database. This measures acceptance into the
//! outbox, as the issue asks, not delivery: the benchmark holds every outbox shard's lease
//! itself, so the publisher's relay stays idle (it used to point at an unreachable Pub/Sub and
//! read, and record a failure on, the rows both sides wrote while they were measured).
//!
//! Usage: `scheduler_bench OUT.json`.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark driver"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cls_domain::event::{ReconcileEvent, ResourceRef};
use cls_domain::reconcile::ReconcileReason;
use cls_rpc::publisher::PublishRequest;
use cls_rpc::publisher::event_publisher_client::EventPublisherClient;
use cls_test_support::resources::create_cluster;
use cls_test_support::{TestDb, cpu};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use uuid::Uuid;

/// The deployed binaries' allocator, so the in-process services run as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RESOURCES: usize = 10_000;
const BATCH: usize = 500;
/// `RECONCILE_WORKERS`' default: rounds publishing at once per replica.
const WORKERS: usize = 2;
/// Alternating ceiling/scheduler trials per replica count; the medians are reported.
const TRIALS: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scheduler-bench.json".into());
    let mut result = serde_json::Map::new();
    for replicas in [1usize, 3] {
        let db = TestDb::new().await;
        let clusters = create_clusters(&db).await?;
        let _relay_held_off = hold_every_shard(&db).await?;
        let publisher = start_publisher(&db).await?;
        let url = format!("http://{}", publisher.grpc_addr);
        // As many concurrent callers as the schedulers' publish slots: replicas ×
        // RECONCILE_WORKERS (default 2).
        let callers = replicas * WORKERS;
        let schedulers = start_schedulers(&db, &url, replicas).await?;

        let (mut ceilings, mut times) = (Vec::new(), Vec::new());
        // Summed over the trials: one lasts a fraction of a second, and ticks are sampled.
        let (mut ceiling_cpu, mut scheduler_cpu) = (cpu::Usage::default(), cpu::Usage::default());
        let bench = cpu::own_command();
        let commands = [
            ("postgres", "postgres"),
            (bench.as_str(), "services and driver"),
        ];
        for _ in 0..TRIALS {
            reset(&db).await?;
            let (rate, used) = publish_ceiling(&url, &clusters, callers).await?;
            ceiling_cpu.add(&used);
            ceilings.push(rate);
            reset(&db).await?;
            let (seconds, used) = all_due_at_once(&db, &schedulers).await?;
            scheduler_cpu.add(&used);
            times.push(seconds);
        }
        println!("{replicas} replica(s): trials {times:.2?} s, ceilings {ceilings:.0?}/s");
        let ceiling_seconds: f64 = ceilings.iter().map(|rate| RESOURCES as f64 / rate).sum();
        let ceiling_cpu = ceiling_cpu.cores(ceiling_seconds, &commands);
        let scheduler_cpu = scheduler_cpu.cores(times.iter().sum(), &commands);
        println!(
            "{replicas} replica(s): cores used in the ceiling trials: {ceiling_cpu}; in the scheduler trials: {scheduler_cpu}"
        );
        let (ceiling, seconds) = (median(ceilings), median(times));
        let lag_p99 = schedulers
            .iter()
            .map(|r| quantile(&r.service.metrics.claim_lag, 0.99))
            .fold(0.0, f64::max);
        println!(
            "{replicas} replica(s): {RESOURCES} events in {seconds:.2} s ({:.0}/s); Publish ceiling with {callers} callers: {ceiling:.0}/s",
            RESOURCES as f64 / seconds,
        );
        result.insert(format!("seconds_{replicas}"), seconds.into());
        result.insert(
            format!("events_per_s_{replicas}"),
            (RESOURCES as f64 / seconds).into(),
        );
        result.insert(format!("ceiling_per_s_{replicas}"), ceiling.into());
        result.insert(format!("claim_lag_p99_s_{replicas}"), lag_p99.into());
        result.insert(format!("ceiling_cores_{replicas}"), ceiling_cpu.into());
        result.insert(format!("scheduler_cores_{replicas}"), scheduler_cpu.into());
        for r in schedulers {
            r.shutdown().await;
        }
        publisher.shutdown().await;
    }
    result.insert("resources".into(), RESOURCES.into());
    let result = serde_json::Value::Object(result);
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    println!("{result}");
    Ok(())
}

/// 10 000 live clusters, all due now (a new resource is due at its creation).
async fn create_clusters(db: &TestDb) -> anyhow::Result<Vec<Uuid>> {
    const WRITERS: usize = 8;
    let mut tasks = Vec::new();
    for part in 0..WRITERS {
        let mut conn = db.conn().await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (part..RESOURCES).step_by(WRITERS) {
                let now = OffsetDateTime::now_utc();
                let name = format!("bench-{i}");
                ids.push(
                    create_cluster(&mut conn, "bench@example.com", &name, now)
                        .await
                        .id,
                );
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

/// Leases every outbox shard on a connection of the benchmark's own, so that the publisher's
/// relay (which would otherwise read the rows the trials write and, with no Pub/Sub to send
/// them to, record a failure on each) holds none and does no work. Held until dropped.
async fn hold_every_shard(db: &TestDb) -> anyhow::Result<cls_storage::AsyncPgConnection> {
    let mut conn = cls_storage::connect(db.url()).await?;
    for shard in 0..cls_domain::event::OUTBOX_SHARDS {
        anyhow::ensure!(
            cls_storage::outbox::try_lock_shard(&mut conn, shard).await?,
            "outbox shard {shard} is leased already"
        );
    }
    Ok(conn)
}

async fn start_publisher(db: &TestDb) -> anyhow::Result<event_publisher::Running> {
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url()),
        // Nothing listens there; the relay holds no shard anyway (`hold_every_shard`).
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:9"),
        ("GOOGLE_CLOUD_PROJECT", "bench"),
        ("PUBLISH_BACKOFF_INITIAL", "5s"),
        ("PUBLISH_BACKOFF_MAX", "60s"),
        ("OUTBOX_POLL_INTERVAL", "60s"),
        ("DATABASE_MAX_CONNECTIONS", "16"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = event_publisher::Config::from_vars(&vars)?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    event_publisher::start(&config, grpc, admin).await
}

/// Events/s of `Publish` calls of 500 reconcile events for every cluster, from `callers`
/// concurrent clients, and the CPU used meanwhile.
async fn publish_ceiling(
    url: &str,
    clusters: &[Uuid],
    callers: usize,
) -> anyhow::Result<(f64, cpu::Usage)> {
    let now = OffsetDateTime::now_utc();
    let events: Vec<ReconcileEvent> = clusters
        .iter()
        .map(|&cluster_id| ReconcileEvent {
            id: Uuid::new_v4(),
            resource: ResourceRef::Cluster { cluster_id },
            reason: ReconcileReason::NeverReconciled,
            generation: 1,
            timestamp: now,
            scheduled_by: "bench".into(),
            last_reconciled_at: None,
            traceparent: None,
        })
        .collect();
    // Connected and warmed up (one batch each) before the clock starts, as the schedulers'
    // channels are by the time they are measured.
    let mut clients = Vec::new();
    for _ in 0..callers {
        let mut client = EventPublisherClient::connect(url.to_owned()).await?;
        client
            .publish(PublishRequest {
                events: events[..BATCH]
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e.id = Uuid::new_v4();
                        (&e).into()
                    })
                    .collect(),
            })
            .await?;
        clients.push(client);
    }
    // Read before the clock starts: scanning `/proc` is not part of the ceiling.
    let cpu = cpu::Usage::now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (part, mut client) in events.chunks(events.len().div_ceil(callers)).zip(clients) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            for batch in part.chunks(BATCH) {
                client
                    .publish(PublishRequest {
                        events: batch.iter().map(Into::into).collect(),
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((events.len() as f64 / seconds, cpu::Usage::now().since(&cpu)))
}

/// Moves every schedule row's due time to `now() + offset` (one statement).
async fn due_in(db: &TestDb, offset: &str) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query(format!(
        "UPDATE reconcile_schedule SET next_due_at = now() + interval '{offset}'"
    ))
    .execute(&mut db.conn().await)
    .await?;
    Ok(())
}

/// The state every trial starts from: nothing due for an hour, an empty outbox (so that no
/// trial inserts into indexes the earlier ones grew), the database vacuumed.
async fn reset(db: &TestDb) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl as _;
    due_in(db, "1 hour").await?;
    let mut conn = db.conn().await;
    for statement in ["DELETE FROM outbox", "VACUUM ANALYZE"] {
        diesel::sql_query(statement).execute(&mut conn).await?;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Starts `replicas` schedulers with nothing due.
async fn start_schedulers(
    db: &TestDb,
    url: &str,
    replicas: usize,
) -> anyhow::Result<Vec<reconcile_scheduler::Running>> {
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url()),
        ("EVENT_PUBLISHER_URL", url),
        ("RECONCILE_BATCH_SIZE", "500"),
        ("RECONCILE_POLL_INTERVAL", "100ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    due_in(db, "1 hour").await?;
    let mut running = Vec::new();
    for _ in 0..replicas {
        let config = reconcile_scheduler::Config::from_vars(&vars)?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        running.push(reconcile_scheduler::start(&config, grpc, admin).await?);
    }
    Ok(running)
}

/// Makes every resource due at once while the schedulers poll an empty schedule, and returns
/// the seconds until they had emitted an event for each, and the CPU used meanwhile.
async fn all_due_at_once(
    db: &TestDb,
    schedulers: &[reconcile_scheduler::Running],
) -> anyhow::Result<(f64, cpu::Usage)> {
    // Every reason counts: only the first trial's events are `never_reconciled`.
    let emitted = || -> u64 {
        use prometheus::core::Collector as _;
        schedulers
            .iter()
            .flat_map(|r| r.service.metrics.emitted.collect())
            .map(|family| {
                family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .sum::<u64>()
            })
            .sum()
    };
    // Idle, their pools connected, when everything falls due.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = emitted();
    due_in(db, "0 seconds").await?;
    let (started, cpu) = (Instant::now(), cpu::Usage::now());
    loop {
        let total = emitted() - before;
        if total >= RESOURCES as u64 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "only {total} events after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, cpu::Usage::now().since(&cpu)))
}

/// The upper bucket bound below which `q` of the histogram's observations fall.
fn quantile(histogram: &prometheus::Histogram, q: f64) -> f64 {
    use prometheus::core::Collector as _;
    let families = histogram.collect();
    let h = families[0].get_metric()[0].get_histogram();
    let total = h.get_sample_count() as f64;
    h.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() as f64 >= q * total)
        .map_or(f64::INFINITY, |b| b.upper_bound())
}
