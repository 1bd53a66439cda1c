-- Wake only the publisher workers that have work: the notification payload lists the shards
-- (comma-separated) the statement inserted into. Still one notification per statement, and
-- still only a hint: the publisher also polls.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    shards text;
BEGIN
    SELECT string_agg(DISTINCT shard::text, ',') INTO shards FROM inserted;
    IF shards IS NOT NULL THEN
        PERFORM pg_notify('cls_outbox', shards);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
