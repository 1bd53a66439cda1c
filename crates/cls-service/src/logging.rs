//! Logs and traces of a binary: [`cls_telemetry::init`] with the settings every service
//! shares (`LOG_LEVEL`/`RUST_LOG`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`).

use crate::config::LogFormat;

/// Installs logging (and trace export when an endpoint is set). On failure the message is
/// printed and the process should exit: the exporter configuration is invalid.
pub fn init(
    service: &'static str,
    version: &'static str,
    level: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<cls_telemetry::Telemetry, String> {
    cls_telemetry::init(&cls_telemetry::Settings {
        service,
        version,
        level,
        format,
        otlp_endpoint,
    })
    .map_err(|e| format!("{service}: cannot set up tracing: {e:#}"))
}
