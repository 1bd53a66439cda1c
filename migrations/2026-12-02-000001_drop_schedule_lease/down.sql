ALTER TABLE reconcile_schedule
    ADD COLUMN claimed_by text,
    ADD COLUMN claim_expires_at timestamptz;
