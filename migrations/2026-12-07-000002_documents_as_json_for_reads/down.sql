ALTER TABLE nodepools DROP COLUMN labels_json, DROP COLUMN spec_json, DROP COLUMN status_json;
ALTER TABLE clusters DROP COLUMN labels_json, DROP COLUMN spec_json, DROP COLUMN status_json;
