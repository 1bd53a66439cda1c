DROP INDEX clusters_owner_live;
