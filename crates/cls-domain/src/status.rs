//! Aggregated status, conditions and controller reports (SPEC §4.1, §4.2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::FieldError;
use crate::timefmt::{parse_rfc3339, rfc3339_utc};
use crate::validate::is_dns_label;

/// The high-level state of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Ready,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn parse(s: &str) -> Option<ConditionStatus> {
        match s {
            "True" => Some(ConditionStatus::True),
            "False" => Some(ConditionStatus::False),
            "Unknown" => Some(ConditionStatus::Unknown),
            _ => None,
        }
    }
}

/// One condition of an aggregated status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// Changes only when `status` changes.
    #[serde(rename = "lastTransitionTime", with = "rfc3339_utc")]
    pub last_transition_time: OffsetDateTime,
}

/// The aggregated status of a cluster or nodepool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    #[serde(rename = "observedGeneration")]
    pub observed_generation: i64,
    pub phase: Phase,
    pub reason: String,
    pub message: String,
    /// Always `[Ready, Available]`.
    pub conditions: Vec<Condition>,
    #[serde(rename = "lastUpdateTime", with = "rfc3339_utc")]
    pub last_update_time: OffsetDateTime,
}

impl Status {
    pub fn condition(&self, condition_type: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.condition_type == condition_type)
    }
}

// ---------------------------------------------------------------------------------------------
// Controller reports

/// `PUT …/status` body as sent by a controller.
// Required fields are optional in the type so that [`validate_report`] reports every missing
// one at once.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct ControllerReport {
    /// 1–63 lowercase letters, digits or hyphens, a letter first and no hyphen last
    /// (surrounding whitespace is trimmed).
    #[serde(default)]
    #[schema(required = true, value_type = String, pattern = r"^\s*[a-z]([-a-z0-9]{0,61}[a-z0-9])?\s*$")]
    pub controller_name: Option<String>,
    /// At least 1 and at most the resource's current generation (400 otherwise).
    #[serde(default)]
    #[schema(required = true, value_type = i64, minimum = 1)]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Option<Vec<ReportedCondition>>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub last_error: Option<ErrorInfo>,
}

/// A condition as a controller reports it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, utoipa::ToSchema)]
pub struct ReportedCondition {
    /// Unique within the report (surrounding whitespace is trimmed).
    #[serde(rename = "type", default)]
    #[schema(required = true, value_type = String, pattern = r"\S")]
    pub condition_type: Option<String>,
    #[serde(default)]
    #[schema(required = true, value_type = ConditionStatus)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// RFC 3339.
    #[serde(rename = "lastTransitionTime", default)]
    #[schema(format = DateTime)]
    pub last_transition_time: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
}

/// A controller's description of its last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    #[serde(rename = "controllerName")]
    pub controller_name: String,
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorCode")]
    pub error_code: String,
    pub message: String,
    #[serde(rename = "userActionable")]
    pub user_actionable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    /// A duration such as `"30s"` or a number of seconds.
    #[serde(
        rename = "retryAfter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = crate::schema::retry_after)]
    pub retry_after: Option<Value>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
}

/// A condition as stored in a controller's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControllerCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: ConditionStatus,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(rename = "lastTransitionTime", with = "rfc3339_utc")]
    pub last_transition_time: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// A validated controller report, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReport {
    pub controller_name: String,
    pub observed_generation: i64,
    pub conditions: Vec<ControllerCondition>,
    pub metadata: Map<String, Value>,
    pub last_error: Option<ErrorInfo>,
}

/// One controller's stored row for one resource (one row per resource and controller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControllerStatus {
    pub controller_name: String,
    pub observed_generation: i64,
    pub conditions: Vec<ControllerCondition>,
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub last_error: Option<ErrorInfo>,
    /// When this controller first reported on `observed_generation`.
    #[serde(with = "rfc3339_utc")]
    pub first_reported_at: OffsetDateTime,
    /// When this controller last reported.
    #[serde(rename = "last_updated", with = "rfc3339_utc")]
    pub last_reported_at: OffsetDateTime,
}

impl ControllerStatus {
    /// A row is *ready* when it has condition `Available=True` ([`READY_CONDITION`]).
    pub fn is_ready(&self) -> bool {
        is_ready(&self.conditions)
    }

    /// A row *has an error* when `last_error` is set.
    pub fn has_error(&self) -> bool {
        self.last_error.is_some()
    }

    /// What the aggregate reads of this row.
    pub fn summary(&self) -> ControllerSummary {
        ControllerSummary {
            observed_generation: self.observed_generation,
            ready: self.is_ready(),
            has_error: self.has_error(),
            first_reported_at: self.first_reported_at,
            last_reported_at: self.last_reported_at,
        }
    }
}

impl ValidReport {
    /// What the aggregate reads of the row this report stores.
    pub fn summary(
        &self,
        first_reported_at: OffsetDateTime,
        last_reported_at: OffsetDateTime,
    ) -> ControllerSummary {
        ControllerSummary {
            observed_generation: self.observed_generation,
            ready: is_ready(&self.conditions),
            has_error: self.last_error.is_some(),
            first_reported_at,
            last_reported_at,
        }
    }
}

/// The condition that makes a controller row ready (SPEC §4.2): its type and status.
pub const READY_CONDITION: (&str, ConditionStatus) = ("Available", ConditionStatus::True);

fn is_ready(conditions: &[ControllerCondition]) -> bool {
    let (condition_type, status) = READY_CONDITION;
    conditions
        .iter()
        .any(|c| c.condition_type == condition_type && c.status == status)
}

/// What the aggregate (SPEC §4.2) reads of a controller row: all of it but the documents.
/// Storage can read this without decoding a row's conditions ([`READY_CONDITION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerSummary {
    pub observed_generation: i64,
    /// The row has [`READY_CONDITION`] ([`ControllerStatus::is_ready`]).
    pub ready: bool,
    /// The row has a `last_error` ([`ControllerStatus::has_error`]).
    pub has_error: bool,
    pub first_reported_at: OffsetDateTime,
    pub last_reported_at: OffsetDateTime,
}

/// Maximum length of a controller name.
pub const MAX_CONTROLLER_NAME_LEN: usize = 63;

/// What [`validate_report`] finds without the resource (any generation counts as current),
/// to report beside a body's structural problems.
pub fn report_violations(report: ControllerReport, now: OffsetDateTime) -> Vec<FieldError> {
    validate_report(report, i64::MAX, None, now)
        .err()
        .unwrap_or_default()
}

/// Validates a controller report against the resource's current generation (SPEC §4.1),
/// returning every violation. `previous` holds the conditions of this controller's stored
/// row, if any: they keep their `lastTransitionTime` while their status is unchanged.
pub fn validate_report(
    report: ControllerReport,
    current_generation: i64,
    previous: Option<&[ControllerCondition]>,
    now: OffsetDateTime,
) -> Result<ValidReport, Vec<FieldError>> {
    let mut errors = Vec::new();
    let controller_name = match report.controller_name.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(FieldError::new("controller_name", "is required"));
            None
        }
        Some(name) if name.len() > MAX_CONTROLLER_NAME_LEN || !is_dns_label(name) => {
            errors.push(FieldError::new(
                "controller_name",
                "must be 1-63 characters of lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen",
            ));
            None
        }
        Some(name) => Some(name.to_owned()),
    };
    let observed_generation = match report.observed_generation {
        None => {
            errors.push(FieldError::new("observed_generation", "is required"));
            None
        }
        Some(g) if g < 1 => {
            errors.push(FieldError::new("observed_generation", "must be at least 1"));
            None
        }
        Some(g) if g > current_generation => {
            errors.push(FieldError::new(
                "observed_generation",
                format!(
                    "must not exceed the resource's current generation {current_generation} (got {g})"
                ),
            ));
            None
        }
        Some(g) => Some(g),
    };
    let mut conditions: Vec<ControllerCondition> = Vec::new();
    for (i, reported) in report
        .conditions
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = |field: &str| format!("conditions[{i}].{field}");
        let condition_type = match reported.condition_type.as_deref().map(str::trim) {
            None | Some("") => {
                errors.push(FieldError::new(path("type"), "is required"));
                None
            }
            Some(t) if conditions.iter().any(|c| c.condition_type == t) => {
                errors.push(FieldError::new(
                    path("type"),
                    format!("duplicate condition type '{t}'"),
                ));
                None
            }
            Some(t) => Some(t.to_owned()),
        };
        let status = match reported.status.as_deref() {
            None => {
                errors.push(FieldError::new(path("status"), "is required"));
                None
            }
            Some(s) => {
                let parsed = ConditionStatus::parse(s);
                if parsed.is_none() {
                    errors.push(FieldError::new(
                        path("status"),
                        format!("must be one of True, False, Unknown (got '{s}')"),
                    ));
                }
                parsed
            }
        };
        let reported_time = match reported.last_transition_time.as_deref() {
            None => None,
            Some(text) => {
                let parsed = parse_rfc3339(text);
                if parsed.is_none() {
                    errors.push(FieldError::new(
                        path("lastTransitionTime"),
                        "must be an RFC 3339 timestamp",
                    ));
                }
                parsed
            }
        };
        if let (Some(condition_type), Some(status)) = (condition_type, status) {
            let kept = previous
                .and_then(|p| p.iter().find(|c| c.condition_type == condition_type))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time);
            conditions.push(ControllerCondition {
                condition_type,
                status,
                reason: reported.reason.unwrap_or_default(),
                message: reported.message.unwrap_or_default(),
                last_transition_time: kept.or(reported_time).unwrap_or(now),
                severity: reported.severity,
            });
        }
    }
    if let Some(last_error) = &report.last_error {
        if let Some(ts) = &last_error.timestamp
            && parse_rfc3339(ts).is_none()
        {
            errors.push(FieldError::new(
                "last_error.timestamp",
                "must be an RFC 3339 timestamp",
            ));
        }
        match &last_error.retry_after {
            None | Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|n| n >= 0.0) => {}
            Some(_) => errors.push(FieldError::new(
                "last_error.retryAfter",
                "must be a duration string or a non-negative number of seconds",
            )),
        }
    }
    match (controller_name, observed_generation) {
        (Some(controller_name), Some(observed_generation)) if errors.is_empty() => {
            Ok(ValidReport {
                controller_name,
                observed_generation,
                conditions,
                metadata: report.metadata.unwrap_or_default(),
                last_error: report.last_error,
            })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_json;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 10:00:00 UTC);

    fn report(body: serde_json::Value) -> ControllerReport {
        parse_json(body.to_string().as_bytes(), &[]).unwrap()
    }

    fn messages(errors: Vec<FieldError>) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_report_is_accepted_with_defaults() {
        let valid = validate_report(
            report(json!({"controller_name": "ctl-a", "observed_generation": 2,
                "conditions": [{"type": "Available", "status": "True", "reason": "Done",
                                "message": "ok", "lastTransitionTime": "2026-11-24T09:00:00Z"}]})),
            2,
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(valid.controller_name, "ctl-a");
        assert_eq!(valid.metadata, Map::new());
        assert_eq!(
            valid.conditions[0].last_transition_time,
            datetime!(2026-11-24 09:00:00 UTC)
        );
        assert_eq!(valid.conditions[0].status, ConditionStatus::True);
    }

    #[test]
    fn every_violation_is_reported() {
        let errors = validate_report(
            report(json!({"observed_generation": 3, "conditions": [
                {"type": "Available", "status": "Yes", "lastTransitionTime": "noon"},
                {"status": "True"}],
                "last_error": {"controllerName": "c", "errorType": "t", "errorCode": "e",
                    "message": "m", "userActionable": false, "timestamp": "never",
                    "retryAfter": -1}})),
            2,
            None,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            messages(errors),
            vec![
                "controller_name: is required",
                "observed_generation: must not exceed the resource's current generation 2 (got 3)",
                "conditions[0].status: must be one of True, False, Unknown (got 'Yes')",
                "conditions[0].lastTransitionTime: must be an RFC 3339 timestamp",
                "conditions[1].type: is required",
                "last_error.timestamp: must be an RFC 3339 timestamp",
                "last_error.retryAfter: must be a duration string or a non-negative number of seconds",
            ]
        );
    }

    #[test]
    fn bad_names_and_generations() {
        for (name, generation, expected) in [
            ("Ctl_A", 1, "controller_name: must be 1-63"),
            ("ctl", 0, "observed_generation: must be at least 1"),
        ] {
            let errors = validate_report(
                report(json!({"controller_name": name, "observed_generation": generation})),
                5,
                None,
                NOW,
            )
            .unwrap_err();
            assert!(messages(errors)[0].starts_with(expected));
        }
        let long = "a".repeat(64);
        assert!(
            validate_report(
                report(json!({"controller_name": long, "observed_generation": 1})),
                1,
                None,
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let earlier = datetime!(2026-11-24 08:00:00 UTC);
        let previous = ControllerStatus {
            controller_name: "ctl".into(),
            observed_generation: 1,
            conditions: vec![
                ControllerCondition {
                    condition_type: "Available".into(),
                    status: ConditionStatus::False,
                    reason: String::new(),
                    message: String::new(),
                    last_transition_time: earlier,
                    severity: None,
                },
                ControllerCondition {
                    condition_type: "Progressing".into(),
                    status: ConditionStatus::True,
                    reason: String::new(),
                    message: String::new(),
                    last_transition_time: earlier,
                    severity: None,
                },
            ],
            metadata: Map::new(),
            last_error: None,
            first_reported_at: earlier,
            last_reported_at: earlier,
        };
        let valid = validate_report(
            report(json!({"controller_name": "ctl", "observed_generation": 1, "conditions": [
                {"type": "Available", "status": "False", "lastTransitionTime": "2026-11-24T09:59:00Z"},
                {"type": "Progressing", "status": "False"}]})),
            1,
            Some(&previous.conditions),
            NOW,
        )
        .unwrap();
        assert_eq!(
            valid.conditions[0].last_transition_time, earlier,
            "unchanged status keeps time"
        );
        assert_eq!(
            valid.conditions[1].last_transition_time, NOW,
            "changed status moves to now"
        );
    }

    /// The aggregate reads a stored row and a new report through their summaries: a report's
    /// must be the summary of the row it stores.
    #[test]
    fn a_report_summarises_as_the_row_it_stores() {
        let bodies = [
            json!({"controller_name": "c", "observed_generation": 1, "conditions": [
                {"type": "Available", "status": "True"}]}),
            json!({"controller_name": "c", "observed_generation": 1, "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Available", "status": "False"}]}),
            json!({"controller_name": "c", "observed_generation": 2, "conditions": [
                {"type": "Available", "status": "True"}],
                "last_error": {"controllerName": "c", "errorType": "Transient", "errorCode": "E",
                               "message": "m", "userActionable": false}}),
            json!({"controller_name": "c", "observed_generation": 2}),
        ];
        let earlier = NOW - time::Duration::minutes(3);
        let mut seen = Vec::new();
        for body in bodies {
            let valid = validate_report(report(body), 2, None, NOW).unwrap();
            let row = ControllerStatus {
                controller_name: valid.controller_name.clone(),
                observed_generation: valid.observed_generation,
                conditions: valid.conditions.clone(),
                metadata: valid.metadata.clone(),
                last_error: valid.last_error.clone(),
                first_reported_at: earlier,
                last_reported_at: NOW,
            };
            let summary = valid.summary(earlier, NOW);
            assert_eq!(summary, row.summary());
            seen.push((summary.ready, summary.has_error));
        }
        assert_eq!(
            seen,
            [(true, false), (false, false), (true, true), (false, false)]
        );
    }

    #[test]
    fn readiness_and_errors_of_a_row() {
        let mut row = ControllerStatus {
            controller_name: "c".into(),
            observed_generation: 1,
            conditions: vec![],
            metadata: Map::new(),
            last_error: None,
            first_reported_at: NOW,
            last_reported_at: NOW,
        };
        assert!(!row.is_ready());
        row.conditions.push(ControllerCondition {
            condition_type: "Available".into(),
            status: ConditionStatus::True,
            reason: String::new(),
            message: String::new(),
            last_transition_time: NOW,
            severity: None,
        });
        assert!(row.is_ready());
        assert!(!row.has_error());
        let wire = serde_json::to_value(&row).unwrap();
        assert_eq!(wire["last_updated"], json!("2026-11-24T10:00:00Z"));
        assert_eq!(
            wire["conditions"][0]["lastTransitionTime"],
            json!("2026-11-24T10:00:00Z")
        );
    }
}
