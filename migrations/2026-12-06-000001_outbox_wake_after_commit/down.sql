CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
