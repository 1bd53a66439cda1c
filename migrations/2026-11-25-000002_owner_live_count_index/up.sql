-- A narrow index for the exact `total` of a user's cluster list (`count(*)` of the owner's
-- live clusters): all keys of one owner are equal, so btree deduplication keeps it a small
-- fraction of `clusters_owner_created`, and the index-only count reads it about 1.6× faster
-- (measured at 114 000 clusters of one owner: 8.7 ms against 14.2 ms). The page itself still
-- uses `clusters_owner_created`.
--
-- Built in the migration's transaction: writes to clusters wait for the build (well under a
-- second at 100 000 clusters). Not CONCURRENTLY: that build waits for every open snapshot,
-- including other migrators waiting on the migration lock, and deadlocks with them.
CREATE INDEX clusters_owner_live ON clusters (created_by) WHERE deleted_at IS NULL;
