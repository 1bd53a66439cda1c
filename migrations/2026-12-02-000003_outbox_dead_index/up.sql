-- The publisher samples the number of dead-lettered rows for `/metrics` at every scrape
-- (`outbox::backlog`). No index covered them, so each scrape read the whole outbox, published
-- rows kept for `OUTBOX_RETENTION` (seven days by default) included. Dead letters are rare
-- and no hot write path touches this index: a new row is pending and a published one is not
-- dead, so only a dead-lettering adds an entry.
CREATE INDEX outbox_dead ON outbox (seq) WHERE state = 'dead';
