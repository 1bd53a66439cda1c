//! Span fields for JSON log lines, cheap to add to.
//!
//! The JSON log layer keeps each span's fields as a JSON object string and copies them into
//! every line written inside the span. `tracing-subscriber`'s own `JsonFields` parses that
//! string and serialises it again whenever a field is recorded later (`Span::record`): the
//! gateway's server span records its `trace_id` and response status that way on every request,
//! which made about a tenth of the gateway's CPU per GET, for lines that are rarely written.
//! [`AppendJsonFields`] appends the new fields to the object instead.

use std::fmt;

use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::fmt::format::{JsonVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// The JSON log layer's span-field formatter (see the module docs).
///
/// A field recorded again (already in the object) takes the slow path, a full merge, so a
/// long-lived span that records the same field on every iteration does not grow.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AppendJsonFields;

impl<'writer> FormatFields<'writer> for AppendJsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::new(&mut writer);
        fields.record(&mut visitor);
        visitor.finish()
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        let mut visitor = JsonVisitor::new(&mut added);
        fields.record(&mut visitor);
        visitor.finish()?;
        let mut names = FieldNames::default();
        fields.record(&mut names);
        if names.0.iter().any(|name| has_key(&current.fields, name)) {
            current.fields = merged(&current.fields, &added)?;
        } else {
            append(&mut current.fields, &added);
        }
        Ok(())
    }
}

/// The names of the fields a `record` call carries.
#[derive(Default)]
struct FieldNames(Vec<&'static str>);

impl tracing::field::Visit for FieldNames {
    fn record_debug(&mut self, field: &tracing::field::Field, _: &dyn fmt::Debug) {
        self.0.push(field.name());
    }
}

/// Whether the JSON object text `object` may have the member `name` (a `"name":` in it; a
/// value that merely contains that text only costs a needless merge).
fn has_key(object: &str, name: &str) -> bool {
    object
        .match_indices(name)
        .any(|(at, _)| object[..at].ends_with('"') && object[at + name.len()..].starts_with("\":"))
}

/// The members of both JSON objects, `added`'s replacing `object`'s of the same name.
fn merged(object: &str, added: &str) -> Result<String, fmt::Error> {
    type Members = serde_json::Map<String, serde_json::Value>;
    let mut members: Members = serde_json::from_str(object).map_err(|_| fmt::Error)?;
    let added: Members = serde_json::from_str(added).map_err(|_| fmt::Error)?;
    members.extend(added);
    serde_json::to_string(&members).map_err(|_| fmt::Error)
}

/// Merges the JSON object `added` into the JSON object `object` (or replaces an empty one).
fn append(object: &mut String, added: &str) {
    let Some(members) = added.strip_prefix('{').filter(|m| *m != "}") else {
        return; // nothing recorded
    };
    if !object.ends_with('}') {
        *object = added.to_owned();
        return;
    }
    object.pop();
    if object.len() > 1 {
        object.push(',');
    }
    object.push_str(members);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_fields_join_the_object() {
        let mut object = r#"{"request_id":"r-1"}"#.to_owned();
        append(&mut object, r#"{"trace_id":"abc","status":200}"#);
        assert_eq!(
            object,
            r#"{"request_id":"r-1","trace_id":"abc","status":200}"#
        );
        append(&mut object, "{}");
        assert_eq!(
            object,
            r#"{"request_id":"r-1","trace_id":"abc","status":200}"#
        );

        let mut empty = "{}".to_owned();
        append(&mut empty, r#"{"a":1}"#);
        assert_eq!(empty, r#"{"a":1}"#);
        let mut unset = String::new();
        append(&mut unset, r#"{"a":1}"#);
        assert_eq!(unset, r#"{"a":1}"#);
    }

    #[test]
    fn a_field_recorded_again_is_replaced_not_repeated() {
        assert!(has_key(r#"{"status":200}"#, "status"));
        assert!(!has_key(r#"{"status_code":200}"#, "status"));
        assert!(!has_key(r#"{"a":"status"}"#, "status"));
        assert_eq!(
            merged(r#"{"a":1,"status":200}"#, r#"{"status":503}"#).unwrap(),
            r#"{"a":1,"status":503}"#
        );
    }

    #[test]
    fn a_span_s_later_fields_reach_its_log_lines() {
        use tracing_subscriber::layer::SubscriberExt as _;

        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .fmt_fields(AppendJsonFields)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                trace_id = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            span.record("trace_id", "t-1");
            span.record("status", 200);
            span.record("status", 503);
            let _entered = span.enter();
            tracing::warn!("late");
        });

        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["fields"]["message"], "late");
        for span in [&line["span"], &line["spans"][0]] {
            assert_eq!(span["request_id"], "r-1", "{line}");
            assert_eq!(span["trace_id"], "t-1", "{line}");
            assert_eq!(span["status"], 503, "{line}");
        }
    }
}
