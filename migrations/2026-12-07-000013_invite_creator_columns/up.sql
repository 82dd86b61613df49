-- An invite's creator in typed columns rather than the actor's text form
-- ("user:<id>", "api_key:<fingerprint>"): exactly one of them is set. The
-- contract still shows the text form, which the service builds.
ALTER TABLE invites ADD COLUMN created_by_user_id uuid NULL;
ALTER TABLE invites ADD COLUMN created_by_key_fingerprint text NULL;

UPDATE invites SET created_by_user_id = substr(created_by, 6)::uuid
WHERE created_by LIKE 'user:%';
UPDATE invites SET created_by_key_fingerprint = substr(created_by, 9)
WHERE created_by LIKE 'api_key:%';

ALTER TABLE invites ADD CONSTRAINT invites_created_by_one_creator CHECK (
    (created_by_user_id IS NULL) <> (created_by_key_fingerprint IS NULL)
    AND created_by_key_fingerprint <> '');

-- A creator's pending invites, found when the creator loses the authority
-- (see 2026-12-01-000006_invites_follow_their_creator): by user id, or by key
-- fingerprint with no user id.
DROP INDEX invites_pending_by_creator_idx;
ALTER TABLE invites DROP COLUMN created_by;
CREATE INDEX invites_pending_by_creator_idx
    ON invites (organisation_id, created_by_user_id, created_by_key_fingerprint)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
