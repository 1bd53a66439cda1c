-- Reconcile claims that survive a lost acknowledgement, and a bound on trigger debouncing.
--
-- claimed_due_at: the due time a claim serves. It is kept when a claim expires or is released
-- after a failed publish, so the event id derived from it stays the same and a re-emission is
-- written to the outbox once. A claim moves next_due_at to the claim's expiry, so an expired
-- claim is simply due again and the claim query needs no second condition.
-- pending_since: when the oldest reactive trigger not yet served arrived; a burst of triggers
-- pushes the due time out (trailing edge) but never beyond pending_since + the maximum wait.
ALTER TABLE reconcile_schedule
    ADD COLUMN claimed_due_at timestamptz,
    ADD COLUMN pending_since  timestamptz;
