-- Rows whose resource is gone would fail the constraints.
DELETE FROM reconcile_schedule s
 WHERE NOT EXISTS (SELECT 1 FROM clusters c WHERE c.id = s.cluster_id)
    OR s.nodepool_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM nodepools np WHERE np.id = s.nodepool_id);
ALTER TABLE reconcile_schedule
    ADD CONSTRAINT reconcile_schedule_cluster_id_fkey
        FOREIGN KEY (cluster_id) REFERENCES clusters (id) ON DELETE CASCADE,
    ADD CONSTRAINT reconcile_schedule_nodepool_id_fkey
        FOREIGN KEY (nodepool_id) REFERENCES nodepools (id) ON DELETE CASCADE;
