ALTER TABLE cluster_live_counts
    ALTER COLUMN slot TYPE smallint,
    ADD CONSTRAINT cluster_live_counts_slot_check CHECK (slot BETWEEN 0 AND 15);

DROP DOMAIN cluster_live_count_slot;
