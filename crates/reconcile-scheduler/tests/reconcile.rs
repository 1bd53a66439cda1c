//! The reconcile-scheduler with the other three services, in-process over real gRPC, on real
//! Postgres and the real Pub/Sub emulator: the events a controller receives on its
//! subscription, with intervals shortened to seconds.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cls_rpc::scheduler::reconcile_scheduler_client::ReconcileSchedulerClient;
use cls_rpc::scheduler::{ResourceKind, StatsRequest, TriggerRequest};
use common::*;
use reqwest::Method;
use time::OffsetDateTime;

/// A `Trigger` of a cluster.
fn cluster_trigger(id: impl Into<String>, reason: &str) -> TriggerRequest {
    TriggerRequest {
        kind: ResourceKind::Cluster as i32,
        resource_id: id.into(),
        reason: reason.to_owned(),
    }
}

fn reasons(events: &[&Reconcile]) -> Vec<String> {
    events.iter().map(|e| e.reason.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reasons_follow_the_policy_and_reactive_triggers_come_after_changes() {
    let stack = Stack::start(&[]).await;
    let config = stack.scheduler_config(&[
        ("RECONCILE_ATTENTION_INTERVAL", "2s"),
        ("RECONCILE_STABLE_INTERVAL", "5s"),
        // Age alone never asks for attention here, so Ready resources go stable.
        ("RECONCILE_YOUNG_AGE", "0s"),
    ]);
    let scheduler = stack.scheduler(&config, true).await;
    let cluster = stack.create_cluster("policy").await;
    let nodepool = stack.create_nodepool(&cluster, "workers").await;

    // First a prompt never_reconciled, then the attention interval while Pending.
    let events = stack
        .reconciles_until(Duration::from_secs(20), |e| {
            of(e, &cluster).len() >= 2 && of(e, &nodepool).len() >= 2
        })
        .await;
    for id in [&cluster, &nodepool] {
        let mine = of(&events, id);
        assert_eq!(
            reasons(&mine[..2]),
            ["never_reconciled", "unhealthy_reconciliation"]
        );
        let gap = gaps(&mine)[0];
        assert!((1.8..4.0).contains(&gap), "attention gap {gap}");
        let first = &mine[0].body;
        assert_eq!(first["generation"], 1);
        assert_eq!(
            first["metadata"]["scheduled_by"],
            scheduler.replica_id.as_str()
        );
        assert!(first["metadata"]["last_reconciled_at"].is_null(), "{first}");
        assert!(mine[1].body["metadata"]["last_reconciled_at"].is_string());
    }
    let nodepool_event = &of(&events, &nodepool)[0].body;
    assert_eq!(nodepool_event["type"], "nodepool.reconcile");
    assert_eq!(nodepool_event["cluster_id"], cluster.as_str());
    assert_eq!(nodepool_event["metadata"]["nodepool_generation"], 1);

    // Ready: the phase change triggers a reconcile, then the stable interval applies.
    let path = format!("/api/v1/clusters/{cluster}");
    stack.report_ready(&path, 1).await;
    let events = stack
        .reconciles_until(Duration::from_secs(20), |e| {
            of(e, &cluster)
                .iter()
                .any(|r| r.reason == "healthy_reconciliation")
        })
        .await;
    let mine = of(&events, &cluster);
    let changed = mine
        .iter()
        .position(|r| r.reason == "status_change")
        .unwrap();
    assert_eq!(
        reasons(&mine[changed..]),
        ["status_change", "healthy_reconciliation"],
        "{mine:#?}"
    );
    let stable_gap = gaps(&mine[changed..])[0];
    assert!((4.8..8.0).contains(&stable_gap), "stable gap {stable_gap}");

    // A spec change: spec_change carrying generation 2, then generation_mismatch at the
    // attention interval until the controller reports on generation 2.
    assert_eq!(stack.change_spec(&cluster, "infra-2").await, 2);
    let events = stack
        .reconciles_until(Duration::from_secs(20), |e| {
            of(e, &cluster)
                .iter()
                .filter(|r| r.reason == "generation_mismatch")
                .count()
                >= 2
        })
        .await;
    let mine = of(&events, &cluster);
    assert_eq!(
        reasons(&mine),
        ["spec_change", "generation_mismatch", "generation_mismatch"],
        "{mine:#?}"
    );
    assert!(mine.iter().all(|r| r.generation == 2));
    assert!(
        gaps(&mine).iter().all(|g| (1.8..4.0).contains(g)),
        "{mine:#?}"
    );

    stack.report_ready(&path, 2).await;
    let events = stack
        .reconciles_until(Duration::from_secs(20), |e| {
            of(e, &cluster)
                .iter()
                .any(|r| r.reason == "healthy_reconciliation")
        })
        .await;
    let mine = of(&events, &cluster);
    let tail: Vec<String> = reasons(&mine)
        .into_iter()
        .filter(|r| r != "generation_mismatch")
        .collect();
    assert_eq!(
        tail,
        ["status_change", "healthy_reconciliation"],
        "{mine:#?}"
    );
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_spec_changes_yields_one_event_with_the_final_generation() {
    let stack = Stack::start(&[]).await;
    // A long attention interval: only reactive events show up after the first one.
    let config = stack.scheduler_config(&[("RECONCILE_ATTENTION_INTERVAL", "60s")]);
    let scheduler = stack.scheduler(&config, true).await;
    let cluster = stack.create_cluster("burst").await;
    stack
        .reconciles_until(Duration::from_secs(15), |e| !of(e, &cluster).is_empty())
        .await;

    let mut generation = 0;
    for i in 0..10 {
        generation = stack.change_spec(&cluster, &format!("infra-{i}")).await;
    }
    assert_eq!(generation, 11);
    let events = stack.reconciles_for(Duration::from_secs(5)).await;
    let mine = of(&events, &cluster);
    assert_eq!(reasons(&mine), ["spec_change"], "{mine:#?}");
    assert_eq!(mine[0].generation, 11);
    assert_eq!(mine[0].body["metadata"]["cluster_generation"], 11);
    scheduler.shutdown().await;
}

/// A retried create (same `Idempotency-Key`) replays the stored response; it creates nothing,
/// so it must not announce a creation to the scheduler again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_create_triggers_no_reconcile() {
    let stack = Stack::start(&[]).await;
    let config = stack.scheduler_config(&[("RECONCILE_ATTENTION_INTERVAL", "60s")]);
    let scheduler = stack.scheduler(&config, true).await;
    let create = || {
        stack
            .client
            .post(format!("{}/api/v1/clusters", stack.api))
            .header("X-User-Email", USER)
            .header("Idempotency-Key", "create-once")
            .json(&cluster_body("replayed", "infra-1"))
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let cluster = first["id"].as_str().unwrap().to_owned();
    let events = stack
        .reconciles_until(Duration::from_secs(15), |e| !of(e, &cluster).is_empty())
        .await;
    assert_eq!(reasons(&of(&events, &cluster)), ["never_reconciled"]);

    let replay = create().await.unwrap();
    assert_eq!(replay.status(), 201);
    let replay: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(replay, first);
    // Past the debounce (1 s here): nothing more until the attention interval.
    let events = stack.reconciles_for(Duration::from_secs(4)).await;
    let mine = of(&events, &cluster);
    assert!(mine.is_empty(), "{mine:#?}");
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_emit_every_due_item_once() {
    const RESOURCES: usize = 1000;
    const INTERVAL: f64 = 3.0;
    let stack = Stack::start(&[]).await;
    let mut ids = Vec::new();
    for chunk in 0..RESOURCES / 50 {
        let created = futures_util::future::join_all(
            (0..50).map(|i| stack.create_cluster_named(format!("c-{chunk}-{i}"))),
        )
        .await;
        ids.extend(created);
    }
    let config = |_: usize| {
        stack.scheduler_config(&[
            ("RECONCILE_ATTENTION_INTERVAL", "3s"),
            ("RECONCILE_BATCH_SIZE", "100"),
        ])
    };
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(stack.scheduler(&config(i), false).await);
    }
    let run = Duration::from_secs(10);
    let mut received = Vec::new();
    let _ = stack
        .subscriber
        .pull_until(&mut received, run, |_| false)
        .await;
    for replica in replicas {
        replica.shutdown().await;
    }
    received.extend(stack.subscriber.drain(Duration::from_secs(3)).await);
    let events = reconciles(&received);

    let unique: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(unique.len(), events.len(), "a message arrived twice");
    let emitters: HashSet<&str> = events.iter().map(|e| e.scheduled_by.as_str()).collect();
    assert_eq!(emitters.len(), 3, "every replica took part: {emitters:?}");
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for id in &ids {
        let mine = of(&events, id);
        // None missed: at least the first and two more intervals in the 10 s run.
        assert!(mine.len() >= 3, "{id}: {} events", mine.len());
        // No duplicates: never two events of one resource within one interval.
        let short: Vec<f64> = gaps(&mine)
            .into_iter()
            .filter(|g| *g < INTERVAL - 0.2)
            .collect();
        assert!(short.is_empty(), "{id}: events too close: {short:?}");
        *counts.entry(mine.len()).or_default() += 1;
    }
    eprintln!("events per resource over the run: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_items_are_emitted_by_another_at_once() {
    const N: usize = 20;
    let stack = Stack::start(&[]).await;
    let mut ids = HashSet::new();
    for i in 0..N {
        ids.insert(stack.create_cluster(&format!("held-{i}")).await);
    }
    // Replica A's publisher never answers, so A is stuck in its round, holding the rows, when
    // killed.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    let hold = Duration::from_secs(20);
    let a = stack
        .scheduler(
            &stack.scheduler_config(&[
                ("EVENT_PUBLISHER_URL", &hole),
                ("PEER_TIMEOUT", "15s"),
                ("RECONCILE_CLAIM_TTL", "20s"),
            ]),
            false,
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.service.metrics.claimed.get() != N as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never held the rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While A holds them, nobody else gets them.
    let mut conn = stack.conn().await;
    assert!(
        cls_storage::schedule::lock_due(
            &mut conn,
            OffsetDateTime::now_utc(),
            100,
            time::Duration::SECOND
        )
        .await
        .unwrap()
        .is_none()
    );
    drop(conn);
    let killed_at = OffsetDateTime::now_utc();
    a.abort();

    let b = stack.scheduler(&stack.scheduler_config(&[]), false).await;
    let events = stack
        .reconciles_until(Duration::from_secs(20), |e| e.len() >= N)
        .await;
    let extra = reconciles(&stack.subscriber.drain(Duration::from_secs(1)).await);
    assert!(extra.is_empty(), "{extra:#?}");
    let got: HashSet<String> = events.iter().map(|e| e.resource.clone()).collect();
    assert_eq!(got, ids);
    for event in &events {
        assert_eq!(event.scheduled_by, b.replica_id);
        assert_eq!(event.reason, "never_reconciled");
        // The kill released the rows: B did not wait for A's hold time to run out.
        let after = (event.timestamp - killed_at).as_seconds_f64();
        assert!(
            after < hold.as_secs_f64() / 2.0,
            "emitted {after}s after the kill"
        );
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_resources_are_never_reconciled_and_are_purged_after_retention() {
    let stack = Stack::start(&[]).await;
    let config = stack.scheduler_config(&[
        ("RECONCILE_ATTENTION_INTERVAL", "1s"),
        ("DELETED_RETENTION", "3s"),
        ("PURGE_INTERVAL", "500ms"),
    ]);
    let scheduler = stack.scheduler(&config, true).await;
    let doomed = stack.create_cluster("doomed").await;
    let doomed_pool = stack.create_nodepool(&doomed, "np").await;
    let kept = stack.create_cluster("kept").await;
    let dropped_pool = stack.create_nodepool(&kept, "dropped").await;
    let kept_pool = stack.create_nodepool(&kept, "kept").await;
    let all = [&doomed, &doomed_pool, &kept, &dropped_pool, &kept_pool];
    stack
        .reconciles_until(Duration::from_secs(15), |e| {
            all.iter().all(|id| !of(e, id).is_empty())
        })
        .await;

    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/api/v1/clusters/{doomed}?force=true"),
            USER,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/api/v1/nodepools/{dropped_pool}"),
            USER,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let deleted_at = OffsetDateTime::now_utc();
    // Controllers still see them until the purge.
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/api/v1/clusters/{doomed}"),
            CONTROLLER,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["deleted_at"].is_string());

    let events = stack.reconciles_for(Duration::from_secs(3)).await;
    for id in [&doomed, &doomed_pool, &dropped_pool] {
        let late: Vec<_> = of(&events, id)
            .into_iter()
            .filter(|e| e.timestamp > deleted_at)
            .collect();
        assert!(late.is_empty(), "{id} reconciled after deletion: {late:#?}");
    }
    for id in [&kept, &kept_pool] {
        assert!(of(&events, id).len() >= 2, "{id} stopped being reconciled");
    }

    // Purged after DELETED_RETENTION: gone even for controllers.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for path in [
        format!("/api/v1/clusters/{doomed}"),
        format!("/api/v1/nodepools/{doomed_pool}"),
        format!("/api/v1/nodepools/{dropped_pool}"),
    ] {
        loop {
            let (status, _) = stack.call(Method::GET, &path, CONTROLLER, None).await;
            if status == 404 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never purged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        (OffsetDateTime::now_utc() - deleted_at).as_seconds_f64() >= 3.0,
        "purged before the retention"
    );
    let (status, _) = stack
        .call(
            Method::GET,
            &format!("/api/v1/nodepools/{kept_pool}"),
            CONTROLLER,
            None,
        )
        .await;
    assert_eq!(status, 200, "a live nodepool was purged");
    assert!(
        metric(
            scheduler.service.admin_addr,
            "reconcile_purged_resources_total"
        )
        .await
            >= Some(3.0)
    );
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_scheduler_down_writes_succeed_and_it_catches_up_when_back() {
    let stack = Stack::start(&[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(stack.create_cluster(&format!("offline-{i}")).await);
    }
    // Triggers fail (nothing listens on the scheduler port); the users' writes do not.
    assert_eq!(stack.change_spec(&ids[0], "infra-offline").await, 2);
    stack
        .report_ready(&format!("/api/v1/clusters/{}", ids[1]), 1)
        .await;

    let scheduler = stack.scheduler(&stack.scheduler_config(&[]), true).await;
    let events = stack
        .reconciles_until(Duration::from_secs(15), |e| {
            ids.iter().all(|id| !of(e, id).is_empty())
        })
        .await;
    for id in &ids {
        assert_eq!(reasons(&of(&events, id)[..1]), ["never_reconciled"]);
    }
    assert_eq!(of(&events, &ids[0])[0].generation, 2);
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_and_stats_over_grpc() {
    let stack = Stack::start(&[]).await;
    let scheduler = stack.scheduler(&stack.scheduler_config(&[]), true).await;
    let cluster = stack.create_cluster("grpc").await;
    stack
        .reconciles_until(Duration::from_secs(15), |e| !of(e, &cluster).is_empty())
        .await;
    let mut client =
        ReconcileSchedulerClient::connect(format!("http://{}", scheduler.service.grpc_addr))
            .await
            .unwrap();

    let bad = client
        .trigger(cluster_trigger("not-a-uuid", "periodic"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("resource_id") && bad.message().contains("reason"));
    let missing = client
        .trigger(cluster_trigger(
            uuid::Uuid::new_v4().to_string(),
            "manual_trigger",
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let before = OffsetDateTime::now_utc();
    let due = client
        .trigger(cluster_trigger(&cluster, "manual_trigger"))
        .await
        .unwrap()
        .into_inner()
        .due_at
        .unwrap();
    let due = cls_rpc::convert::from_timestamp(&due).unwrap();
    let wait = (due - before).as_seconds_f64();
    assert!((0.9..1.5).contains(&wait), "debounced by {wait}s");
    let events = stack
        .reconciles_until(Duration::from_secs(10), |e| !e.is_empty())
        .await;
    assert_eq!(reasons(&of(&events, &cluster)), ["manual_trigger"]);

    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.scheduled, 1);
    assert_eq!(stats.replica, scheduler.replica_id);
    assert_eq!(stats.emitted_by_reason["never_reconciled"], 1);
    assert_eq!(stats.emitted_by_reason["manual_trigger"], 1);
    assert_eq!(stats.due_now, 0);
    assert_eq!(
        metric(
            scheduler.service.admin_addr,
            r#"reconcile_events_emitted_total{kind="cluster",reason="manual_trigger"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            scheduler.service.admin_addr,
            "reconcile_scheduled_resources"
        )
        .await,
        Some(1.0)
    );
    scheduler.shutdown().await;
}

/// A Postgres restart under the scheduler (SPEC §8): while it is down `/readyz` is 503 and a
/// `Trigger` answers `UNAVAILABLE` promptly (never a hang); once it is back the same replica
/// is ready again and emits for a resource created after the restart, without restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_recovers_from_a_postgres_restart_without_restarting() {
    use cls_test_support::postgres::OwnCluster;
    use std::time::Instant;
    let pg = tokio::task::block_in_place(|| OwnCluster::start("scheduler-restart")).unwrap();
    cls_storage::migrate::run(pg.url()).await.unwrap();
    let stack = Stack::start_on(pg.url(), &[]).await;
    let scheduler = stack.scheduler(&stack.scheduler_config(&[]), true).await;
    let readyz = format!("http://{}/readyz", scheduler.service.admin_addr);
    let ready = || async { stack.client.get(&readyz).send().await.unwrap().status() };
    // Waits until `/readyz` answers `want`; `never` says what did not happen by `deadline`.
    let readiness_becomes = async |want, deadline: Instant, never: &str| {
        while ready().await != want {
            assert!(Instant::now() < deadline, "{never}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let before = stack.create_cluster("before").await;
    stack
        .reconciles_until(Duration::from_secs(15), |e| !of(e, &before).is_empty())
        .await;
    assert_eq!(ready().await, reqwest::StatusCode::OK);

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    readiness_becomes(
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        Instant::now() + Duration::from_secs(10),
        "still ready without its database",
    )
    .await;
    let mut client =
        ReconcileSchedulerClient::connect(format!("http://{}", scheduler.service.grpc_addr))
            .await
            .unwrap();
    let started = Instant::now();
    let refused = client
        .trigger(cluster_trigger(&before, "manual_trigger"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "prompt");

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    readiness_becomes(reqwest::StatusCode::OK, deadline, "never ready again").await;
    // The gateway's pooled connections died too: a create may meet one and answer 503.
    let after = loop {
        let (status, body) = stack
            .call(
                Method::POST,
                "/api/v1/clusters",
                USER,
                Some(&cluster_body("after", "infra-1")),
            )
            .await;
        if status == 201 {
            break body["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the gateway never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = stack
        .reconciles_until(Duration::from_secs(30), |e| !of(e, &after).is_empty())
        .await;
    let first = of(&events, &after)[0];
    assert_eq!(
        (first.reason.as_str(), first.scheduled_by.as_str()),
        ("never_reconciled", scheduler.replica_id.as_str()),
        "emitted by the replica that lived through the restart"
    );
    scheduler.shutdown().await;
}
