ALTER TABLE invites ADD COLUMN created_by text NULL;
UPDATE invites SET created_by = CASE
    WHEN created_by_user_id IS NOT NULL THEN 'user:' || created_by_user_id::text
    ELSE 'api_key:' || created_by_key_fingerprint
END;
ALTER TABLE invites ALTER COLUMN created_by SET NOT NULL;

DROP INDEX invites_pending_by_creator_idx;
ALTER TABLE invites DROP CONSTRAINT invites_created_by_one_creator;
ALTER TABLE invites DROP COLUMN created_by_key_fingerprint;
ALTER TABLE invites DROP COLUMN created_by_user_id;

CREATE INDEX invites_pending_by_creator_idx ON invites (organisation_id, created_by)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
