-- Invites carry their creator's authority: from this version on, a user who
-- loses users.invite (deleted, or given a role without it) and an API key
-- that is rotated take their pending invites with them. This revokes the
-- pending invites that earlier versions left behind, so that every pending
-- invite's creator holds users.invite. (At this version only nanoAdmin holds
-- it, and an API key acts as a nanoAdmin while it is the current key.)
UPDATE invites i SET revoked_at = now()
WHERE i.accepted_at IS NULL
  AND i.revoked_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM users u
      WHERE u.organisation_id = i.organisation_id
        AND i.created_by = 'user:' || u.id::text
        AND u.role = 'nanoAdmin')
  AND NOT EXISTS (
      SELECT 1 FROM organisations o
      WHERE o.id = i.organisation_id
        AND i.created_by = 'api_key:' || o.api_key_fingerprint);

-- A creator's pending invites, found when the creator loses the authority.
CREATE INDEX invites_pending_by_creator_idx ON invites (organisation_id, created_by)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
