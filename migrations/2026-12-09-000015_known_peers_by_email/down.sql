DROP INDEX login_known_peers_email_idx;
ALTER TABLE login_known_peers DROP COLUMN email_key;
