-- The schedule's foreign keys cost a scan of the whole schedule per hard-deleted resource and
-- protected nothing. Neither column is indexed (every claim and completion rewrites a schedule
-- row's index entries, so each index would slow the scheduler), so Postgres checked each
-- cluster or nodepool the retention purge removes against every schedule row: measured at
-- 100 000 scheduled resources, a purge batch of 500 clusters took 2.3 s with them and 4.5 ms
-- without. The cascade never found anything either: a resource's schedule row goes in the
-- transaction that soft-deletes it (by primary key), long before the purge, and the claim
-- forgets a row whose resource is gone should one ever slip through.
ALTER TABLE reconcile_schedule
    DROP CONSTRAINT reconcile_schedule_cluster_id_fkey,
    DROP CONSTRAINT reconcile_schedule_nodepool_id_fkey;
