-- As 2026-11-25-000002_owner_live_count_index made it.
CREATE INDEX clusters_owner_live ON clusters (created_by) WHERE deleted_at IS NULL;
