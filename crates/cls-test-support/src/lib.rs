//! Test-only helpers (a dev-dependency, never a normal one).
//!
//! - [`TestDb`]: a fresh database per test, cloned from a template that is migrated once per
//!   migration set. The server is `TEST_DATABASE_URL` or `DATABASE_URL` if set, otherwise a
//!   throwaway cluster this crate starts with `initdb`/`pg_ctl` (see [`postgres`]).
//! - [`PubSubEmulator`]: the real Google Pub/Sub emulator on a free port, stopped on drop.
//! - [`TcpGate`]: a switchable TCP forwarder, to cut clients off a real server and let them back.

pub mod binary;
pub mod emulator;
pub mod events;
pub mod gate;
pub mod postgres;
pub mod subscriber;

pub use emulator::PubSubEmulator;
pub use gate::TcpGate;
pub use postgres::TestDb;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}
