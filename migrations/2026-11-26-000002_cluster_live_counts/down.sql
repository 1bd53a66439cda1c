DROP TRIGGER cluster_live_counts_update ON clusters;
DROP TRIGGER cluster_live_counts_delete ON clusters;
DROP TRIGGER cluster_live_counts_insert ON clusters;
DROP FUNCTION cluster_live_counts_track();
DROP TABLE cluster_live_counts;
