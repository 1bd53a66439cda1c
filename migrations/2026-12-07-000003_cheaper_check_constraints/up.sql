-- The same rules as before, in forms Postgres reads faster on every write.
--
-- Postgres reads a table's `CHECK` constraints from their stored text (a serialized expression
-- tree) and plans them again for every statement that writes the table, prepared or not: the
-- cost grows with the length of that text, not with the work of checking a row. On the create
-- path (cluster, schedule row, outbox row) the constraints were about a quarter of Postgres's
-- instructions per create (counted with callgrind in a standalone backend on 2026-12-07: about
-- 245 000 of 951 000 per create, against none of them dropped).
--
-- `reconcile_schedule` had three constraints for one rule (a cluster's row names the cluster,
-- a nodepool's row the nodepool); one expression of it is half their text, and took about
-- 55 000 instructions off every create. `outbox` lists its topics and states as one array
-- constant instead of an array built from three constants (the planner folds that on every
-- write): about 13 000 more.
--
-- Only constraint definitions change: no column's type, so statements a running release has
-- prepared keep working. Adding a constraint checks the table's rows under its lock: the
-- schedule has one row per live resource; the outbox its unpublished and retained rows.
ALTER TABLE reconcile_schedule
    DROP CONSTRAINT reconcile_schedule_check,
    DROP CONSTRAINT reconcile_schedule_check1,
    DROP CONSTRAINT reconcile_schedule_resource_kind_check,
    -- With `resource_id`, `resource_kind` and `cluster_id` NOT NULL, exactly the rows the three
    -- allowed: a `cluster` row without a nodepool whose resource is its cluster, or a
    -- `nodepool` row whose resource is its nodepool.
    ADD CONSTRAINT reconcile_schedule_resource_check CHECK (
        resource_kind = CASE WHEN nodepool_id IS NULL THEN 'cluster' ELSE 'nodepool' END
        AND resource_id = coalesce(nodepool_id, cluster_id)
    );

ALTER TABLE outbox
    DROP CONSTRAINT outbox_topic_check,
    DROP CONSTRAINT outbox_state_check,
    ADD CONSTRAINT outbox_topic_check CHECK (topic = ANY ('{cluster-events,nodepool-events}'::text[])),
    ADD CONSTRAINT outbox_state_check CHECK (state = ANY ('{pending,published,dead}'::text[]));
