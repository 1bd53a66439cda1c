//! The exported span of a request a server handles, built directly with the OpenTelemetry SDK.
//!
//! Every request has one, so what it costs is on every request's path. Built through the
//! `tracing` layer, it cost about as much again as exporting it (the layer's bookkeeping per
//! span, poll and recorded field); built here, it is one SDK span with its attributes, started
//! when the request arrives and ended with its outcome. The request's `tracing` span stays,
//! for log lines, with the trace id declared up front, and is not exported itself
//! ([`LOG_ONLY_TARGET`]).
//!
//! Spans made while the request runs (storage, outgoing gRPC calls) find this one as their
//! parent through the OpenTelemetry context, which [`ServerSpan::run`] makes current on every
//! poll; WARN and ERROR events outside such spans are added to it by `EventsOnServerSpans`.

use std::future::Future;
use std::sync::OnceLock;

use futures_util::future::Either;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::layer::Context as LayerContext;

/// The target of a request's `tracing` span when its exported span is a [`ServerSpan`]: the
/// OpenTelemetry layer leaves spans of this target out.
pub const LOG_ONLY_TARGET: &str = "cls::request";

/// The tracer of [`ServerSpan`]s, when tracing (set by `init`).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// A request's exported span (nothing when tracing is off).
#[derive(Debug)]
pub struct ServerSpan {
    cx: Option<Context>,
}

impl ServerSpan {
    /// Starts the span named by `name` (kind server) with `attributes`, as a child of the
    /// client's `traceparent` when it is valid. Returns it with the 32-hex trace id for the
    /// request's log lines: the span's when tracing, else the client's, else a new random one.
    /// `name` and the attributes' values are only copied when tracing.
    pub fn start(
        name: impl FnOnce() -> String,
        attributes: &[(&'static str, &str)],
        traceparent: Option<&str>,
    ) -> (ServerSpan, String) {
        Self::start_with(TRACER.get(), name, attributes, traceparent)
    }

    fn start_with(
        tracer: Option<&SdkTracer>,
        name: impl FnOnce() -> String,
        attributes: &[(&'static str, &str)],
        traceparent: Option<&str>,
    ) -> (ServerSpan, String) {
        let parent = crate::context(traceparent);
        let Some(tracer) = tracer else {
            return (ServerSpan { cx: None }, crate::trace_id_for_logs(&parent));
        };
        let span = tracer
            .span_builder(name())
            .with_kind(SpanKind::Server)
            .with_attributes(
                attributes
                    .iter()
                    .map(|(key, value)| KeyValue::new(*key, (*value).to_owned())),
            )
            .start_with_context(tracer, &parent);
        let trace_id = span.span_context().trace_id().to_string();
        (
            ServerSpan {
                cx: Some(parent.with_span(span)),
            },
            trace_id,
        )
    }

    /// Runs `fut` inside this span: its context is current on every poll.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        match &self.cx {
            Some(cx) => Either::Left(fut.with_context(cx.clone())),
            None => Either::Right(fut),
        }
    }

    /// Ends the span with an integer attribute of the outcome (e.g. the response status) and,
    /// when `failed`, an error status.
    pub fn end(self, outcome: (&'static str, i64), failed: bool) {
        let Some(cx) = self.cx else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new(outcome.0, outcome.1));
        if failed {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// Sets the tracer [`ServerSpan`]s are made with (`init`, when tracing).
pub(crate) fn set_tracer(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// Adds WARN and ERROR events that happen directly in a request's log-only span (not in a
/// span the OpenTelemetry layer exports, which takes them itself) to the request's
/// [`ServerSpan`], as the OpenTelemetry layer does for the spans it builds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventsOnServerSpans;

impl<S> tracing_subscriber::Layer<S> for EventsOnServerSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let in_request_span = ctx
            .event_span(event)
            .is_some_and(|span| span.metadata().target() == LOG_ONLY_TARGET);
        if !in_request_span {
            return;
        }
        let cx = Context::current();
        let span = cx.span();
        if !span.span_context().is_valid() {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        span.add_event(message.0, vec![KeyValue::new("level", level.as_str())]);
        if level == tracing::Level::ERROR {
            span.set_status(Status::error(""));
        }
    }
}

/// An event's `message` field.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
    use tracing::Instrument as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Keeps every span that ends.
    #[derive(Debug, Clone, Default)]
    struct Ended(Arc<Mutex<Vec<SpanData>>>);

    impl Ended {
        fn take(&self) -> Vec<SpanData> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }

    impl SpanProcessor for Ended {
        fn on_start(&self, _: &mut Span, _: &Context) {}

        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(span);
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn tracer() -> (SdkTracerProvider, SdkTracer, Ended) {
        let ended = Ended::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(ended.clone())
            .build();
        let tracer = provider.tracer("test");
        (provider, tracer, ended)
    }

    fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_server_span_continues_the_client_s_trace_and_ends_with_its_outcome() {
        let (_provider, tracer, ended) = tracer();
        let (span, trace_id) = ServerSpan::start_with(
            Some(&tracer),
            || "GET /api/v1/clusters/{id}".to_owned(),
            &[
                ("http.route", "/api/v1/clusters/{id}"),
                ("request_id", "r-1"),
            ],
            Some(TRACEPARENT),
        );
        assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ended.take().is_empty(), "not ended before its outcome");
        span.end(("http.response.status_code", 503), true);

        let spans = ended.take();
        let [span] = spans.as_slice() else {
            panic!("one span: {spans:?}")
        };
        assert_eq!(span.name, "GET /api/v1/clusters/{id}");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.span_context.trace_id().to_string(), trace_id);
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(attribute(span, "request_id").as_deref(), Some("r-1"));
        assert_eq!(
            attribute(span, "http.response.status_code").as_deref(),
            Some("503")
        );
        assert!(matches!(span.status, Status::Error { .. }));

        // Without a valid traceparent the span starts a trace of its own.
        let (span, trace_id) =
            ServerSpan::start_with(Some(&tracer), || "GET".to_owned(), &[], Some("00-zz"));
        span.end(("http.response.status_code", 200), false);
        let spans = ended.take();
        assert_eq!(spans[0].span_context.trace_id().to_string(), trace_id);
        assert_eq!(
            spans[0].parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );
        assert_eq!(spans[0].status, Status::Unset);
    }

    #[test]
    fn without_tracing_the_log_trace_id_is_the_client_s_or_a_new_one() {
        let (span, trace_id) = ServerSpan::start_with(
            None,
            || unreachable!("named without tracing"),
            &[],
            Some(TRACEPARENT),
        );
        assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        span.end(("http.response.status_code", 200), false);
        let (_, fresh) =
            ServerSpan::start_with(None, || unreachable!("named without tracing"), &[], None);
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[tokio::test]
    async fn warnings_in_the_request_span_reach_the_server_span_once() {
        let (provider, tracer, ended) = tracer();
        // The OpenTelemetry layer as `init` sets it up, for the child span, beside this one.
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("layer"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing::Level::INFO)
                    .with_target(LOG_ONLY_TARGET, tracing::level_filters::LevelFilter::OFF),
            );
        let subscriber = tracing_subscriber::registry()
            .with(otel)
            .with(EventsOnServerSpans);
        let _default = tracing::subscriber::set_default(subscriber);

        let (server, _) = ServerSpan::start_with(Some(&tracer), || "POST".to_owned(), &[], None);
        let request = tracing::info_span!(target: LOG_ONLY_TARGET, "HTTP request");
        server
            .run(async {
                tracing::info!("not exported");
                tracing::warn!("in the request");
                let child = tracing::info_span!("storage");
                let _entered = child.enter();
                tracing::warn!("in a child span");
            })
            .instrument(request)
            .await;
        server.end(("http.response.status_code", 200), false);

        let spans = ended.take();
        let events = |name: &str| -> Vec<String> {
            let span = spans.iter().find(|s| s.name == name).unwrap();
            span.events.iter().map(|e| e.name.to_string()).collect()
        };
        assert_eq!(events("POST"), ["in the request"]);
        assert_eq!(events("storage"), ["in a child span"]);
        // The child's parent is the server span, through the context `run` makes current.
        let server = spans.iter().find(|s| s.name == "POST").unwrap();
        let child = spans.iter().find(|s| s.name == "storage").unwrap();
        assert_eq!(child.parent_span_id, server.span_context.span_id());
    }
}
