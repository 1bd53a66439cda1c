//! The Pub/Sub emulator helper starts a real emulator and stops all of it.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by panicking")]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use cls_test_support::emulator::PROJECT;
use cls_test_support::{PubSubEmulator, port_open};

/// A minimal HTTP/1.1 request to the emulator's REST API; returns (status, body).
fn http(host: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The emulator keeps the connection open: read the head, then Content-Length bytes.
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    let head = String::from_utf8(response).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn emulator_serves_pubsub_and_stops_completely() {
    let mut emulator = PubSubEmulator::start().expect("emulator starts");
    let host = emulator.host();
    let port = emulator.port();
    assert!(port_open(port));

    let topic = format!("/v1/projects/{PROJECT}/topics/cls-helper-test");
    let (status, body) = http(&host, "PUT", &topic, "{}");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("projects/{PROJECT}/topics/cls-helper-test")),
        "{body}"
    );
    let (status, body) = http(&host, "GET", &topic, "");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        &host,
        "GET",
        &format!("/v1/projects/{PROJECT}/topics/missing-topic"),
        "",
    );
    assert_eq!(status, 404);

    assert!(emulator.processes_alive(), "the running emulator is found");
    emulator.stop();
    assert!(
        !port_open(port),
        "the Java server is gone, not just the wrapper"
    );
    assert!(!emulator.processes_alive(), "no emulator process is left");

    // A restart on the same port works, with fresh (empty) state.
    let restarted = PubSubEmulator::start_on(port).expect("restarts on the same port");
    let (status, _) = http(&restarted.host(), "GET", &topic, "");
    assert_eq!(status, 404, "a restarted emulator has forgotten its topics");
}
