ALTER TABLE nodepool_controller_status RESET (fillfactor);
ALTER TABLE cluster_controller_status RESET (fillfactor);
ALTER TABLE nodepools RESET (fillfactor);
ALTER TABLE clusters RESET (fillfactor);
