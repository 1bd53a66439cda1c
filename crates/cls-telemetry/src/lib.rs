//! Logs and traces for every CLS binary (SPEC §8).
//!
//! [`init`] installs the `tracing` subscriber once per process: JSON lines (default) or text,
//! filtered by `RUST_LOG` or the configured level, each line carrying the fields of the spans it
//! happens in (so a request's `request_id` and `trace_id` are on all of its lines). When an
//! OTLP endpoint is configured, spans are also exported over OTLP/gRPC with `service.name` and
//! `service.version`; without one, no OpenTelemetry layer is installed at all (no overhead).
//!
//! Trace context crosses process boundaries as W3C `traceparent` strings: [`traceparent`] of a
//! span to send, [`context`] of a received one to parent or link to.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod json_fields;
mod log_only;
pub mod request;
pub mod server;

pub use opentelemetry::Context;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// What [`init`] needs.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// `service.name`, e.g. `api-gateway`.
    pub service: &'static str,
    /// `service.version`.
    pub version: &'static str,
    pub level: &'a str,
    pub format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (gRPC, e.g. `http://collector:4317`); `None`: no tracing.
    pub otlp_endpoint: Option<&'a str>,
}

/// Checks a log filter before [`init`] uses it, so that a typo stops start-up instead of
/// silently changing what is logged. `RUST_LOG` takes `tracing` directives (`info`,
/// `cls_storage=debug`, `my_crate`: a bare target means every level of it); `LOG_LEVEL` is
/// stricter (`levels_only`): a directive without `=` must be a level, so `verbose` is an
/// error rather than a filter that enables target `verbose` and turns every other line off.
pub fn check_filter(raw: &str, levels_only: bool) -> Result<(), String> {
    use std::str::FromStr as _;
    const HINT: &str = "a level (off, error, warn, info, debug, trace) or directives such as info,cls_storage=debug";
    for directive in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        let valid = if bare && levels_only {
            tracing_subscriber::filter::LevelFilter::from_str(directive).is_ok()
        } else {
            tracing_subscriber::filter::Directive::from_str(directive).is_ok()
        };
        if !valid {
            return Err(format!("must be {HINT} ('{directive}' is not valid)"));
        }
    }
    Ok(())
}

static TRACING: OnceLock<bool> = OnceLock::new();

/// Whether spans are exported (an OTLP endpoint was configured).
pub fn tracing_enabled() -> bool {
    TRACING.get().copied().unwrap_or(false)
}

/// Flushes exported spans when dropped or shut down.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (off the async runtime's threads: the exporter needs
    /// them to send). Call at the end of `main`.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the subscriber (and the OTLP exporter when configured). Call once, inside the Tokio
/// runtime. A second call in the same process keeps the first subscriber.
pub fn init(settings: &Settings<'_>) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::EnvFilter;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Logs follow LOG_LEVEL (or RUST_LOG); exported spans are CLS's own at info and above,
    // whatever the log level, never library internals (h2, hyper, tower, …), so disabled call
    // sites cost nothing and traces hold what an operator reads.
    let quiet = "h2=warn,hyper=warn,hyper_util=warn,tower=warn,actix_server=warn,opentelemetry=warn,opentelemetry_sdk=warn,tonic=warn";
    // Events follow the level, but a span that names a request (it has a `request_id`
    // field: the gateway's server span) is kept even when the level is above its own
    // (`LOG_LEVEL=warn`), so a request's WARN line still carries its `request_id` and
    // `trace_id`. Spans are not lines, so this logs nothing more; other spans stay off and
    // cost nothing. The check is on static metadata, so its answer is cached per call site.
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},{quiet}", settings.level)))
        .or(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.fields().field("request_id").is_some()
        })
        .with_max_level_hint(tracing::level_filters::LevelFilter::INFO));
    let (otel, provider) = match settings.otlp_endpoint {
        Some(endpoint) => {
            // Events become span events only at WARN and above: the access log line repeats
            // what the server span already carries (route, status), and exporting it per
            // request would double what every span costs to build, send and store. A static
            // `Targets` filter, not an `EnvFilter`: it keeps no per-span state, so entering and
            // leaving a span costs it nothing.
            // A request's log-only span is not exported: its `server::ServerSpan` is.
            let all_targets: tracing_subscriber::filter::Targets =
                format!("info,{quiet}").parse()?;
            let span_targets = all_targets.clone().with_target(
                server::LOG_ONLY_TARGET,
                tracing::level_filters::LevelFilter::OFF,
            );
            // The hint matters: without one the combination has none, the process's maximum
            // level becomes TRACE, and every `log` record of every library (tokio-postgres
            // formats each query's parameters at DEBUG) is built only to be filtered out.
            let span_filter = span_targets.and(
                tracing_subscriber::filter::filter_fn(|meta| {
                    meta.is_span() || *meta.level() <= tracing::Level::WARN
                })
                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
            );
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(std::time::Duration::from_secs(3))
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    settings.version,
                ))
                .build();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                // Fields for log lines only (`trace_id`) are not exported.
                .with_span_processor(log_only::WithoutLogOnlyFields(
                    opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build(),
                ))
                .build();
            let tracer = provider.tracer(settings.service);
            server::set_tracer(tracer.clone());
            opentelemetry::global::set_tracer_provider(provider.clone());
            (
                Some(
                    // No per-poll busy/idle timing, thread, target or source-location
                    // attributes: they cost on every span and the conventions do not ask for
                    // them. No OpenTelemetry context attached on every poll either: parents
                    // and propagation follow the `tracing` span tree (`traceparent`, below).
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_tracked_inactivity(false)
                        .with_threads(false)
                        .with_location(false)
                        .with_target(false)
                        .with_context_activation(false)
                        .with_filter(span_filter)
                        .and_then(
                            server::EventsOnServerSpans.with_filter(
                                // It sees the spans the OpenTelemetry layer sees and the request
                                // spans (to tell which is innermost), and WARN and ERROR events.
                                tracing_subscriber::filter::filter_fn(move |meta| {
                                    if meta.is_span() {
                                        all_targets.would_enable(meta.target(), meta.level())
                                    } else {
                                        *meta.level() <= tracing::Level::WARN
                                    }
                                })
                                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
                            ),
                        ),
                ),
                Some(provider),
            )
        }
        None => (None, None),
    };
    let _ = TRACING.set(provider.is_some());
    let registry = tracing_subscriber::registry().with(otel);
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_target(false)
                    .fmt_fields(json_fields::AppendJsonFields)
                    .with_filter(log_filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_filter(log_filter),
            )
            .try_init(),
    };
    Ok(Telemetry { provider })
}

/// The OpenTelemetry context of a W3C `traceparent` (an empty context when absent or invalid).
pub fn context(traceparent: Option<&str>) -> Context {
    // Most requests carry none: no carrier to build and parse then (twice per request).
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// The `traceparent` of a span, when it has a valid OpenTelemetry context (tracing enabled);
/// for a span that is not exported (a request's log-only span), the current context's (its
/// [`server::ServerSpan`] while the request runs).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut cx = span.context();
    if !cx.span().span_context().is_valid() {
        cx = Context::current();
    }
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote `traceparent` (no-op when absent or invalid).
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    parent_on(span, context(traceparent));
}

/// Makes `span` a child of the remote `traceparent` (when valid) and returns the 32-hex trace
/// id for its log lines: the span's when tracing, else the caller's, else a new random one.
/// The `traceparent` is parsed once for both.
pub fn adopt_remote_parent(span: &tracing::Span, traceparent: Option<&str>) -> String {
    let remote = context(traceparent);
    parent_on(span, remote.clone());
    let own = span.context().span().span_context().trace_id();
    if own != opentelemetry::trace::TraceId::INVALID {
        return own.to_string();
    }
    trace_id_for_logs(&remote)
}

/// The trace id for the log lines of work without an exported span: the remote parent's
/// when valid, else a new random one.
fn trace_id_for_logs(remote: &Context) -> String {
    let remote_span = remote.span();
    let sc = remote_span.span_context();
    if sc.is_valid() {
        return sc.trace_id().to_string();
    }
    opentelemetry::trace::TraceId::from(random_u128()).to_string()
}

/// Parents `span` on `remote` when that is a valid span context.
fn parent_on(span: &tracing::Span, remote: Context) {
    if remote.span().span_context().is_valid() {
        let _ = span.set_parent(remote);
    }
}

fn random_u128() -> u128 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // Two SipHash outputs with the process's random keys; uniqueness, not secrecy, is needed.
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let high = a.finish();
    a.write_u8(1);
    (u128::from(high) << 64) | u128::from(a.finish()) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn filters_are_checked_before_use() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,cls_storage=debug",
            " info , h2=off ",
            "3",
        ] {
            assert_eq!(check_filter(ok, true), Ok(()), "{ok}");
        }
        // A bare target is a `RUST_LOG` filter (every level of it), not a level.
        assert_eq!(check_filter("cls_storage", false), Ok(()));
        assert_eq!(check_filter("api_gateway[request]=debug", false), Ok(()));
        for (bad, levels_only) in [
            ("verbose", true),
            ("info,cls_storage", true),
            ("info,foo=bar", false),
            ("cls_storage=loud", true),
        ] {
            let err = check_filter(bad, levels_only).unwrap_err();
            assert!(err.starts_with("must be a level"), "{bad}: {err}");
        }
        assert!(
            check_filter("info,foo=bar", true)
                .unwrap_err()
                .contains("'foo=bar'")
        );
    }

    #[test]
    fn traceparents_round_trip_through_contexts() {
        let cx = context(Some(TP));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(
            !context(Some("00-zz-00-01"))
                .span()
                .span_context()
                .is_valid()
        );
        assert!(!context(None).span().span_context().is_valid());
    }

    #[test]
    fn trace_ids_for_logs_without_tracing() {
        let span = tracing::Span::none();
        assert_eq!(
            adopt_remote_parent(&span, Some(TP)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let fresh = adopt_remote_parent(&span, None);
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, adopt_remote_parent(&span, Some("00-zz-00-01")));
        assert_eq!(traceparent(&span), None);
    }
}
