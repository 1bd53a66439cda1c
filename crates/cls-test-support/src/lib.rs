//! Test-only helpers (a dev-dependency, never a normal one).
//!
//! - [`TestDb`]: a fresh database per test, cloned from a template that is migrated once per
//!   migration set. The server is `TEST_DATABASE_URL` or `DATABASE_URL` if set, otherwise a
//!   throwaway cluster this crate starts with `initdb`/`pg_ctl` (see [`postgres`]).
//! - [`PubSubEmulator`]: the real Google Pub/Sub emulator on a free port, stopped on drop.
//! - [`TcpGate`]: a switchable TCP forwarder, to cut clients off a real server and let them back.
//! - [`resources`]: minimal valid resources stored straight through `cls-storage`.

pub mod binary;
pub mod cpu;
pub mod emulator;
pub mod events;
pub mod gate;
pub mod postgres;
pub mod resources;
pub mod subscriber;

pub use emulator::PubSubEmulator;
pub use gate::TcpGate;
pub use postgres::TestDb;

/// A free TCP port on 127.0.0.1, for a server a test starts a moment later.
///
/// The port is probed and released, so something else could take it before the server binds.
/// `bind("127.0.0.1:0")` would pick from the kernel's ephemeral range, which every outgoing
/// connection of every parallel test process also draws from (a Postgres or emulator client
/// took such a port in CI once, and the server failed with `AddrInUse`). So the port is drawn
/// at random from below that range, where only explicit binds go, and never handed out twice
/// by one process.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, RandomState};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

    let (low, high) = non_ephemeral_ports();
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for attempt in 0u32..200 {
        let random = RandomState::new().hash_one(attempt);
        let port = low + (random % u64::from(high - low + 1)) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free port in {low}..={high}"),
    ))
}

/// Ports outside the kernel's ephemeral range (`ip_local_port_range`), above the well-known
/// services.
fn non_ephemeral_ports() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let (first, last) = range
        .as_deref()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u16>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    if first > 20_000 + 1_000 {
        (20_000, first - 1)
    } else {
        (last.saturating_add(1).max(1024), u16::MAX)
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (low, high) = non_ephemeral_ports();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        for port in &ports {
            assert!((low..=high).contains(port), "{port} not in {low}..={high}");
            std::net::TcpListener::bind(("127.0.0.1", *port)).unwrap();
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
    }
}
