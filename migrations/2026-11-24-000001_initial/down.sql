DROP TABLE idempotency_keys;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
DROP TABLE reconcile_schedule;
DROP TABLE nodepool_controller_status;
DROP TABLE cluster_controller_status;
DROP TABLE nodepools;
DROP TABLE clusters;
