//! Delivery through the real Pub/Sub emulator: exact messages, per-cluster order, the gRPC
//! `Publish` path, dead-lettering, start-up without Pub/Sub, and retention.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cls_domain::event::{
    Envelope, LifecycleAction, LifecycleEvent, ReconcileEvent, ResourceRef, outbox_shard,
};
use cls_domain::reconcile::ReconcileReason;
use cls_rpc::auth::SharedToken;
use cls_rpc::publisher::event_publisher_client::EventPublisherClient;
use cls_rpc::publisher::{PublishRequest, ResourceKind};
use cls_storage::outbox;
use cls_test_support::{PubSubEmulator, TcpGate, TestDb};
use common::*;
use time::OffsetDateTime;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn every_event_type(cluster_id: Uuid, nodepool_id: Uuid) -> Vec<Envelope> {
    let cluster = ResourceRef::Cluster { cluster_id };
    let nodepool = ResourceRef::NodePool {
        cluster_id,
        nodepool_id,
    };
    let now = OffsetDateTime::now_utc();
    let lifecycle = |resource, action, generation, traceparent: Option<&str>| {
        LifecycleEvent {
            id: Uuid::now_v7(),
            resource,
            action,
            generation,
            timestamp: now,
            traceparent: traceparent.map(str::to_owned),
        }
        .envelope()
    };
    let reconcile = |resource, reason, last| {
        ReconcileEvent {
            id: Uuid::now_v7(),
            resource,
            reason,
            generation: 2,
            timestamp: now,
            scheduled_by: "scheduler-7".into(),
            last_reconciled_at: last,
            traceparent: None,
        }
        .envelope()
    };
    vec![
        lifecycle(cluster, LifecycleAction::Created, 1, Some(TRACEPARENT)),
        lifecycle(nodepool, LifecycleAction::Created, 1, None),
        lifecycle(cluster, LifecycleAction::Updated, 2, None),
        lifecycle(nodepool, LifecycleAction::Updated, 2, None),
        reconcile(cluster, ReconcileReason::NeverReconciled, None),
        reconcile(nodepool, ReconcileReason::SpecChange, Some(now)),
        lifecycle(nodepool, LifecycleAction::Deleted, 2, None),
        lifecycle(cluster, LifecycleAction::Deleted, 2, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_type_arrives_once_with_the_specified_body_and_attributes() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let (cluster_id, nodepool_id) = (Uuid::new_v4(), Uuid::new_v4());
    let events = every_event_type(cluster_id, nodepool_id);
    commit(db.url(), &events).await;

    let publisher = start(&config(db.url(), &emulator.host(), &[])).await;
    let received = subscriber.expect(8, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 8, "each event exactly once");

    for event in &events {
        let got = received
            .iter()
            .find(|r| r.event_id() == event.id.to_string())
            .unwrap_or_else(|| panic!("{} did not arrive", event.event_type));
        assert_eq!(got.topic, event.topic.as_str(), "{}", event.event_type);
        assert_eq!(got.body, event.body, "{}", event.event_type);
        let expected: HashMap<String, String> = event.attributes.clone().into_iter().collect();
        assert_eq!(got.attributes, expected, "{}", event.event_type);
        assert_eq!(got.ordering_key, cluster_id.to_string());
    }
    // Spot checks against SPEC §5.1 itself, not only against the envelope.
    let created = &received[received
        .iter()
        .position(|r| r.body["type"] == "cluster.created")
        .unwrap()];
    assert_eq!(created.attributes["ce-specversion"], "1.0");
    assert_eq!(created.attributes["ce-type"], "cluster.created");
    assert_eq!(created.attributes["traceparent"], TRACEPARENT);
    assert_eq!(created.body["source"], "cls-backend");
    let reconcile = received
        .iter()
        .find(|r| r.body["type"] == "nodepool.reconcile")
        .unwrap();
    assert_eq!(reconcile.topic, "nodepool-events");
    assert_eq!(reconcile.attributes["reason"], "spec_change");
    assert_eq!(reconcile.attributes["nodepool_id"], nodepool_id.to_string());
    assert_eq!(reconcile.body["metadata"]["scheduled_by"], "scheduler-7");
    assert_eq!(reconcile.body["metadata"]["nodepool_generation"], 2);

    wait_for_empty_outbox(&db, Duration::from_secs(10)).await;
    let (status, _) = admin_get(publisher.admin_addr, "/readyz").await;
    assert_eq!(status, 200);
    let (_, scrape) = admin_get(publisher.admin_addr, "/metrics").await;
    assert_eq!(
        sample(&scrape, r#"events_published_total{topic="cluster-events"}"#),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &scrape,
            r#"events_published_total{topic="nodepool-events"}"#
        ),
        Some(4.0)
    );
    assert_eq!(sample(&scrape, "outbox_pending_events"), Some(0.0));
    assert_eq!(sample(&scrape, "outbox_shards_held"), Some(32.0));
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_to_five_clusters_arrive_in_commit_order() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let publisher = start(&config(db.url(), &emulator.host(), &[])).await;

    let clusters: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let writers: Vec<_> = clusters
        .iter()
        .map(|&cluster| {
            let url = db.url().to_owned();
            tokio::spawn(async move {
                let mut conn = cls_storage::connect(&url).await.unwrap();
                for generation in 1..=50 {
                    let written = outbox::insert(&mut conn, &[cluster_event(cluster, generation)])
                        .await
                        .unwrap();
                    outbox::wake(&mut conn, written).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let received = subscriber.expect(250, Duration::from_secs(60)).await;
    let repeats = assert_complete_and_ordered(&received, &clusters, 50);
    assert_eq!(repeats, 0, "no publisher crashed, so nothing is sent twice");
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_writes_durably_validates_and_is_retry_safe() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let publisher = start(&config(
        db.url(),
        &emulator.host(),
        &[("GRPC_SHARED_TOKEN", "t0ken")],
    ))
    .await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", publisher.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let token = SharedToken::new("t0ken");
    let mut client =
        EventPublisherClient::with_interceptor(channel.clone(), move |r| token.attach(r));

    let cluster_id = Uuid::new_v4();
    let nodepool_id = Uuid::new_v4();
    let events = [
        ReconcileEvent {
            id: Uuid::new_v4(),
            resource: ResourceRef::Cluster { cluster_id },
            reason: ReconcileReason::HealthyReconciliation,
            generation: 4,
            timestamp: OffsetDateTime::now_utc(),
            scheduled_by: "scheduler-1".into(),
            last_reconciled_at: Some(OffsetDateTime::now_utc()),
            traceparent: Some(TRACEPARENT.into()),
        },
        ReconcileEvent {
            id: Uuid::new_v4(),
            resource: ResourceRef::NodePool {
                cluster_id,
                nodepool_id,
            },
            reason: ReconcileReason::NeverReconciled,
            generation: 1,
            timestamp: OffsetDateTime::now_utc(),
            scheduled_by: "scheduler-1".into(),
            last_reconciled_at: None,
            traceparent: None,
        },
    ];
    let request = PublishRequest {
        events: events.iter().map(Into::into).collect(),
    };
    let ids = client
        .publish(request.clone())
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(
        ids,
        events.iter().map(|e| e.id.to_string()).collect::<Vec<_>>()
    );
    // The scheduler retrying after a lost answer: same ids, written once.
    let again = client.publish(request).await.unwrap().into_inner().ids;
    assert_eq!(again, ids);

    let received = subscriber.expect(2, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 2, "{received:?}");
    for event in &events {
        let envelope = event.envelope();
        let got = received
            .iter()
            .find(|r| r.event_id() == event.id.to_string())
            .unwrap();
        assert_eq!(got.body, envelope.body);
        assert_eq!(got.topic, envelope.topic.as_str());
    }
    let cluster = received
        .iter()
        .find(|r| r.body["type"] == "cluster.reconcile")
        .unwrap();
    assert_eq!(cluster.attributes["reason"], "healthy_reconciliation");
    assert_eq!(cluster.attributes["traceparent"], TRACEPARENT);
    assert_eq!(cluster.body["metadata"]["cluster_generation"], 4);

    // Invalid input: INVALID_ARGUMENT naming the field; nothing written.
    let mut bad: cls_rpc::publisher::ReconcileEvent = (&events[0]).into();
    bad.id = Uuid::new_v4().to_string();
    bad.kind = ResourceKind::Nodepool.into();
    bad.reason = "whim".into();
    let status = client
        .publish(PublishRequest { events: vec![bad] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("events[0].nodepool_id"),
        "{status:?}"
    );
    assert!(status.message().contains("events[0].reason"), "{status:?}");

    // Without the shared token: refused.
    let mut anonymous = EventPublisherClient::new(channel.clone());
    let status = anonymous
        .publish(PublishRequest {
            events: vec![(&events[0]).into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // grpc.health.v1 on the same server reports the service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cls.publisher.v1.EventPublisher".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Server reflection lists the API and health next to each other.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"cls.publisher.v1.EventPublisher"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(
        subscriber
            .drain(Duration::from_millis(500))
            .await
            .is_empty()
    );
    let (_, scrape) = admin_get(publisher.admin_addr, "/metrics").await;
    assert_eq!(
        sample(&scrape, r#"grpc_publish_requests_total{result="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&scrape, r#"grpc_publish_requests_total{result="invalid"}"#),
        Some(1.0)
    );
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pubsub_cannot_accept_is_dead_lettered_without_blocking_its_cluster() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let cluster = Uuid::new_v4();
    let mut poisoned = cluster_event(cluster, 2);
    // Over Pub/Sub's 1024-byte attribute value limit.
    poisoned.attributes.insert("note".into(), "x".repeat(2000));
    commit(db.url(), &[cluster_event(cluster, 1)]).await;
    commit(db.url(), &[poisoned.clone()]).await;
    commit(db.url(), &[cluster_event(cluster, 3)]).await;

    let publisher = start(&config(db.url(), &emulator.host(), &[])).await;
    let received = subscriber.expect(2, Duration::from_secs(30)).await;
    assert_eq!(
        generations_by_cluster(&received)[&cluster.to_string()],
        vec![1, 3],
        "the invalid event is not sent and does not hold back the next one"
    );
    wait_for_empty_outbox(&db, Duration::from_secs(10)).await;
    let mut conn = db.conn().await;
    let backlog = outbox::backlog(&mut conn).await.unwrap();
    assert_eq!(backlog.dead, 1, "kept, not dropped");
    let (_, scrape) = admin_get(publisher.admin_addr, "/metrics").await;
    assert_eq!(
        sample(
            &scrape,
            r#"events_dead_lettered_total{topic="cluster-events"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&scrape, "outbox_dead_events"), Some(1.0));
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_pubsub_is_unreachable_and_delivers_once_it_is_back() {
    let db = TestDb::new().await;
    let emulator = PubSubEmulator::start().unwrap();
    let gate = TcpGate::start(emulator.port(), false).await.unwrap();
    let publisher = start(&config(db.url(), &gate.host(), &[])).await;

    let cluster = Uuid::new_v4();
    for generation in 1..=5 {
        commit(db.url(), &[cluster_event(cluster, generation)]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = admin_get(publisher.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "not ready without Pub/Sub: {body}");
    assert!(body.contains("pubsub"), "{body}");
    let mut conn = db.conn().await;
    assert_eq!(outbox::backlog(&mut conn).await.unwrap().pending, 5, "kept");
    // The failures are recorded on the row that holds the cluster up, not on every row that
    // waits behind it (each retry would rewrite them all while Pub/Sub is down).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = outbox::pending(&mut conn, 10).await.unwrap();
        if rows[0].attempts >= 2 {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second failed attempt recorded: {:?}",
            rows.iter().map(|r| r.attempts).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(rows[0].last_error.is_some(), "the error is kept with it");
    assert_eq!(
        rows.iter()
            .map(|r| (r.attempts, r.last_error.is_some()))
            .skip(1)
            .collect::<Vec<_>>(),
        vec![(0, false); 4],
        "the rows behind the first were not rewritten"
    );

    // The subscriber is set up on the emulator directly, then Pub/Sub "comes back".
    let mut subscriber = Subscriber::connect(&emulator.host()).await;
    subscriber.subscribe().await;
    gate.open();
    let received = subscriber.expect(5, Duration::from_secs(30)).await;
    assert_eq!(assert_complete_and_ordered(&received, &[cluster], 5), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while admin_get(publisher.admin_addr, "/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, scrape) = admin_get(publisher.admin_addr, "/metrics").await;
    assert!(
        sample(
            &scrape,
            r#"event_publish_failures_total{topic="cluster-events"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "the failed attempts are counted"
    );
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_pubsub_is_down_each_commit_does_not_make_the_relay_reread_its_backlog() {
    let db = TestDb::new().await;
    let emulator = PubSubEmulator::start().unwrap();
    let gate = TcpGate::start(emulator.port(), false).await.unwrap();
    // No polls: the idle shards read nothing, so the replica's reads are this shard's.
    let publisher = start(&config(
        db.url(),
        &gate.host(),
        &[("OUTBOX_POLL_INTERVAL", "60s")],
    ))
    .await;

    // One cluster's backlog, held up by the outage: every read of its shard walks past it.
    let held = Uuid::new_v4();
    let backlog: Vec<Envelope> = (1..=2000).map(|g| cluster_event(held, g)).collect();
    commit(db.url(), &backlog).await;
    let mut conn = db.conn().await;
    wait_until(
        "the backlog was attempted",
        Duration::from_secs(20),
        async || outbox::pending(&mut conn, 1).await.unwrap()[0].attempts > 0,
    )
    .await;

    // New clusters of the same shard, committed one at a time: each commit wakes the worker.
    let shard = outbox_shard(held);
    let others: Vec<Uuid> = std::iter::repeat_with(Uuid::new_v4)
        .filter(|c| outbox_shard(*c) == shard)
        .take(100)
        .collect();
    let reads_before = metric(publisher.admin_addr, "outbox_reads_total")
        .await
        .unwrap();
    for cluster in &others {
        commit(db.url(), &[cluster_event(*cluster, 1)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads = metric(publisher.admin_addr, "outbox_reads_total")
        .await
        .unwrap()
        - reads_before;
    eprintln!("held-up shard: {reads} reads for {} commits", others.len());
    // Reading at once on every wake-up would be about two reads per commit (one finds the new
    // cluster's row, one more after its publish failed).
    assert!(
        reads < 60.0,
        "{reads} reads of the shard for {} commits while its backlog was held up",
        others.len()
    );

    // Pub/Sub comes back: everything arrives, in order per cluster.
    let mut subscriber = Subscriber::connect(&emulator.host()).await;
    subscriber.subscribe().await;
    gate.open();
    let received = subscriber
        .expect(backlog.len() + others.len(), Duration::from_secs(60))
        .await;
    assert_complete_and_ordered(&received, &[held], 2000);
    assert_complete_and_ordered(&received, &others, 1);
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_are_pruned_after_the_retention_period() {
    let Fixture {
        db,
        emulator,
        subscriber,
    } = Fixture::new().await;
    let publisher = start(&config(
        db.url(),
        &emulator.host(),
        &[
            ("OUTBOX_RETENTION", "1s"),
            ("OUTBOX_PRUNE_INTERVAL", "200ms"),
            ("OUTBOX_PRUNE_BATCH", "2"),
        ],
    ))
    .await;
    let cluster = Uuid::new_v4();
    for generation in 1..=5 {
        commit(db.url(), &[cluster_event(cluster, generation)]).await;
    }
    let received = subscriber.expect(5, Duration::from_secs(30)).await;
    assert_eq!(assert_complete_and_ordered(&received, &[cluster], 5), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, scrape) = admin_get(publisher.admin_addr, "/metrics").await;
        if sample(&scrape, "outbox_pruned_total") == Some(5.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not pruned: {scrape}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publisher.shutdown().await;
}
