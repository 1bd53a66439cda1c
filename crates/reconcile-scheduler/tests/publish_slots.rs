//! A replica has two claim loops per `RECONCILE_WORKERS` but never more `Publish` calls in
//! flight than that: the next round is claimed while the current one publishes.
//!
//! The publisher here is a stand-in gRPC server that only counts concurrent calls and answers
//! slowly (what is measured is the scheduler's side of the call); the schedule is the real
//! one, in a real database.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cls_rpc::publisher::event_publisher_server::{EventPublisher, EventPublisherServer};
use cls_rpc::publisher::{PublishRequest, PublishResponse};
use cls_test_support::TestDb;
use cls_test_support::resources::create_cluster;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

const CLUSTERS: usize = 120;

/// Answers every `Publish` after `delay`, remembering the most calls it had at once and the
/// event ids it accepted.
#[derive(Default, Clone)]
struct SlowPublisher {
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    ids: Arc<Mutex<HashSet<String>>>,
}

#[tonic::async_trait]
impl EventPublisher for SlowPublisher {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let ids: Vec<String> = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.id)
            .collect();
        self.ids.lock().unwrap().extend(ids.iter().cloned());
        Ok(Response::new(PublishResponse { ids }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_publishes_at_most_its_workers_rounds_at_once() {
    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    for i in 0..CLUSTERS {
        let now = time::OffsetDateTime::now_utc();
        create_cluster(&mut conn, "alice@example.com", &format!("c{i}"), now).await;
    }

    let publisher = SlowPublisher::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventPublisherServer::new(publisher.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let vars = [
        ("DATABASE_URL", db.url()),
        ("EVENT_PUBLISHER_URL", url.as_str()),
        ("RECONCILE_WORKERS", "2"),
        ("RECONCILE_BATCH_SIZE", "10"),
        ("RECONCILE_POLL_INTERVAL", "100ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = reconcile_scheduler::Config::from_vars(&vars).unwrap();
    let scheduler = reconcile_scheduler::start(
        &config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while publisher.ids.lock().unwrap().len() < CLUSTERS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {CLUSTERS} events",
            publisher.ids.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.shutdown().await;

    // Twelve rounds of ten, four claim loops: only two publish at a time, and both slots
    // were used.
    assert_eq!(publisher.most_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(publisher.ids.lock().unwrap().len(), CLUSTERS);
}
