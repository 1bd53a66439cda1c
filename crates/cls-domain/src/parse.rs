//! Parsing request bodies: every unknown field is reported with its JSON path (typos must not
//! vanish silently), so is every key given twice in one object (JSON parsers disagree on
//! which one counts), and a type error names the field it occurred in.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::error::FieldError;

/// Why a request body could not be turned into a request value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (`INVALID_JSON`).
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not the expected shape (`VALIDATION_FAILED`), with every problem found.
    #[error("request body does not match the expected shape")]
    Shape(Vec<FieldError>),
}

/// Parses a JSON object body into `T`.
///
/// Top-level keys listed in `dropped` (server-owned fields) are removed first and ignored.
/// All unknown fields are collected, each as "unknown field" at its path; a type error or a
/// missing required field is reported at its path too.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], dropped: &[&str]) -> Result<T, ParseError> {
    parse_json_checked(body, dropped, |_| Vec::new())
}

/// [`parse_json`] with the request's validation: like [`parse_value_checked`], and a key given
/// more than once in an object ("is given more than once" at its path) is a violation too,
/// reported with every other one. Duplicates of a top-level key in `dropped` are ignored with
/// it.
pub fn parse_json_checked<T: DeserializeOwned>(
    body: &[u8],
    dropped: &[&str],
    check: impl FnOnce(T) -> Vec<FieldError>,
) -> Result<T, ParseError> {
    let mut problems = Vec::new();
    let mut document = serde_json::Deserializer::from_slice(body);
    let mut value = StrictValue {
        path: &Path::Root,
        problems: &mut problems,
    }
    .deserialize(&mut document)
    // Nothing but whitespace may follow, as with `serde_json::from_slice`.
    .and_then(|value| document.end().map(|()| value))
    .map_err(|e| ParseError::Syntax(e.to_string()))?;
    // Whatever a dropped field holds is ignored with it.
    problems.retain(|p: &FieldError| !dropped.iter().any(|d| within(&p.field, d)));
    // `check` runs once: on the rest of a body with shape errors, or on a parsed body whose
    // only problems are duplicates.
    let mut check = Some(check);
    let mut run_check = |rest: T| check.take().map_or_else(Vec::new, |check| check(rest));
    let mut errors = problems;
    match parse_value_checked(&mut value, dropped, &mut run_check) {
        Ok(parsed) if errors.is_empty() => return Ok(parsed),
        Ok(parsed) => errors.extend(run_check(parsed)),
        Err(ParseError::Shape(more)) => errors.extend(more),
        Err(syntax) => return Err(syntax),
    }
    Err(ParseError::Shape(errors))
}

/// Where a value sits in the document, rendered only when a duplicate is found.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Deserializes a JSON value as `serde_json::Value` does (the last of repeated keys wins),
/// recording the path of every repeated key and of every string holding a NUL character
/// (Postgres stores no NUL in `text` or `jsonb`, so such a value could never be stored). A
/// number with no fractional part is read as an integer (`2.0` is `2`, as JSON Schema's
/// `integer` has it), so integer fields accept it.
struct StrictValue<'p, 'd> {
    path: &'p Path<'p>,
    problems: &'d mut Vec<FieldError>,
}

impl StrictValue<'_, '_> {
    fn record(&mut self, field: String, message: &str) {
        let error = FieldError::new(field, message);
        if !self.problems.contains(&error) {
            self.problems.push(error);
        }
    }

    fn check_nul(&mut self, path: &Path<'_>, s: &str) {
        if s.contains('\0') {
            self.record(path.to_string(), NUL_MESSAGE);
        }
    }
}

/// Why a string with a NUL character is refused.
pub const NUL_MESSAGE: &str = "must not contain NUL characters (\\u0000)";

impl<'de> DeserializeSeed<'de> for StrictValue<'_, '_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Exactly representable integers only: beyond 2^53 an f64 is not the number sent.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            #[expect(clippy::cast_possible_truncation, reason = "integral and within ±2^53")]
            return Ok(Value::from(v as i64));
        }
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(mut self, v: &str) -> Result<Value, E> {
        self.check_nul(self.path, v);
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(mut self, v: String) -> Result<Value, E> {
        self.check_nul(self.path, &v);
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(StrictValue {
            path: &Path::Index(self.path, items.len()),
            problems: &mut *self.problems,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            self.check_nul(&path, &key);
            let value = map.next_value_seed(StrictValue {
                path: &path,
                problems: &mut *self.problems,
            })?;
            if object.contains_key(&key) {
                self.record(path.to_string(), "is given more than once");
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Like [`parse_json`] for an already parsed value (the dropped keys are removed from it;
/// after a failure it holds what remained with the values at fault left out).
///
/// Every structural problem is reported at once: after a type error or a missing required
/// field, the value at fault is left out and parsing goes on, so a body with three missing
/// fields gets three errors, not one per attempt.
pub fn parse_value<T: DeserializeOwned>(
    value: &mut serde_json::Value,
    dropped: &[&str],
) -> Result<T, ParseError> {
    parse_value_checked(value, dropped, |_| Vec::new())
}

/// Like [`parse_value`], and when the body has structural problems, `check` (the request's
/// validation) runs on what could be parsed without the values at fault, so its violations
/// are reported together with the structural ones (SPEC §3.2: all violations at once).
/// Violations about a left-out value, or inside or around it, are not repeated.
pub fn parse_value_checked<T: DeserializeOwned>(
    value: &mut serde_json::Value,
    dropped: &[&str],
    check: impl FnOnce(T) -> Vec<FieldError>,
) -> Result<T, ParseError> {
    let Some(object) = value.as_object_mut() else {
        return Err(ParseError::Shape(vec![FieldError::new(
            "body",
            "request body must be a JSON object",
        )]));
    };
    for key in dropped {
        object.remove(*key);
    }
    let mut errors: Vec<FieldError> = Vec::new();
    // Paths of values left out or stood in for: their violations are already reported.
    let mut at_fault: Vec<String> = Vec::new();
    // Missing required fields stood in for, with how many stand-ins were tried.
    let mut standing_in: HashMap<String, usize> = HashMap::new();
    // Each round parses the whole body again and leaves out or stands in for one value. The
    // cap bounds the work a hostile body can cause (a round per problem, each over up to
    // 1 MiB) and guards against an error no change cures; past it, what was found is
    // reported.
    for _ in 0..MAX_ROUNDS {
        let mut unknown = Vec::new();
        let parsed = {
            let mut on_unknown = |path: serde_ignored::Path<'_>| {
                unknown.push(FieldError::new(ignored_path(&path), "unknown field"));
            };
            let ignored = serde_ignored::Deserializer::new(&*value, &mut on_unknown);
            serde_path_to_error::deserialize::<_, T>(ignored)
        };
        for error in unknown {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        let err = match parsed {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(rest) => {
                let more: Vec<FieldError> = check(rest)
                    .into_iter()
                    .filter(|e| {
                        !errors.iter().any(|known| known.field == e.field)
                            && !at_fault.iter().any(|gone| related(&e.field, gone))
                    })
                    .collect();
                errors.extend(more);
                return Err(ParseError::Shape(errors));
            }
            Err(err) => err,
        };
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let at = err_path(&segments);
        let message = err.into_inner().to_string();
        let mut record = |field: String, message: String| {
            let known = errors.iter().any(|e| e.field == field)
                || at_fault.iter().any(|gone| within(&field, gone));
            if !known {
                errors.push(FieldError::new(field, message));
            }
        };
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            // Stand in for the missing field, so the rest of its object is still checked.
            let field = join(&at, missing);
            record(field.clone(), "is required".to_owned());
            let mut member = segments;
            member.push(Segment::Map {
                key: missing.to_owned(),
            });
            if !set(value, &member, Some(serde_json::Value::from(""))) {
                break;
            }
            at_fault.push(field.clone());
            standing_in.insert(field, 0);
        } else if let Some(tried) = standing_in.get_mut(&at) {
            // The stand-in does not have the field's type: one of the type the error names,
            // or else leave the enclosing object out.
            *tried += 1;
            let fits = match placeholder_for(&message) {
                Some(next) if *tried < 2 => set(value, &segments, Some(next)),
                _ => false,
            };
            if !fits {
                let _ = leave_out(value, &segments);
                match leave_out(value, &segments[..segments.len().saturating_sub(1)]) {
                    Some(gone) => at_fault.push(gone),
                    None => break,
                }
            }
        } else {
            record(if at.is_empty() { "body".to_owned() } else { at }, message);
            match leave_out(value, &segments) {
                Some(gone) => at_fault.push(gone),
                None => break,
            }
        }
    }
    Err(ParseError::Shape(errors))
}

const MAX_ROUNDS: usize = 16;

/// A stand-in of the type a deserialization error says it expected (`invalid type: …,
/// expected a sequence`), if it names one.
fn placeholder_for(message: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    let (_, expected) = message.rsplit_once("expected ")?;
    let numbers = [
        "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64",
    ];
    if expected.contains("string") {
        Some(json!(""))
    } else if expected.contains("struct") || expected.contains("map") {
        Some(json!({}))
    } else if expected.contains("sequence") || expected.contains("array") {
        Some(json!([]))
    } else if expected.contains("bool") {
        Some(json!(false))
    } else if numbers.iter().any(|n| expected.starts_with(n)) || expected.contains("integer") {
        Some(json!(0))
    } else {
        None
    }
}

/// Whether `field` is `gone`, inside it or one of its enclosing objects.
fn related(field: &str, gone: &str) -> bool {
    within(field, gone) || within(gone, field)
}

/// Whether the path `inner` is `outer` or inside it.
fn within(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// The value at `segments`, if it is there.
fn node_at<'v>(
    mut node: &'v mut serde_json::Value,
    segments: &[Segment],
) -> Option<&'v mut serde_json::Value> {
    for segment in segments {
        node = match segment {
            Segment::Map { key } => node.get_mut(key.as_str())?,
            Segment::Seq { index } => node.get_mut(*index)?,
            Segment::Enum { .. } => node,
            Segment::Unknown => return None,
        };
    }
    Some(node)
}

/// Sets the object member at `segments` (the last segment a key) to `to`; `false` when
/// there is no such object or no value.
fn set(value: &mut serde_json::Value, segments: &[Segment], to: Option<serde_json::Value>) -> bool {
    let (Some((Segment::Map { key }, parent)), Some(to)) = (segments.split_last(), to) else {
        return false;
    };
    match node_at(value, parent).and_then(serde_json::Value::as_object_mut) {
        Some(object) => {
            object.insert(key.clone(), to);
            true
        }
        None => false,
    }
}

/// Formats a `serde_path_to_error` path like [`ignored_path`] does.
fn err_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Removes the object member holding the value at `segments` (the nearest enclosing one: a
/// bad array element takes its whole array out, so later indices keep their meaning).
/// Returns the removed member's path, or `None` when there is nothing left to remove.
fn leave_out(value: &mut serde_json::Value, segments: &[Segment]) -> Option<String> {
    let last_key = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))?;
    let Segment::Map { key } = &segments[last_key] else {
        return None;
    };
    node_at(value, &segments[..last_key])?
        .as_object_mut()?
        .remove(key.as_str())?;
    Some(err_path(&segments[..=last_key]))
}

/// Formats a path as `spec.platform.gcp.taints[0].key`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => match ignored_path(parent) {
            prefix if prefix.is_empty() => key.clone(),
            prefix => format!("{prefix}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{
        CreateClusterRequest, CreateNodePoolRequest, SERVER_OWNED_FIELDS, UpdateClusterRequest,
    };
    use serde_json::json;

    fn shape_errors<T: DeserializeOwned + std::fmt::Debug>(body: serde_json::Value) -> Vec<String> {
        match parse_json::<T>(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS) {
            Err(ParseError::Shape(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected shape errors, got {other:?}"),
        }
    }

    #[test]
    fn every_unknown_field_is_reported_with_its_path() {
        let errors = shape_errors::<CreateClusterRequest>(json!({
            "name": "c1",
            "nmae": "typo",
            "spec": {
                "infraId": "wrong-case",
                "platform": {"type": "gcp", "gcp": {
                    "projectID": "p", "region": "r", "network": "n", "subnet": "s",
                    "workloadIdentity": {"projectNumber": "1", "poolID": "p", "providerID": "x",
                        "extra": true}
                }},
                "networking": {"clusterNetwork": [{"cidr": "10.0.0.0/14", "hostprefix": 23}]}
            }
        }));
        assert_eq!(
            errors,
            vec![
                "nmae: unknown field",
                "spec.infraId: unknown field",
                "spec.networking.clusterNetwork[0].hostprefix: unknown field",
                "spec.platform.gcp.workloadIdentity.extra: unknown field",
            ]
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let errors = shape_errors::<CreateNodePoolRequest>(json!({
            "name": "np", "spec": {"replicas": "three", "platform": {"type": "gcp"}}
        }));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("spec.replicas: invalid type: string \"three\""),
            "{errors:?}"
        );

        let errors = shape_errors::<CreateClusterRequest>(json!({
            "name": "c", "spec": {"platform": {"type": "gcp", "gcp": {"projectID": "p"}}}
        }));
        assert_eq!(
            errors,
            vec![
                "spec.platform.gcp.region: is required",
                "spec.platform.gcp.network: is required",
                "spec.platform.gcp.subnet: is required",
            ]
        );
    }

    #[test]
    fn server_owned_fields_are_dropped_and_nulls_mean_absent() {
        let body = json!({
            "id": "x", "status": {"phase": "Ready"}, "generation": 9, "created_by": "evil@x.io",
            "created_at": "now", "updated_at": 1, "deleted_at": null, "resource_version": "7",
            "name": "c1", "description": null, "labels": null,
            "spec": {"platform": {"type": "GCP", "gcp": null}, "issuerURL": null}
        });
        let req: CreateClusterRequest =
            parse_json(body.to_string().as_bytes(), &SERVER_OWNED_FIELDS).unwrap();
        assert_eq!(req.name.as_deref(), Some("c1"));
        assert_eq!(req.description, None);
        let spec = req.spec.unwrap();
        assert_eq!(spec.issuer_url, None);
        assert_eq!(spec.platform_type().as_deref(), Some("gcp"));
    }

    #[test]
    fn update_keeps_resource_version_and_rejects_non_objects() {
        let req: UpdateClusterRequest =
            parse_json(br#"{"spec": {}, "resource_version": "3"}"#, &[]).unwrap();
        assert_eq!(req.resource_version.as_deref(), Some("3"));
        assert_eq!(
            parse_json::<UpdateClusterRequest>(b"[1]", &[]),
            Err(ParseError::Shape(vec![FieldError::new(
                "body",
                "request body must be a JSON object"
            )]))
        );
        assert!(matches!(
            parse_json::<UpdateClusterRequest>(b"{\"spec\": ", &[]),
            Err(ParseError::Syntax(_))
        ));
    }

    fn duplicate_errors(body: &str) -> Vec<String> {
        use crate::validate::{ReleaseDefaults, cluster_create_violations};
        let defaults = ReleaseDefaults {
            version: "4.16.0",
            channel_group: "stable",
        };
        match parse_json_checked::<CreateClusterRequest>(
            body.as_bytes(),
            &SERVER_OWNED_FIELDS,
            |rest| cluster_create_violations(rest, defaults),
        ) {
            Err(ParseError::Shape(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected shape errors, got {other:?}"),
        }
    }

    #[test]
    fn keys_given_twice_are_violations_at_their_paths() {
        let spec = r#"{"infraID": "c1", "platform": {"type": "gcp"}}"#;
        assert_eq!(
            duplicate_errors(&format!(
                r#"{{"name": "c1", "labels": {{"a": "1", "a": "2"}}, "spec": {spec}, "name": "c2"}}"#
            )),
            // In document order: the second `name` comes last.
            [
                "labels.a: is given more than once",
                "name: is given more than once"
            ]
        );
        // Inside arrays, reported once however often repeated, and beside every other
        // violation of the body.
        assert_eq!(
            duplicate_errors(
                r#"{"name": "Bad", "spec": {"infraID": "c1", "platform": {"type": "gcp"},
                    "networking": {"clusterNetwork": [{"cidr": "a"}, {"cidr": "b", "cidr": "c", "cidr": "d"}]},
                    "typo": 1}}"#
            ),
            [
                "spec.networking.clusterNetwork[1].cidr: is given more than once",
                "spec.typo: unknown field",
                "name: must be a lowercase DNS label: start with a lowercase letter, contain only lowercase letters, digits, or hyphens, and end with a letter or digit",
            ]
        );
        // A server-owned field is ignored, twice or not.
        let ignored: CreateClusterRequest = parse_json(
            format!(r#"{{"id": "x", "id": "y", "name": "c1", "spec": {spec}}}"#).as_bytes(),
            &SERVER_OWNED_FIELDS,
        )
        .unwrap();
        assert_eq!(ignored.name.as_deref(), Some("c1"));
    }

    #[test]
    fn the_strict_parser_reads_values_as_serde_json_does() {
        let body = br#" {"a": [1, -2, 3.5, 18446744073709551615, 1e300, 18446744073709551616, true, null, "s\u00e9"],
                         "b": {"c": {}}, "d": []} "#;
        let mut strict = Vec::new();
        let value = StrictValue {
            path: &Path::Root,
            problems: &mut strict,
        }
        .deserialize(&mut serde_json::Deserializer::from_slice(body))
        .unwrap();
        assert_eq!(value, serde_json::from_slice::<Value>(body).unwrap());
        assert!(strict.is_empty());
        // What follows the document is a syntax error, as with `serde_json::from_slice`.
        assert!(matches!(
            parse_json::<UpdateClusterRequest>(br#"{"spec": {}} {}"#, &[]),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn nul_characters_are_violations_at_their_path_and_integral_numbers_integers() {
        let body = "{\"name\": \"a\\u0000\", \"labels\": {\"k\\u0000\": \"v\"}, \"id\": \"\\u0000\",
                     \"spec\": {\"networking\": {\"clusterNetwork\": [{\"cidr\": \"10.0.0.0/14\", \"hostPrefix\": 23.0}]}}}";
        let errors = match parse_json::<CreateClusterRequest>(body.as_bytes(), &SERVER_OWNED_FIELDS)
        {
            Err(ParseError::Shape(errors)) => errors,
            other => panic!("expected shape errors, got {other:?}"),
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "labels.k\u{0}"],
            "the dropped `id` is ignored"
        );
        assert!(errors.iter().all(|e| e.message == NUL_MESSAGE));

        let mut strict = Vec::new();
        let value = StrictValue {
            path: &Path::Root,
            problems: &mut strict,
        }
        .deserialize(&mut serde_json::Deserializer::from_slice(
            b"[23.0, -0.0, 2.5, 9007199254740992.0, 1e300]",
        ))
        .unwrap();
        assert_eq!(
            value,
            serde_json::json!([23, 0, 2.5, 9_007_199_254_740_992_i64, 1e300]),
            "exact integers only; past 2^53 an f64 may not be the number sent"
        );
    }

    fn checked_errors<T: DeserializeOwned + std::fmt::Debug>(
        mut body: serde_json::Value,
        check: impl FnOnce(T) -> Vec<FieldError>,
    ) -> Vec<String> {
        match parse_value_checked::<T>(&mut body, &SERVER_OWNED_FIELDS, check) {
            Err(ParseError::Shape(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected shape errors, got {other:?}"),
        }
    }

    #[test]
    fn structural_and_semantic_violations_are_reported_together() {
        use crate::validate::{ReleaseDefaults, validate_cluster_create};
        let defaults = ReleaseDefaults {
            version: "4.16.0",
            channel_group: "stable",
        };
        let errors = checked_errors::<CreateClusterRequest>(
            json!({"name": "Bad_Name", "labels": {"a": 1}, "nmae": 1,
                "spec": {"infraID": "I1", "platform": {"type": "gcp", "gcp": {"projectID": "p"}}}}),
            |r| {
                validate_cluster_create(r, defaults)
                    .err()
                    .unwrap_or_default()
            },
        );
        assert_eq!(
            errors,
            vec![
                "labels.a: invalid type: integer `1`, expected a string",
                "nmae: unknown field",
                "spec.platform.gcp.region: is required",
                "spec.platform.gcp.network: is required",
                "spec.platform.gcp.subnet: is required",
                "name: must be a lowercase DNS label: start with a lowercase letter, contain \
                 only lowercase letters, digits, or hyphens, and end with a letter or digit",
                "spec.infraID: must start with a lowercase letter and contain only lowercase \
                 letters, digits, or hyphens",
            ]
        );
    }

    #[test]
    fn problems_inside_arrays_keep_their_indices() {
        use crate::validate::validate_nodepool_create;
        let errors = checked_errors::<CreateNodePoolRequest>(
            json!({"name": "np", "spec": {"replicas": "three", "platform": {"type": "gcp",
                "gcp": {"instanceType": 5, "taints": [
                    {"key": "a", "effect": "Sometimes"}, {"key": 1, "effect": "NoSchedule"},
                    {"effect": "NoExecute"}]}}}}),
            |r| validate_nodepool_create(r, None).err().unwrap_or_default(),
        );
        assert_eq!(
            errors,
            vec![
                "spec.platform.gcp.instanceType: invalid type: integer `5`, expected a string",
                "spec.platform.gcp.taints[1].key: invalid type: integer `1`, expected a string",
                "spec.platform.gcp.taints[2].key: is required",
                "spec.replicas: invalid type: string \"three\", expected i64",
                "spec.platform.gcp.taints[0].effect: must be one of NoSchedule, \
                 PreferNoSchedule, NoExecute (got 'Sometimes')",
            ]
        );
        // A bad array element (not an object) takes the array out, and nothing else.
        let errors = checked_errors::<CreateNodePoolRequest>(
            json!({"name": "np", "spec": {"platform": {"type": "gcp",
                "gcp": {"instanceType": "n2", "taints": ["NoSchedule", {"key": 3}]}}}}),
            |r| validate_nodepool_create(r, None).err().unwrap_or_default(),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.platform.gcp.taints[0]: invalid type"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_body_with_many_problems_costs_a_bounded_number_of_rounds() {
        let labels: serde_json::Map<String, serde_json::Value> =
            (0..40).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let errors = shape_errors::<CreateClusterRequest>(json!({"name": "c", "labels": labels}));
        assert_eq!(errors.len(), MAX_ROUNDS, "{errors:?}");
        assert!(
            errors[0].starts_with("labels.k00: invalid type"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_missing_field_of_any_type_is_stood_in_for_and_parsing_goes_on() {
        use crate::validate::validate_nodepool_create;
        // `size` is a number: the string stand-in does not fit, the number one does.
        let errors = checked_errors::<CreateNodePoolRequest>(
            json!({"name": "Bad", "spec": {"platform": {"type": "gcp",
                "gcp": {"instanceType": "n2", "rootVolume": {}}}}}),
            |r| validate_nodepool_create(r, None).err().unwrap_or_default(),
        );
        assert_eq!(
            errors,
            vec![
                "spec.platform.gcp.rootVolume.size: is required",
                "spec.platform.gcp.rootVolume.type: is required",
                "name: must be a lowercase DNS label: start with a lowercase letter, contain \
                 only lowercase letters, digits, or hyphens, and end with a letter or digit",
            ]
        );
    }
}
