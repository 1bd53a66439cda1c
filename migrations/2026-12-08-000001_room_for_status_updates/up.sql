-- Room on each page for a row's next version, so that status reports update rows in place.
--
-- A status report rewrites its resource's row (the aggregate in `status`, and its generated
-- `phase` and `status_json`) and its controller's row. Neither changes an indexed column
-- (unless the resource's `status_recheck_at` moves), so Postgres can make both heap-only (HOT)
-- updates: the new version goes on the same page and no index gets a new entry. That needs
-- free space on the page, and tables are filled to 100 % by default: in the status benchmark
-- (16 controllers over 1 000 clusters, 2026-12-08) only 58 % of the clusters' updates were
-- HOT, and each of the others added an entry to every one of the table's seven indexes, the
-- GIN index on `labels` among them. With pages filled to 70 %, all of them were HOT and
-- Postgres spent about a tenth less CPU per report.
--
-- A storage parameter, not a type: running releases' statements are unaffected. It applies to
-- pages filled from now on; existing rows get the room as they move.
ALTER TABLE clusters SET (fillfactor = 70);
ALTER TABLE nodepools SET (fillfactor = 70);
ALTER TABLE cluster_controller_status SET (fillfactor = 70);
ALTER TABLE nodepool_controller_status SET (fillfactor = 70);
