//! Span fields for log lines only: recorded on a span so its log lines carry them, removed
//! from the span before it is exported.
//!
//! `trace_id` is the one: every log line of a request carries it, but an exported span has its
//! trace id already, and converting, sending and decoding the same 32 hex digits again as an
//! attribute was a large part of what exporting a server span cost per request (the gRPC
//! server spans record it; the gateway's request span, not exported, declares it up front).

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The fields that are never exported.
pub(crate) const FIELDS: &[&str] = &["trace_id"];

/// A span processor that removes [`FIELDS`] from each ended span and passes it on to `P`.
#[derive(Debug)]
pub(crate) struct WithoutLogOnlyFields<P>(pub(crate) P);

impl<P: SpanProcessor> SpanProcessor for WithoutLogOnlyFields<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        span.attributes
            .retain(|kv| !FIELDS.contains(&kv.key.as_str()));
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Keeps the attribute keys of every span that reaches it.
    #[derive(Debug, Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Vec<String>>>>);

    impl SpanProcessor for Seen {
        fn on_start(&self, _: &mut Span, _: &Context) {}

        fn on_end(&self, span: SpanData) {
            let keys = span
                .attributes
                .iter()
                .map(|kv| kv.key.to_string())
                .collect();
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(keys);
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn log_only_fields_are_removed_and_the_rest_passed_on() {
        let seen = Seen::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(WithoutLogOnlyFields(seen.clone()))
            .build();
        let tracer = provider.tracer("test");
        tracer
            .span_builder("request")
            .with_attributes([
                KeyValue::new("http.route", "/api/v1/clusters"),
                KeyValue::new("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
                KeyValue::new("request_id", "req-1"),
            ])
            .start(&tracer);
        drop(provider);
        let seen = seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen, [vec!["http.route", "request_id"]]);
    }
}
