//! What every CLS binary shares and nothing else: typed configuration from the environment
//! (SPEC §7), logging, the admin HTTP server (`/healthz`, `/readyz`, `/metrics`, SPEC §8) and
//! the shutdown signal. No domain logic and no SQL.

pub mod admin;
pub mod config;
pub mod logging;

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Exit code for a configuration error (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
