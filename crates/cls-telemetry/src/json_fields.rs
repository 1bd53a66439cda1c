//! Span fields for JSON log lines, cheap to add to.
//!
//! The JSON log layer keeps each span's fields as a JSON object string and copies them into
//! every line written inside the span. `tracing-subscriber`'s own `JsonFields` parses that
//! string and serialises it again whenever a field is recorded later (`Span::record`): the
//! gateway's server span records its `trace_id` and response status that way on every request,
//! which made about a tenth of the gateway's CPU per GET, for lines that are rarely written.
//! [`AppendJsonFields`] appends the new fields to the object instead.
//!
//! Every span's fields are formatted when it is created, whether or not a line is ever written
//! in it, so that has to be cheap too: [`ObjectWriter`] writes each member straight into the
//! text, where `JsonVisitor` collects the values into a map of `serde_json::Value`s first (each
//! string copied once more) and then serialises the map.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
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
        let mut visitor = ObjectWriter::new(&mut writer);
        fields.record(&mut visitor);
        visitor.finish()
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        let mut visitor = ObjectWriter::new(&mut added);
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

/// Writes the fields it visits as one JSON object (`{}` for none), in the order visited, with
/// the values `JsonVisitor` gives them: strings and `Debug` output as JSON strings, numbers and
/// booleans as themselves, bytes as an array of numbers. `log.*` fields (metadata of bridged
/// `log` records) are left out, and a raw identifier's `r#` is dropped.
struct ObjectWriter<'w, W> {
    out: &'w mut W,
    empty: bool,
    result: fmt::Result,
}

impl<'w, W: fmt::Write> ObjectWriter<'w, W> {
    fn new(out: &'w mut W) -> Self {
        ObjectWriter {
            out,
            empty: true,
            result: Ok(()),
        }
    }

    /// Writes the member for `field`, its value written by `value`.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.empty { '{' } else { ',' };
        self.empty = false;
        self.result = self
            .out
            .write_char(separator)
            .and_then(|()| write_string(self.out, name))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.out.write_str(if self.empty { "{}" } else { "}" })
    }
}

impl<W: fmt::Write> Visit for ObjectWriter<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it (`1.0`, not `1`; `null` when not finite).
        self.member(field, |out| {
            write!(out, "{}", serde_json::Value::from(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.member(field, |out| {
            out.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write!(out, "{byte}")?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn write_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string (RFC 8259 §7).
struct Escaped<'w, W>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Runs of characters that need no escape are written as they are.
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            if byte >= 0x20 && byte != b'"' && byte != b'\\' {
                continue;
            }
            self.0.write_str(&text[plain..at])?;
            match byte {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                control => write!(self.0, "\\u{control:04x}")?,
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
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
    fn fields_are_written_as_json_visitor_writes_them() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::field::VisitOutput as _;
        use tracing_subscriber::layer::{Context, SubscriberExt as _};

        /// Each new span's fields as written by `ObjectWriter` and by `JsonVisitor`.
        #[derive(Clone, Default)]
        struct Both(Arc<Mutex<Vec<(String, String)>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Both {
            fn on_new_span(
                &self,
                attrs: &tracing::span::Attributes<'_>,
                _: &tracing::span::Id,
                _: Context<'_, S>,
            ) {
                let mut ours = String::new();
                let mut writer = ObjectWriter::new(&mut ours);
                attrs.record(&mut writer);
                writer.finish().unwrap();
                let mut theirs = String::new();
                let mut visitor = tracing_subscriber::fmt::format::JsonVisitor::new(&mut theirs);
                attrs.record(&mut visitor);
                visitor.finish().unwrap();
                self.0.lock().unwrap().push((ours, theirs));
            }
        }

        let both = Both::default();
        let subscriber = tracing_subscriber::registry().with(both.clone());
        tracing::subscriber::with_default(subscriber, || {
            let _ = tracing::info_span!(
                "all kinds",
                text = "a \"quoted\" \\ line\nnext\r\t\u{1}\u{1f} é ✓",
                negative = -3_i64,
                unsigned = u64::MAX,
                float = 1.0_f64,
                not_a_number = f64::NAN,
                yes = true,
                bytes = &b"ab"[..],
                debug = ?vec!["x\"y"],
                display = %"a\nb",
                r#type = "raw",
                empty = "",
            );
            let _ = tracing::info_span!("no fields");
        });

        let written = both.0.lock().unwrap().clone();
        assert_eq!(written.len(), 2);
        for (ours, theirs) in &written {
            let ours: serde_json::Value = serde_json::from_str(ours).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(theirs).unwrap();
            assert_eq!(ours, theirs);
        }
        assert_eq!(written[1].0, "{}");
        let first: serde_json::Value = serde_json::from_str(&written[0].0).unwrap();
        assert_eq!(
            first["text"],
            "a \"quoted\" \\ line\nnext\r\t\u{1}\u{1f} é ✓"
        );
        assert_eq!(first["type"], "raw");
        assert_eq!(first["float"], 1.0);
        assert!(first["not_a_number"].is_null());
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
