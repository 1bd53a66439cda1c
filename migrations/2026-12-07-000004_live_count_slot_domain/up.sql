-- The rule on `cluster_live_counts.slot` as a domain instead of a table `CHECK` constraint.
--
-- Every create and deletion of a cluster writes this table (its live-count trigger), and a
-- table's `CHECK` constraints are read from their stored text and planned again on every
-- statement that writes it (see `2026-12-07-000003_cheaper_check_constraints`). A domain's
-- constraints are kept parsed and planned in each backend's type cache. Counted with callgrind
-- in a standalone backend (2026-12-07): the constraint cost about 28 000 instructions per
-- create, the domain about 2 000.
--
-- Changing a column's type invalidates a running release's prepared statements that return
-- the column (the migrations README). No statement returns `slot`: the list's total sums
-- `live`, and only the trigger writes the table.
CREATE DOMAIN cluster_live_count_slot AS smallint CHECK (VALUE BETWEEN 0 AND 15);

ALTER TABLE cluster_live_counts
    DROP CONSTRAINT cluster_live_counts_slot_check,
    ALTER COLUMN slot TYPE cluster_live_count_slot;
