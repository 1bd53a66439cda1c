ALTER TABLE outbox
    DROP CONSTRAINT outbox_topic_check,
    DROP CONSTRAINT outbox_state_check,
    ADD CONSTRAINT outbox_topic_check CHECK (topic IN ('cluster-events', 'nodepool-events')),
    ADD CONSTRAINT outbox_state_check CHECK (state IN ('pending', 'published', 'dead'));

ALTER TABLE reconcile_schedule
    DROP CONSTRAINT reconcile_schedule_resource_check,
    ADD CONSTRAINT reconcile_schedule_resource_kind_check CHECK (resource_kind IN ('cluster', 'nodepool')),
    ADD CONSTRAINT reconcile_schedule_check CHECK ((resource_kind = 'cluster') = (nodepool_id IS NULL)),
    ADD CONSTRAINT reconcile_schedule_check1 CHECK (resource_kind = 'cluster' AND resource_id = cluster_id OR resource_kind = 'nodepool' AND resource_id = nodepool_id);
