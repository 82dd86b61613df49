-- An address known to an email (exempt from the email's failed-login
-- ceiling) is tied to the email, so that a password change or reset can end
-- every exemption of the email in its own transaction: `email_key` is the
-- SHA-256 the limits derive from the email, as the rows' keys are.
-- The rows from before have no such key and cannot be given one (their key
-- is a hash of email and address together): they are forgotten, so that no
-- exemption outlives a password change; each address earns its own again at
-- its next successful sign-in.
DELETE FROM login_known_peers;
ALTER TABLE login_known_peers ADD COLUMN email_key bytea NOT NULL;
CREATE INDEX login_known_peers_email_idx ON login_known_peers (email_key);
