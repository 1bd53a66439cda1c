-- CLS schema, version 1. See migrations/README.md for the rules every migration follows.

-- Clusters. `spec`, `labels` and `status` are JSON documents owned by the domain crate.
CREATE TABLE clusters (
    id                uuid        PRIMARY KEY,
    name              text        NOT NULL,
    description       text,
    target_project_id text,
    labels            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_by        text        NOT NULL,
    generation        bigint      NOT NULL DEFAULT 1 CHECK (generation >= 1),
    resource_version  bigint      NOT NULL DEFAULT 1 CHECK (resource_version >= 1),
    spec              jsonb       NOT NULL,
    status            jsonb       NOT NULL,
    -- The aggregated phase, for the `status` list filter.
    phase             text        GENERATED ALWAYS AS (status ->> 'phase') STORED,
    -- When the aggregated status can next change with time alone (grace expiry and the
    -- like); the status sweep reads this. NULL: only a report or spec change can change it.
    status_recheck_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz
);
-- Names are unique among the live clusters of one owner; a deleted name can be reused.
CREATE UNIQUE INDEX clusters_owner_name_live ON clusters (created_by, name) WHERE deleted_at IS NULL;
-- Lists: newest first, per owner (users) or overall (controllers).
CREATE INDEX clusters_owner_created ON clusters (created_by, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX clusters_created ON clusters (created_at DESC, id DESC);
CREATE INDEX clusters_labels ON clusters USING gin (labels jsonb_path_ops);
CREATE INDEX clusters_status_recheck ON clusters (status_recheck_at) WHERE status_recheck_at IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX clusters_deleted ON clusters (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE nodepools (
    id                uuid        PRIMARY KEY,
    cluster_id        uuid        NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    name              text        NOT NULL,
    labels            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_by        text        NOT NULL,
    generation        bigint      NOT NULL DEFAULT 1 CHECK (generation >= 1),
    resource_version  bigint      NOT NULL DEFAULT 1 CHECK (resource_version >= 1),
    spec              jsonb       NOT NULL,
    status            jsonb       NOT NULL,
    phase             text        GENERATED ALWAYS AS (status ->> 'phase') STORED,
    status_recheck_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX nodepools_cluster_name_live ON nodepools (cluster_id, name) WHERE deleted_at IS NULL;
CREATE INDEX nodepools_cluster_created ON nodepools (cluster_id, created_at DESC, id DESC);
CREATE INDEX nodepools_created ON nodepools (created_at DESC, id DESC);
CREATE INDEX nodepools_labels ON nodepools USING gin (labels jsonb_path_ops);
CREATE INDEX nodepools_status_recheck ON nodepools (status_recheck_at) WHERE status_recheck_at IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX nodepools_deleted ON nodepools (deleted_at) WHERE deleted_at IS NOT NULL;

-- One row per (resource, controller): a report replaces the controller's previous row.
CREATE TABLE cluster_controller_status (
    cluster_id          uuid        NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    controller_name     text        NOT NULL,
    observed_generation bigint      NOT NULL CHECK (observed_generation >= 1),
    conditions          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_error          jsonb,
    -- When this controller first reported on observed_generation (the grace clock).
    first_reported_at   timestamptz NOT NULL,
    last_reported_at    timestamptz NOT NULL,
    PRIMARY KEY (cluster_id, controller_name)
);

CREATE TABLE nodepool_controller_status (
    nodepool_id         uuid        NOT NULL REFERENCES nodepools (id) ON DELETE CASCADE,
    controller_name     text        NOT NULL,
    observed_generation bigint      NOT NULL CHECK (observed_generation >= 1),
    conditions          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_error          jsonb,
    first_reported_at   timestamptz NOT NULL,
    last_reported_at    timestamptz NOT NULL,
    PRIMARY KEY (nodepool_id, controller_name)
);

-- When each live resource is next reconciled. Rows go when the resource is deleted.
CREATE TABLE reconcile_schedule (
    resource_id        uuid        PRIMARY KEY,
    resource_kind      text        NOT NULL CHECK (resource_kind IN ('cluster', 'nodepool')),
    cluster_id         uuid        NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    nodepool_id        uuid        REFERENCES nodepools (id) ON DELETE CASCADE,
    next_due_at        timestamptz NOT NULL,
    last_reconciled_at timestamptz,
    -- A reactive trigger waiting for its debounce window (the due time is then its deadline).
    pending_reason     text,
    -- A replica's claim, which expires so another replica can take over.
    claimed_by         text,
    claim_expires_at   timestamptz,
    CHECK ((resource_kind = 'cluster') = (nodepool_id IS NULL)),
    CHECK (resource_kind = 'cluster' AND resource_id = cluster_id OR resource_kind = 'nodepool' AND resource_id = nodepool_id)
);
CREATE INDEX reconcile_schedule_due ON reconcile_schedule (next_due_at);

-- The transactional outbox: events are written in the transaction of the change that causes
-- them and published later, in `seq` order per cluster. Writers for one cluster serialise on
-- a transaction-scoped advisory lock before inserting, so `seq` order is commit order per
-- cluster.
CREATE TABLE outbox (
    seq          bigserial   PRIMARY KEY,
    id           uuid        NOT NULL UNIQUE,
    shard        smallint    NOT NULL CHECK (shard >= 0),
    cluster_id   uuid        NOT NULL,
    ordering_key text        NOT NULL,
    topic        text        NOT NULL CHECK (topic IN ('cluster-events', 'nodepool-events')),
    event_type   text        NOT NULL,
    body         jsonb       NOT NULL,
    attributes   jsonb       NOT NULL,
    traceparent  text,
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'published', 'dead')),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (shard, seq) WHERE state = 'pending';
CREATE INDEX outbox_published ON outbox (published_at) WHERE state = 'published';

-- Wake the publisher on commit of any outbox insert (a hint only; it also polls).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cls_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotency-Key on POST, per caller, so retries work across gateway replicas.
CREATE TABLE idempotency_keys (
    caller           text        NOT NULL,
    key              text        NOT NULL,
    -- What was asked: method, path and a hash of the body.
    request_scope    text        NOT NULL,
    request_hash     text        NOT NULL,
    response_status  smallint    NOT NULL,
    response_body    jsonb       NOT NULL,
    resource_id      uuid,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
