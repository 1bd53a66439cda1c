ALTER TABLE reconcile_schedule
    DROP COLUMN pending_since,
    DROP COLUMN claimed_due_at;
