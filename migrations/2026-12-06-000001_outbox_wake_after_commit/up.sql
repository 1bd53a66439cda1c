-- Writers wake the event-publisher themselves after their commit (`outbox::wake`: a
-- notification in a transaction of its own, with synchronous_commit off), so the outbox insert
-- trigger goes. A transaction that notifies holds a database-wide lock from its pre-commit
-- until it ends, WAL flush included, so with the trigger every commit that wrote an event
-- waited for the flushes of all the others.
--
-- During a rolling upgrade the previous release's writers no longer wake the relay: their
-- events are published at the relay's next poll (OUTBOX_POLL_INTERVAL, 1 s by default)
-- instead of within milliseconds. Nothing is lost; the previous release's relays hear the new
-- writers' notifications (same channel, same payload).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
