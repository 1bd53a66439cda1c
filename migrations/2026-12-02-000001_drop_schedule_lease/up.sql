-- Contract step of the schedule's move from leases to row locks (see
-- 2026-11-25-000001_reconcile_claims and `cls_storage::schedule`): a round now holds its rows
-- locked for its transaction, and since the release of 2026-11-26 no code reads or writes the
-- lease columns, so a rolling upgrade from that release onwards never sees them go. Dropping a
-- column only changes the catalogue; old row versions keep their bytes until rewritten.
ALTER TABLE reconcile_schedule
    DROP COLUMN claimed_by,
    DROP COLUMN claim_expires_at;
