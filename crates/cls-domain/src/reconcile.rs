//! The reconcile policy (SPEC §6): which reason a periodic reconcile carries and when the
//! resource is next due.

use std::fmt;

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::status::Phase;

/// Why a reconcile event was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileReason {
    NeverReconciled,
    GenerationMismatch,
    UnhealthyReconciliation,
    HealthyReconciliation,
    ClusterCreated,
    SpecChange,
    StatusChange,
    ManualTrigger,
}

impl ReconcileReason {
    pub const ALL: [ReconcileReason; 8] = [
        ReconcileReason::NeverReconciled,
        ReconcileReason::GenerationMismatch,
        ReconcileReason::UnhealthyReconciliation,
        ReconcileReason::HealthyReconciliation,
        ReconcileReason::ClusterCreated,
        ReconcileReason::SpecChange,
        ReconcileReason::StatusChange,
        ReconcileReason::ManualTrigger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileReason::NeverReconciled => "never_reconciled",
            ReconcileReason::GenerationMismatch => "generation_mismatch",
            ReconcileReason::UnhealthyReconciliation => "unhealthy_reconciliation",
            ReconcileReason::HealthyReconciliation => "healthy_reconciliation",
            ReconcileReason::ClusterCreated => "cluster_created",
            ReconcileReason::SpecChange => "spec_change",
            ReconcileReason::StatusChange => "status_change",
            ReconcileReason::ManualTrigger => "manual_trigger",
        }
    }

    pub fn parse(s: &str) -> Option<ReconcileReason> {
        ReconcileReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this is a reactive trigger rather than a periodic reason.
    pub fn is_reactive(self) -> bool {
        matches!(
            self,
            ReconcileReason::ClusterCreated
                | ReconcileReason::SpecChange
                | ReconcileReason::StatusChange
                | ReconcileReason::ManualTrigger
        )
    }
}

impl fmt::Display for ReconcileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tunable intervals (`RECONCILE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePolicy {
    /// `RECONCILE_ATTENTION_INTERVAL`, default 30 s.
    pub attention_interval: Duration,
    /// `RECONCILE_STABLE_INTERVAL`, default 5 min.
    pub stable_interval: Duration,
    /// Resources younger than this need attention; default 2 h.
    pub young_age: Duration,
}

impl Default for ReconcilePolicy {
    fn default() -> ReconcilePolicy {
        ReconcilePolicy {
            attention_interval: Duration::seconds(30),
            stable_interval: Duration::minutes(5),
            young_age: Duration::hours(2),
        }
    }
}

/// What the policy looks at for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileFacts {
    pub created_at: OffsetDateTime,
    pub last_reconciled_at: Option<OffsetDateTime>,
    pub generation: i64,
    pub phase: Phase,
    /// The lowest `observed_generation` among the resource's controller rows (`None`: none).
    pub min_observed_generation: Option<i64>,
    /// A reactive trigger waiting for this reconcile (`spec_change`, `status_change`, …).
    pub pending_reason: Option<ReconcileReason>,
}

/// The outcome for a due resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileDecision {
    pub reason: ReconcileReason,
    pub needs_attention: bool,
    pub next_due_at: OffsetDateTime,
}

impl ReconcilePolicy {
    /// Decides the reason of a reconcile due now and the next due time.
    ///
    /// The reason: `never_reconciled` for a resource's first reconcile (a creation trigger
    /// adds nothing to it), else the pending reactive trigger, else the periodic reason.
    /// Needs attention (attention interval): created less than `young_age` ago, or phase not
    /// `Ready`, or a controller not yet on the current generation. Stable otherwise.
    pub fn decide(&self, facts: &ReconcileFacts, now: OffsetDateTime) -> ReconcileDecision {
        let behind = facts
            .min_observed_generation
            .is_some_and(|g| g < facts.generation);
        let unhealthy = facts.phase != Phase::Ready;
        let young = now - facts.created_at < self.young_age;
        let reason = if facts.last_reconciled_at.is_none() {
            ReconcileReason::NeverReconciled
        } else if let Some(trigger) = facts.pending_reason {
            trigger
        } else if behind {
            ReconcileReason::GenerationMismatch
        } else if unhealthy {
            ReconcileReason::UnhealthyReconciliation
        } else {
            ReconcileReason::HealthyReconciliation
        };
        let needs_attention = behind || unhealthy || young;
        let interval = if needs_attention {
            self.attention_interval
        } else {
            self.stable_interval
        };
        ReconcileDecision {
            reason,
            needs_attention,
            next_due_at: now + interval,
        }
    }
}

/// The id of the reconcile event serving one due time of one resource: the same inputs give
/// the same id, so a due item emitted again after a lost acknowledgement or an expired claim
/// is written to the outbox once (the publisher skips ids it already has).
pub fn reconcile_event_id(resource_id: Uuid, due_at: OffsetDateTime) -> Uuid {
    /// A fixed namespace for CLS reconcile event ids (UUID v5).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6c73_7265_636f_4e63_8000_0000_0000_0001);
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(resource_id.as_bytes());
    name[16..].copy_from_slice(&due_at.unix_timestamp_nanos().to_be_bytes());
    Uuid::new_v5(&NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 12:00:00 UTC);

    fn facts() -> ReconcileFacts {
        ReconcileFacts {
            created_at: NOW - Duration::hours(3),
            last_reconciled_at: Some(NOW - Duration::minutes(5)),
            generation: 2,
            phase: Phase::Ready,
            min_observed_generation: Some(2),
            pending_reason: None,
        }
    }

    fn check(facts: ReconcileFacts, reason: ReconcileReason, attention: bool) {
        let policy = ReconcilePolicy::default();
        let decision = policy.decide(&facts, NOW);
        let interval = if attention {
            policy.attention_interval
        } else {
            policy.stable_interval
        };
        assert_eq!(
            decision,
            ReconcileDecision {
                reason,
                needs_attention: attention,
                next_due_at: NOW + interval
            },
            "{facts:?}"
        );
    }

    #[test]
    fn stable_resource_is_healthy_at_the_stable_interval() {
        check(facts(), ReconcileReason::HealthyReconciliation, false);
    }

    #[test]
    fn never_reconciled_comes_first() {
        check(
            ReconcileFacts {
                last_reconciled_at: None,
                ..facts()
            },
            ReconcileReason::NeverReconciled,
            false,
        );
        check(
            ReconcileFacts {
                last_reconciled_at: None,
                created_at: NOW,
                phase: Phase::Pending,
                min_observed_generation: None,
                ..facts()
            },
            ReconcileReason::NeverReconciled,
            true,
        );
    }

    #[test]
    fn controllers_behind_the_generation_need_attention() {
        check(
            ReconcileFacts {
                min_observed_generation: Some(1),
                ..facts()
            },
            ReconcileReason::GenerationMismatch,
            true,
        );
        // Mismatch wins over an unhealthy phase.
        check(
            ReconcileFacts {
                min_observed_generation: Some(1),
                phase: Phase::Failed,
                ..facts()
            },
            ReconcileReason::GenerationMismatch,
            true,
        );
    }

    #[test]
    fn not_ready_is_unhealthy() {
        for phase in [Phase::Pending, Phase::Progressing, Phase::Failed] {
            check(
                ReconcileFacts { phase, ..facts() },
                ReconcileReason::UnhealthyReconciliation,
                true,
            );
        }
        // No controller rows at all: not behind, but not Ready either.
        check(
            ReconcileFacts {
                phase: Phase::Pending,
                min_observed_generation: None,
                ..facts()
            },
            ReconcileReason::UnhealthyReconciliation,
            true,
        );
    }

    #[test]
    fn young_resources_need_attention_until_the_age_threshold() {
        let just_young = ReconcileFacts {
            created_at: NOW - Duration::hours(2) + Duration::seconds(1),
            ..facts()
        };
        check(just_young, ReconcileReason::HealthyReconciliation, true);
        let exactly_old = ReconcileFacts {
            created_at: NOW - Duration::hours(2),
            ..facts()
        };
        check(exactly_old, ReconcileReason::HealthyReconciliation, false);
        let policy = ReconcilePolicy {
            young_age: Duration::seconds(1),
            ..ReconcilePolicy::default()
        };
        assert!(
            !policy
                .decide(
                    &ReconcileFacts {
                        created_at: NOW - Duration::seconds(2),
                        ..facts()
                    },
                    NOW
                )
                .needs_attention
        );
    }

    #[test]
    fn a_pending_trigger_names_the_reason_but_not_the_first_reconcile() {
        check(
            ReconcileFacts {
                pending_reason: Some(ReconcileReason::SpecChange),
                min_observed_generation: Some(1),
                ..facts()
            },
            ReconcileReason::SpecChange,
            true,
        );
        check(
            ReconcileFacts {
                pending_reason: Some(ReconcileReason::StatusChange),
                ..facts()
            },
            ReconcileReason::StatusChange,
            false,
        );
        check(
            ReconcileFacts {
                pending_reason: Some(ReconcileReason::ClusterCreated),
                last_reconciled_at: None,
                ..facts()
            },
            ReconcileReason::NeverReconciled,
            false,
        );
    }

    #[test]
    fn event_ids_are_stable_per_resource_and_due_time() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let id = reconcile_event_id(a, NOW);
        assert_eq!(id, reconcile_event_id(a, NOW));
        assert_eq!(id.get_version_num(), 5);
        assert_ne!(id, reconcile_event_id(b, NOW));
        assert_ne!(id, reconcile_event_id(a, NOW + Duration::microseconds(1)));
    }

    #[test]
    fn reasons_round_trip() {
        for reason in ReconcileReason::ALL {
            assert_eq!(ReconcileReason::parse(reason.as_str()), Some(reason));
        }
        assert!(ReconcileReason::SpecChange.is_reactive());
        assert!(!ReconcileReason::HealthyReconciliation.is_reactive());
        assert_eq!(ReconcileReason::parse("spec-change"), None);
    }
}
