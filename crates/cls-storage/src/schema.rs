//! The diesel schema, written by hand to match `migrations/` (checked by a test).

diesel::table! {
    clusters (id) {
        id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        target_project_id -> Nullable<Text>,
        labels -> Jsonb,
        created_by -> Text,
        generation -> Int8,
        resource_version -> Int8,
        spec -> Jsonb,
        status -> Jsonb,
        phase -> Nullable<Text>,
        status_recheck_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        // Generated from `labels`, `spec` and `status` (never written); reads use them.
        labels_json -> Json,
        spec_json -> Json,
        status_json -> Json,
    }
}

diesel::table! {
    nodepools (id) {
        id -> Uuid,
        cluster_id -> Uuid,
        name -> Text,
        labels -> Jsonb,
        created_by -> Text,
        generation -> Int8,
        resource_version -> Int8,
        spec -> Jsonb,
        status -> Jsonb,
        phase -> Nullable<Text>,
        status_recheck_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        // Generated from `labels`, `spec` and `status` (never written); reads use them.
        labels_json -> Json,
        spec_json -> Json,
        status_json -> Json,
    }
}

diesel::table! {
    cluster_controller_status (cluster_id, controller_name) {
        cluster_id -> Uuid,
        controller_name -> Text,
        observed_generation -> Int8,
        conditions -> Jsonb,
        metadata -> Jsonb,
        last_error -> Nullable<Jsonb>,
        first_reported_at -> Timestamptz,
        last_reported_at -> Timestamptz,
    }
}

diesel::table! {
    nodepool_controller_status (nodepool_id, controller_name) {
        nodepool_id -> Uuid,
        controller_name -> Text,
        observed_generation -> Int8,
        conditions -> Jsonb,
        metadata -> Jsonb,
        last_error -> Nullable<Jsonb>,
        first_reported_at -> Timestamptz,
        last_reported_at -> Timestamptz,
    }
}

diesel::table! {
    reconcile_schedule (resource_id) {
        resource_id -> Uuid,
        resource_kind -> Text,
        cluster_id -> Uuid,
        nodepool_id -> Nullable<Uuid>,
        next_due_at -> Timestamptz,
        last_reconciled_at -> Nullable<Timestamptz>,
        pending_reason -> Nullable<Text>,
        claimed_due_at -> Nullable<Timestamptz>,
        pending_since -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> Int8,
        id -> Uuid,
        shard -> Int2,
        cluster_id -> Uuid,
        ordering_key -> Text,
        topic -> Text,
        event_type -> Text,
        body -> Jsonb,
        attributes -> Jsonb,
        traceparent -> Nullable<Text>,
        state -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    idempotency_keys (caller, key) {
        caller -> Text,
        key -> Text,
        request_scope -> Text,
        request_hash -> Text,
        response_status -> Int2,
        response_body -> Jsonb,
        response_text -> Nullable<Text>,
        resource_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    /// Live clusters per owner, split over slots; kept by triggers (see its migration).
    cluster_live_counts (created_by, slot) {
        created_by -> Text,
        slot -> Int2,
        live -> Int8,
    }
}

diesel::joinable!(nodepools -> clusters (cluster_id));
diesel::joinable!(cluster_controller_status -> clusters (cluster_id));
diesel::joinable!(nodepool_controller_status -> nodepools (nodepool_id));

diesel::allow_tables_to_appear_in_same_query!(
    clusters,
    nodepools,
    cluster_controller_status,
    nodepool_controller_status,
    reconcile_schedule,
    outbox,
    idempotency_keys,
    cluster_live_counts,
);

/// Every table and its columns, in declaration order, for the schema drift test.
pub const TABLES: &[(&str, &[&str])] = &[
    (
        "clusters",
        &[
            "id",
            "name",
            "description",
            "target_project_id",
            "labels",
            "created_by",
            "generation",
            "resource_version",
            "spec",
            "status",
            "phase",
            "status_recheck_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "labels_json",
            "spec_json",
            "status_json",
        ],
    ),
    ("cluster_live_counts", &["created_by", "slot", "live"]),
    (
        "nodepools",
        &[
            "id",
            "cluster_id",
            "name",
            "labels",
            "created_by",
            "generation",
            "resource_version",
            "spec",
            "status",
            "phase",
            "status_recheck_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "labels_json",
            "spec_json",
            "status_json",
        ],
    ),
    (
        "cluster_controller_status",
        &[
            "cluster_id",
            "controller_name",
            "observed_generation",
            "conditions",
            "metadata",
            "last_error",
            "first_reported_at",
            "last_reported_at",
        ],
    ),
    (
        "nodepool_controller_status",
        &[
            "nodepool_id",
            "controller_name",
            "observed_generation",
            "conditions",
            "metadata",
            "last_error",
            "first_reported_at",
            "last_reported_at",
        ],
    ),
    (
        "reconcile_schedule",
        &[
            "resource_id",
            "resource_kind",
            "cluster_id",
            "nodepool_id",
            "next_due_at",
            "last_reconciled_at",
            "pending_reason",
            "claimed_due_at",
            "pending_since",
        ],
    ),
    (
        "outbox",
        &[
            "seq",
            "id",
            "shard",
            "cluster_id",
            "ordering_key",
            "topic",
            "event_type",
            "body",
            "attributes",
            "traceparent",
            "state",
            "attempts",
            "last_error",
            "created_at",
            "published_at",
        ],
    ),
    (
        "idempotency_keys",
        &[
            "caller",
            "key",
            "request_scope",
            "request_hash",
            "response_status",
            "response_body",
            "response_text",
            "resource_id",
            "created_at",
            "expires_at",
        ],
    ),
];
