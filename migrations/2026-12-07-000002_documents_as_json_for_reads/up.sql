-- Reads get each resource's documents as `json`: the text as stored, sent as it is.
--
-- A `jsonb` value is printed again on every read (`jsonb_out`), about half of Postgres's time
-- for a page of 100 clusters (measured with pgbench on 2026-12-07: the page read from these
-- columns ran at about twice the rate of the same page read from the `jsonb` ones, 5 200
-- against 2 400 pages/s, and 2 400 against 1 200 with documents large enough to be toasted).
-- `GET` and lists write the text into the response as it is (`cls_storage::StoredCluster`).
--
-- Generated from the `jsonb` columns, which stay the ones written (and `labels` keeps its GIN
-- index): Postgres keeps the copies in step on every write, also the writes of the release
-- before this one, which does not know these columns, so both run side by side during a
-- rollout. Adding a stored generated column rewrites the table under an `ACCESS EXCLUSIVE`
-- lock: 4.5 s for 100 000 clusters and their indexes on a 2-core development machine. Each
-- write pays for printing its new documents once. The text is `jsonb`'s print (its key
-- order, a space after `:` and `,`).
--
-- Contract later: a release that writes these columns itself can turn them into plain
-- columns (`ALTER COLUMN … DROP EXPRESSION`) and write the domain's own text; the release
-- after that can stop writing `spec` and `status` as `jsonb` (`phase` reads `status ->> 'phase'`,
-- which works on `json` too).
ALTER TABLE clusters
    ADD COLUMN labels_json json GENERATED ALWAYS AS (labels::json) STORED,
    ADD COLUMN spec_json   json GENERATED ALWAYS AS (spec::json) STORED,
    ADD COLUMN status_json json GENERATED ALWAYS AS (status::json) STORED;

ALTER TABLE nodepools
    ADD COLUMN labels_json json GENERATED ALWAYS AS (labels::json) STORED,
    ADD COLUMN spec_json   json GENERATED ALWAYS AS (spec::json) STORED,
    ADD COLUMN status_json json GENERATED ALWAYS AS (status::json) STORED;
